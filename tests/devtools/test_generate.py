"""Tests of the synthetic event generator (`devtools.generate`).

The checks of "a valid event" here are written from the contract constants
(`transforms.contracts.events`), independently of the pipeline's validator.
"""

from __future__ import annotations

import argparse
import collections
import csv
import datetime as dt

import fastavro
import orjson
import pytest

from devtools import generate as gen
from transforms.contracts.events import (
    CHANNELS,
    CONSENT_FIELDS,
    EVENT_TYPES,
    PROPERTY_FIELDS,
    TOP_LEVEL_FIELDS,
    VALUE_REQUIRED_TYPES,
)
from transforms.contracts.outcomes import ErrorCode

END = dt.date(2026, 3, 1)
DAYS = 12
START_MS = int(dt.datetime(2026, 2, 17, tzinfo=dt.timezone.utc).timestamp() * 1000)
END_MS = int(dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)
LIMIT_BYTES = 16 * 1024


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="segments generate")
    gen.add_arguments(parser)
    return parser


def _args(tmp_path, name: str, *extra: str, users: int = 300, days: int = DAYS, seed: int = 3):
    return _parser().parse_args([
        "--users", str(users), "--days", str(days), "--end", END.isoformat(), "--seed", str(seed),
        "--out", str(tmp_path / name), *extra])


def _lines(path) -> list[bytes]:
    data = path.read_bytes()
    assert data.endswith(b"\n")
    return data[:-1].split(b"\n")


def _timestamp_ms(value) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    parsed = dt.datetime.fromisoformat(value)
    assert parsed.tzinfo is not None, value
    return round(parsed.timestamp() * 1000)


_JSON_TYPES = {"string": str, "object": dict, "integer": int}


def contract_problem(raw: bytes):
    """None when `raw` is a valid contract v1 event, else a short reason (independent checks)."""
    if len(raw) > LIMIT_BYTES:
        return "oversized"
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return "invalid_json"
    if not isinstance(obj, dict):
        return "not_an_object"
    for name, (kind, required) in TOP_LEVEL_FIELDS.items():
        if name not in obj:
            if required:
                return f"missing {name}"
            continue
        value = obj[name]
        if kind == "timestamp":
            if isinstance(value, bool) or not isinstance(value, (int, str)):
                return "timestamp type"
            try:
                ts = _timestamp_ms(value)
            except (ValueError, AssertionError):
                return "bad timestamp"
            if not START_MS <= ts < END_MS:
                return "timestamp outside the period"
        elif not isinstance(value, _JSON_TYPES[kind]):
            return f"{name} type"
        elif kind == "string" and not 1 <= len(value) <= 128:
            return f"{name} length"
    if obj["event_type"] not in EVENT_TYPES:
        return "event_type"
    if obj.get("channel") is not None and obj["channel"] not in CHANNELS:
        return "channel"
    props = obj.get("properties", {})
    for name, value in props.items():
        kind = PROPERTY_FIELDS[name]
        ok = {"string": isinstance(value, str) and 1 <= len(value) <= 1024,
              "number": isinstance(value, (int, float)) and not isinstance(value, bool),
              "integer": isinstance(value, int) and not isinstance(value, bool)}[kind]
        if not ok:
            return f"properties.{name}"
    if obj["event_type"] in VALUE_REQUIRED_TYPES and "value" not in props:
        return "missing value"
    if props.get("value", 0) < 0:
        return "negative value"
    if props.get("quantity", 1) < 1:
        return "quantity"
    currency = props.get("currency")
    if currency is not None and not (len(currency) == 3 and currency.isalpha() and currency.isupper()):
        return "currency"
    consent = obj.get("consent", {})
    if set(consent) - set(CONSENT_FIELDS) or not all(isinstance(v, bool) for v in consent.values()):
        return "consent"
    return None


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """One clean JSON-lines run (300 users, 12 days) with its truth file."""
    tmp = tmp_path_factory.mktemp("clean")
    args = _args(tmp, "events.jsonl", "--truth", str(tmp / "truth.csv"))
    stats = gen.generate(args)
    events = [orjson.loads(line) for line in _lines(tmp / "events.jsonl")]
    with open(tmp / "truth.csv", newline="") as handle:
        truth = {row["user_id"]: row["archetype"] for row in csv.DictReader(handle)}
    return stats, events, truth, tmp


def test_same_arguments_give_identical_bytes(tmp_path):
    a = gen.generate(_args(tmp_path, "a.jsonl", "--corrupt-rate", "0.1", users=60, days=5))
    gen.generate(_args(tmp_path, "b.jsonl", "--corrupt-rate", "0.1", users=60, days=5))
    gen.generate(_args(tmp_path, "c.jsonl", "--corrupt-rate", "0.1", users=60, days=5, seed=4))
    assert a.events > 0
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    assert (tmp_path / "a.jsonl").read_bytes() != (tmp_path / "c.jsonl").read_bytes()


def test_same_arguments_give_identical_avro_bytes(tmp_path):
    gen.generate(_args(tmp_path, "a.avro", users=40, days=4))
    gen.generate(_args(tmp_path, "b.avro", users=40, days=4))
    assert (tmp_path / "a.avro").read_bytes() == (tmp_path / "b.avro").read_bytes()


def test_every_archetype_in_truth_at_its_quota(clean):
    stats, events, truth, _ = clean
    counts = collections.Counter(truth.values())
    assert set(counts) == set(gen.ARCHETYPES)
    total_weight = sum(a.weight for a in gen.ARCHETYPES.values())
    for name, archetype in gen.ARCHETYPES.items():
        # Quotas are rounded by largest remainder: each count is within one user of weight * N.
        assert abs(counts[name] - 300 * archetype.weight / total_weight) < 1.0, name
    assert stats.archetype_counts == dict(counts)
    assert sorted(truth) == [f"u-{i:06d}" for i in range(300)]


def test_archetype_mix_of_700_users(tmp_path):
    population = gen.sample_population(700, 30, seed=11)
    counts = collections.Counter(user.archetype for user in population)
    for name, archetype in gen.ARCHETYPES.items():
        assert abs(counts[name] - 700 * archetype.weight) < 1.0, name


def test_clean_run_is_all_valid_unique_events(clean):
    stats, events, _, tmp = clean
    problems = [(line, contract_problem(line)) for line in _lines(tmp / "events.jsonl")]
    assert [p for p in problems if p[1] is not None][:3] == []
    ids = [event["event_id"] for event in events]
    assert len(set(ids)) == len(ids) == stats.events == stats.records
    assert stats.corrupt == stats.duplicates == 0
    # 300 users x 12 days at the configured rates: thousands of events, every type.
    assert 5_000 < stats.events < 60_000
    assert {event["event_type"] for event in events} == set(EVENT_TYPES)


def test_timestamp_forms_and_consent_mix(clean):
    _, events, _, _ = clean
    stamps = [event["timestamp"] for event in events]
    epoch = sum(isinstance(s, int) for s in stamps) / len(stamps)
    zulu = sum(isinstance(s, str) and s.endswith("Z") for s in stamps) / len(stamps)
    offset = 1 - epoch - zulu
    assert 0.08 < epoch < 0.12  # 10 % per event: binomial sd over thousands of events < 0.5 %
    assert zulu > 0.4 and offset > 0.05
    absent = sum("consent" not in event for event in events) / len(events)
    refused = sum(event.get("consent", {}).get("personalization") is False for event in events) / len(events)
    assert 0.0 < absent < 0.15 and 0.0 < refused < 0.12


def test_timestamps_are_roughly_chronological_and_interleaved(clean):
    _, events, _, _ = clean
    times = [_timestamp_ms(event["timestamp"]) for event in events]
    # Within a day the order is exact; sessions past midnight may trail into the next day.
    assert sum(b < a - 6 * 3_600_000 for a, b in zip(times, times[1:])) == 0
    first_hundred_users = {event["user_id"] for event in events[:100]}
    assert len(first_hundred_users) > 5


def test_format_timestamp_round_trips():
    ts = 1_772_323_387_250  # 2026-03-01T00:03:07.250Z
    assert gen.format_timestamp(ts, 120, zulu=True) == "2026-03-01T00:03:07.250Z"
    assert gen.format_timestamp(ts, 120, zulu=False) == "2026-03-01T02:03:07.250+02:00"
    assert gen.format_timestamp(ts, -300, zulu=False) == "2026-02-28T19:03:07.250-05:00"
    assert gen.format_timestamp(ts, 330, zulu=False) == "2026-03-01T05:33:07.250+05:30"


def _by_archetype(events, truth):
    grouped = collections.defaultdict(list)
    for event in events:
        grouped[truth[event["user_id"]]].append(event)
    return grouped


def test_behaviour_by_archetype(clean):
    _, events, truth, _ = clean
    grouped = _by_archetype(events, truth)
    users = collections.Counter(truth.values())

    def per_user(name, event_type):
        return sum(e["event_type"] == event_type for e in grouped[name]) / users[name]

    assert per_user("loyal_high_value", "purchase") > 5 * per_user("window_shopper", "purchase")
    assert per_user("cart_abandoner", "add_to_cart") > 2 * per_user("window_shopper", "add_to_cart")
    assert per_user("email_engaged", "email_open") > 3 * per_user("window_shopper", "email_open")

    def mean_value(name):
        values = [e["properties"]["value"] for e in grouped[name] if e["event_type"] == "purchase"]
        return sum(values) / len(values)

    assert mean_value("bargain_hunter") < mean_value("loyal_high_value") / 2
    signups = {e["user_id"] for e in events if e["event_type"] == "signup"}
    assert signups and all(truth[u] == "new_visitor" for u in signups)


def test_dormant_and_new_visitors_are_active_when_they_should_be(clean):
    _, events, truth, _ = clean
    last_third = END_MS - DAYS * 86_400_000 // 3
    first_half = START_MS + DAYS * 86_400_000 // 2
    dormant = [e for e in events if truth[e["user_id"]] == "dormant"]
    new = [e for e in events if truth[e["user_id"]] == "new_visitor"]
    assert dormant and new
    assert max(_timestamp_ms(e["timestamp"]) for e in dormant) < last_third
    assert min(_timestamp_ms(e["timestamp"]) for e in new) >= first_half


def test_activity_is_skewed_across_users(clean):
    _, events, _, _ = clean
    per_user = sorted(collections.Counter(e["user_id"] for e in events).values(), reverse=True)
    top_tenth = sum(per_user[: len(per_user) // 10])
    assert top_tenth > 0.25 * len(events)


def test_campaigns_are_shared_across_users(clean):
    _, events, _, _ = clean
    opens = [e for e in events if e["event_type"] == "email_open"]
    campaigns = {e["properties"]["campaign"] for e in opens}
    assert opens and len(campaigns) <= DAYS
    assert len({e["user_id"] for e in opens}) > 3 * len(campaigns)
    assert all(e["channel"] == "email" for e in opens)


def test_corrupt_rate_covers_every_code(tmp_path):
    stats = gen.generate(_args(tmp_path, "bad.jsonl", "--corrupt-rate", "0.15", users=120, days=6))
    lines = _lines(tmp_path / "bad.jsonl")
    assert len(lines) == stats.records == stats.events + stats.corrupt + stats.duplicates
    assert set(stats.corrupt_by_code) == {code.value for code in gen.CORRUPT_CODES}
    assert all(count > 0 for count in stats.corrupt_by_code.values()), stats.corrupt_by_code
    assert sum(stats.corrupt_by_code.values()) == stats.corrupt
    assert 0.12 < (stats.corrupt + stats.duplicates) / stats.records < 0.18

    problems = [contract_problem(line) for line in lines]
    assert sum(p is not None for p in problems) == stats.corrupt
    assert problems.count("oversized") == stats.corrupt_by_code[ErrorCode.OVERSIZED.value]
    assert problems.count("invalid_json") == stats.corrupt_by_code[ErrorCode.INVALID_JSON.value]
    assert problems.count("not_an_object") == stats.corrupt_by_code[ErrorCode.NOT_AN_OBJECT.value]
    assert any(b"\xff" in line for line in lines)  # the invalid UTF-8 variant

    seen: set[bytes] = set()
    repeats = 0
    for line, problem in zip(lines, problems):
        if problem is None:  # some bad records (a bare 42) repeat too; they are not duplicates
            repeats += line in seen
            seen.add(line)
    assert repeats == stats.duplicates > 0

    valid_ids = {orjson.loads(line)["event_id"] for line, p in zip(lines, problems) if p is None}
    assert len(valid_ids) == stats.events
    for line, problem in zip(lines, problems):
        if problem is not None and problem not in ("invalid_json", "not_an_object"):
            assert orjson.loads(line).get("event_id") not in valid_ids


def test_corruption_leaves_the_valid_events_unchanged(tmp_path):
    gen.generate(_args(tmp_path, "clean.jsonl", users=80, days=5))
    gen.generate(_args(tmp_path, "dirty.jsonl", "--corrupt-rate", "0.3", users=80, days=5))
    clean = _lines(tmp_path / "clean.jsonl")
    dirty = list(dict.fromkeys(line for line in _lines(tmp_path / "dirty.jsonl") if contract_problem(line) is None))
    assert dirty == clean


def _avro_records(path) -> list[dict]:
    with open(path, "rb") as handle:
        return list(fastavro.reader(handle))


def _without_nulls(record: dict) -> dict:
    out = {}
    for key, value in record.items():
        if isinstance(value, dict):
            value = _without_nulls(value)
        if value is not None:
            out[key] = value
    return out


def test_avro_holds_the_same_valid_events_as_jsonl(tmp_path):
    gen.generate(_args(tmp_path, "e.jsonl", "--corrupt-rate", "0.1", users=80, days=5))
    stats = gen.generate(_args(tmp_path, "e.avro", "--corrupt-rate", "0.1", users=80, days=5))
    assert stats.format == "avro"
    json_events = {}
    for line in _lines(tmp_path / "e.jsonl"):
        if contract_problem(line) is None:
            event = orjson.loads(line)
            json_events[event["event_id"]] = event
    avro_events = {}
    for record in _avro_records(tmp_path / "e.avro"):
        if str(record["event_id"]).startswith("e-"):
            avro_events[record["event_id"]] = _without_nulls(record)
    assert list(avro_events) == list(json_events)
    assert avro_events == json_events
    # Only what the schema can carry is corrupted in Avro.
    for code in ("invalid_json", "not_an_object", "bad_type"):
        assert stats.corrupt_by_code[code] == 0
    for code in ("missing_field", "unknown_event_type", "bad_timestamp", "timestamp_out_of_range",
                 "negative_value", "oversized", "invalid_field_value"):
        assert stats.corrupt_by_code[code] > 0, code
    assert len(_avro_records(tmp_path / "e.avro")) == stats.records


def test_iter_events_matches_generate(tmp_path, clean):
    stats, events, _, _ = clean
    first = list(gen.iter_events(300, DAYS, END, 3))
    assert first == events


@pytest.mark.parametrize("flags", [
    ["--users", "0"], ["--users", "many"], ["--days", "-1"], ["--end", "2026-13-01"], ["--end", "01/03/2026"],
    ["--corrupt-rate", "1"], ["--corrupt-rate", "-0.1"], ["--format", "csv"], ["--seed", "-5"],
])
def test_bad_flags_are_clean_argparse_errors(flags, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(["--out", "x.jsonl", *flags])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith("segments generate: error: argument")
    assert "Traceback" not in capsys.readouterr().err


def test_defaults_and_format_inference():
    args = _parser().parse_args(["--out", "events.avro"])
    assert (args.users, args.days, args.seed, args.corrupt_rate, args.end, args.truth) == (2000, 30, 0, 0.0, None, None)
    assert gen.writing._resolve_format(args) == "avro"
    assert gen.writing._resolve_format(_parser().parse_args(["--out", "events.json"])) == "jsonl"
    assert gen.writing._resolve_format(_parser().parse_args(["--out", "e.avro", "--format", "jsonl"])) == "jsonl"
    with pytest.raises(SystemExit):
        _parser().parse_args([])  # --out is required


