"""Tests of the synthetic event generator (`devtools.generate`).

The checks of "a valid event" here are written from the contract constants
(`transforms.contracts.events`), independently of the pipeline's validator. Every
figure about the population (acquisition, dropout, purchases, BG/NBD inputs) is
recomputed here from the written events and the truth files, not taken from the
generator's internals.
"""

from __future__ import annotations

import argparse
import collections
import csv
import datetime as dt
import json

import fastavro
import numpy as np
import orjson
import pytest
from scipy import stats

from devtools import generate as gen
from devtools.generate.incidents import parse_incident
from models.bgnbd import BgNbdParams, fit_bgnbd, log_likelihood
from transforms.contracts.events import (
    AVRO_SCHEMA_PATH,
    CHANNELS,
    CONSENT_FIELDS,
    EVENT_TYPES,
    PROPERTY_FIELDS,
    TOP_LEVEL_FIELDS,
    VALUE_REQUIRED_TYPES,
)
from transforms.contracts.outcomes import ErrorCode

END = dt.date(2026, 3, 1)
DAYS = 30
DAY_MS = 86_400_000
START_MS = int(dt.datetime(2026, 1, 30, tzinfo=dt.timezone.utc).timestamp() * 1000)
END_MS = int(dt.datetime(2026, 3, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)
LIMIT_BYTES = 16 * 1024
# Properties the generator writes ahead of the contract (unknown fields are ignored by
# the validator until the contract adds them): name -> JSON type.
NEW_PROPERTIES = {"order_id": "string"}

# The long run: a year of calibration and a quarter of hold-out.
LONG_USERS, LONG_DAYS, LONG_HOLDOUT = 2400, 365, 90
LONG_START_MS = END_MS - (LONG_DAYS + LONG_HOLDOUT) * DAY_MS
LONG_CAL_END_MS = END_MS - LONG_HOLDOUT * DAY_MS
TRUTH_HEADER = ["user_id", "archetype", "acquired_at", "alive_at_calibration_end", "dropped_out_at",
                "purchase_rate_per_day", "dropout_probability", "first_purchase_at", "incident_affected"]


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


def contract_problem(raw: bytes, start_ms: int = START_MS, end_ms: int = END_MS):
    """None when `raw` is a valid contract v1 event in [start_ms, end_ms), else a short reason."""
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
            if not start_ms <= ts < end_ms:
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
        kind = PROPERTY_FIELDS.get(name) or NEW_PROPERTIES[name]
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


def _read_truth(path) -> dict[str, dict]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        assert reader.fieldnames == TRUTH_HEADER
        return {row["user_id"]: row for row in reader}


# ---------------------------------------------------------------------------
# A month of 300 users


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """One clean JSON-lines run (300 users, 30 days) with its truth file."""
    tmp = tmp_path_factory.mktemp("clean")
    args = _args(tmp, "events.jsonl", "--truth", str(tmp / "truth.csv"))
    stats_ = gen.generate(args)
    events = [orjson.loads(line) for line in _lines(tmp / "events.jsonl")]
    truth = {user: row["archetype"] for user, row in _read_truth(tmp / "truth.csv").items()}
    return stats_, events, truth, tmp


def test_same_arguments_give_identical_bytes(tmp_path):
    flags = ("--corrupt-rate", "0.1", "--holdout_days", "3")
    a = gen.generate(_args(tmp_path, "a.jsonl", *flags, "--truth", str(tmp_path / "a.csv"), users=60, days=6))
    gen.generate(_args(tmp_path, "b.jsonl", *flags, "--truth", str(tmp_path / "b.csv"), users=60, days=6))
    gen.generate(_args(tmp_path, "c.jsonl", *flags, users=60, days=6, seed=4))
    assert a.events > 0 and a.holdout_events > 0
    for name in ("{}.jsonl", "{}.holdout.jsonl"):
        assert (tmp_path / name.format("a")).read_bytes() == (tmp_path / name.format("b")).read_bytes()
        assert (tmp_path / name.format("a")).read_bytes() != (tmp_path / name.format("c")).read_bytes()
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    params_a = json.loads((tmp_path / "a.params.json").read_bytes())
    params_b = json.loads((tmp_path / "b.params.json").read_bytes())
    assert params_a == params_b


def test_same_arguments_give_identical_avro_bytes(tmp_path):
    gen.generate(_args(tmp_path, "a.avro", "--holdout_days", "2", users=40, days=4))
    gen.generate(_args(tmp_path, "b.avro", "--holdout_days", "2", users=40, days=4))
    assert (tmp_path / "a.avro").read_bytes() == (tmp_path / "b.avro").read_bytes()
    assert (tmp_path / "a.holdout.avro").read_bytes() == (tmp_path / "b.holdout.avro").read_bytes()


def test_every_archetype_in_truth_at_its_quota(clean):
    stats_, events, truth, _ = clean
    counts = collections.Counter(truth.values())
    assert set(counts) == set(gen.ARCHETYPES)
    total_weight = sum(a.weight for a in gen.ARCHETYPES.values())
    for name, archetype in gen.ARCHETYPES.items():
        # Quotas are rounded by largest remainder: each count is within one user of weight * N.
        assert abs(counts[name] - 300 * archetype.weight / total_weight) < 1.0, name
    assert stats_.archetype_counts == dict(counts)
    assert sorted(truth) == [f"u-{i:06d}" for i in range(300)]


def test_archetype_mix_of_700_users():
    population = gen.sample_population(700, 30, seed=11)
    counts = collections.Counter(user.archetype for user in population)
    for name, archetype in gen.ARCHETYPES.items():
        assert abs(counts[name] - 700 * archetype.weight) < 1.0, name


def test_clean_run_is_all_valid_unique_events(clean):
    stats_, events, truth, tmp = clean
    problems = [(line, contract_problem(line)) for line in _lines(tmp / "events.jsonl")]
    assert [p for p in problems if p[1] is not None][:3] == []
    ids = [event["event_id"] for event in events]
    assert len(set(ids)) == len(ids) == stats_.events == stats_.records
    assert stats_.corrupt == stats_.duplicates == 0
    # 300 users arriving over 24 days: thousands of events, every type, every user.
    assert 3_000 < stats_.events < 60_000
    assert {event["event_type"] for event in events} == set(EVENT_TYPES)
    assert {event["user_id"] for event in events} == set(truth)


def test_timestamp_forms_and_consent_mix(clean):
    _, events, _, _ = clean
    stamps = [event["timestamp"] for event in events]
    epoch = sum(isinstance(s, int) for s in stamps) / len(stamps)
    zulu = sum(isinstance(s, str) and s.endswith("Z") for s in stamps) / len(stamps)
    offset = 1 - epoch - zulu
    assert 0.08 < epoch < 0.12  # 10 % per event: binomial sd over thousands of events < 0.5 %
    # Most users write their local offset, a minority "Z" (per user, so the shares are
    # those of 300 users: sd about 2.5 points).
    assert offset > 0.5 and 0.1 < zulu < 0.4
    absent = sum("consent" not in event for event in events) / len(events)
    refused = sum(event.get("consent", {}).get("personalization") is False for event in events) / len(events)
    assert 0.0 < absent < 0.15 and 0.0 < refused < 0.12


def test_timestamps_are_roughly_chronological_and_interleaved(clean):
    _, events, _, _ = clean
    times = [_timestamp_ms(event["timestamp"]) for event in events]
    # Within a day the order is exact; sessions past midnight may trail into the next day,
    # and an order's session may begin before the midnight of its order.
    assert sum(b < a - 6 * 3_600_000 for a, b in zip(times, times[1:])) == 0
    first_hundred_users = {event["user_id"] for event in events[:100]}
    assert len(first_hundred_users) > 5


def test_format_timestamp_round_trips():
    ts = 1_772_323_387_250  # 2026-03-01T00:03:07.250Z
    assert gen.format_timestamp(ts, 120, zulu=True) == "2026-03-01T00:03:07.250Z"
    assert gen.format_timestamp(ts, 120, zulu=False) == "2026-03-01T02:03:07.250+02:00"
    assert gen.format_timestamp(ts, -300, zulu=False) == "2026-02-28T19:03:07.250-05:00"
    assert gen.format_timestamp(ts, 330, zulu=False) == "2026-03-01T05:33:07.250+05:30"


def test_activity_is_skewed_across_users(clean):
    _, events, _, _ = clean
    per_user = sorted(collections.Counter(e["user_id"] for e in events).values(), reverse=True)
    top_tenth = sum(per_user[: len(per_user) // 10])
    assert top_tenth > 0.25 * len(events)


def test_campaigns_are_shared_across_users(clean):
    _, events, _, _ = clean
    opens = [e for e in events if e["event_type"] == "email_open"]
    campaigns = {e["properties"]["campaign"] for e in opens}
    dated = campaigns - {"cmp-welcome"}  # an order from an e-mail before any campaign day
    assert opens and len(dated) <= DAYS
    assert all(c[4:] >= "20260130" and c[4:] < "20260301" for c in dated)
    assert len({e["user_id"] for e in opens}) > 3 * len(campaigns)
    assert all(e["channel"] == "email" for e in opens)


def test_corrupt_rate_covers_every_code(tmp_path):
    stats_ = gen.generate(_args(tmp_path, "bad.jsonl", "--corrupt-rate", "0.15", users=150, days=8))
    lines = _lines(tmp_path / "bad.jsonl")
    assert len(lines) == stats_.records == stats_.events + stats_.corrupt + stats_.duplicates
    assert set(stats_.corrupt_by_code) == {code.value for code in gen.CORRUPT_CODES}
    assert all(count > 0 for count in stats_.corrupt_by_code.values()), stats_.corrupt_by_code
    assert sum(stats_.corrupt_by_code.values()) == stats_.corrupt
    assert 0.12 < (stats_.corrupt + stats_.duplicates) / stats_.records < 0.18

    start_ms = END_MS - 8 * DAY_MS
    problems = [contract_problem(line, start_ms) for line in lines]
    assert sum(p is not None for p in problems) == stats_.corrupt
    assert problems.count("oversized") == stats_.corrupt_by_code[ErrorCode.OVERSIZED.value]
    assert problems.count("invalid_json") == stats_.corrupt_by_code[ErrorCode.INVALID_JSON.value]
    assert problems.count("not_an_object") == stats_.corrupt_by_code[ErrorCode.NOT_AN_OBJECT.value]
    assert any(b"\xff" in line for line in lines)  # the invalid UTF-8 variant

    seen: set[bytes] = set()
    repeats = 0
    for line, problem in zip(lines, problems):
        if problem is None:  # some bad records (a bare 42) repeat too; they are not duplicates
            repeats += line in seen
            seen.add(line)
    assert repeats == stats_.duplicates > 0

    valid_ids = {orjson.loads(line)["event_id"] for line, p in zip(lines, problems) if p is None}
    assert len(valid_ids) == stats_.events
    for line, problem in zip(lines, problems):
        if problem is not None and problem not in ("invalid_json", "not_an_object"):
            assert orjson.loads(line).get("event_id") not in valid_ids


def test_corruption_leaves_the_valid_events_unchanged(tmp_path):
    gen.generate(_args(tmp_path, "clean.jsonl", users=80, days=5))
    gen.generate(_args(tmp_path, "dirty.jsonl", "--corrupt-rate", "0.3", users=80, days=5))
    clean_ = _lines(tmp_path / "clean.jsonl")
    start_ms = END_MS - 5 * DAY_MS
    dirty = list(dict.fromkeys(line for line in _lines(tmp_path / "dirty.jsonl")
                               if contract_problem(line, start_ms) is None))
    assert dirty == clean_


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


def _schema_property_names() -> set[str]:
    schema = json.loads(AVRO_SCHEMA_PATH.read_text())
    (field,) = [f for f in schema["fields"] if f["name"] == "properties"]
    (record,) = [branch for branch in field["type"] if isinstance(branch, dict)]
    return {f["name"] for f in record["fields"]}


def test_avro_holds_the_same_valid_events_as_jsonl(tmp_path):
    gen.generate(_args(tmp_path, "e.jsonl", "--corrupt-rate", "0.1", users=100, days=8))
    stats_ = gen.generate(_args(tmp_path, "e.avro", "--corrupt-rate", "0.1", users=100, days=8))
    assert stats_.format == "avro"
    in_schema = _schema_property_names()
    start_ms = END_MS - 8 * DAY_MS
    json_events = {}
    for line in _lines(tmp_path / "e.jsonl"):
        if contract_problem(line, start_ms) is None:
            event = orjson.loads(line)
            if "properties" in event:  # Avro carries only what the schema has (order_id once it is added)
                event["properties"] = {k: v for k, v in event["properties"].items() if k in in_schema}
            json_events[event["event_id"]] = event
    assert any(e["event_type"] == "purchase" for e in json_events.values())
    avro_events = {}
    for record in _avro_records(tmp_path / "e.avro"):
        if str(record["event_id"]).startswith("e-"):
            avro_events[record["event_id"]] = _without_nulls(record)
    assert list(avro_events) == list(json_events)
    assert avro_events == json_events
    # Only what the schema can carry is corrupted in Avro.
    for code in ("invalid_json", "not_an_object", "bad_type"):
        assert stats_.corrupt_by_code[code] == 0
    for code in ("missing_field", "unknown_event_type", "bad_timestamp", "timestamp_out_of_range",
                 "negative_value", "oversized", "invalid_field_value"):
        assert stats_.corrupt_by_code[code] > 0, code
    assert len(_avro_records(tmp_path / "e.avro")) == stats_.records


def test_iter_events_matches_generate(clean):
    _, events, _, _ = clean
    assert list(gen.iter_events(300, DAYS, END, 3)) == events


def test_iter_events_with_holdout_matches_both_files(tmp_path):
    stats_ = gen.generate(_args(tmp_path, "e.jsonl", "--holdout_days", "4", users=50, days=6))
    written = [orjson.loads(line) for name in ("e.jsonl", "e.holdout.jsonl") for line in _lines(tmp_path / name)]
    assert len(written) == stats_.events + stats_.holdout_events
    assert list(gen.iter_events(50, 6, END, 3, holdout_days=4)) == written


@pytest.mark.parametrize("flags", [
    ["--users", "0"], ["--users", "many"], ["--days", "-1"], ["--end", "2026-13-01"], ["--end", "01/03/2026"],
    ["--corrupt-rate", "1"], ["--corrupt-rate", "-0.1"], ["--format", "csv"], ["--seed", "-5"],
    ["--holdout_days", "-1"], ["--holdout_days", "ninety"],
    ["--incident", "outage:2026-10-01:2026-10-08:0.5"], ["--incident", "checkout_failure:2026-10-08:2026-10-01:0.5"],
    ["--incident", "checkout_failure:2026-10-01:2026-10-08:0"], ["--incident", "checkout_failure:2026-10-01"],
])
def test_bad_flags_are_clean_argparse_errors(flags, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _parser().parse_args(["--out", "x.jsonl", *flags])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert error[-1].startswith("segments generate: error: argument")
    assert "Traceback" not in capsys.readouterr().err


def test_holdout_out_needs_holdout_days_and_another_path(tmp_path):
    with pytest.raises(ValueError, match="--holdout_days"):
        gen.generate(_args(tmp_path, "e.jsonl", "--holdout_out", str(tmp_path / "h.jsonl"), users=5, days=2))
    with pytest.raises(ValueError, match="must differ"):
        gen.generate(_args(tmp_path, "e.jsonl", "--holdout_days", "1", "--holdout_out", str(tmp_path / "e.jsonl"),
                           users=5, days=2))


def test_defaults_and_format_inference():
    args = _parser().parse_args(["--out", "events.avro"])
    assert (args.users, args.days, args.seed, args.corrupt_rate, args.end, args.truth) == (2000, 30, 0, 0.0, None, None)
    assert (args.holdout_days, args.holdout_out) == (0, None)
    assert gen.writing._resolve_format(args) == "avro"
    assert gen.writing._resolve_format(_parser().parse_args(["--out", "events.json"])) == "jsonl"
    assert gen.writing._resolve_format(_parser().parse_args(["--out", "e.avro", "--format", "jsonl"])) == "jsonl"
    with pytest.raises(SystemExit):
        _parser().parse_args([])  # --out is required


def test_holdout_file_has_only_valid_events_after_the_calibration_end(tmp_path):
    stats_ = gen.generate(_args(tmp_path, "cal.jsonl", "--holdout_days", "5", "--corrupt-rate", "0.1",
                                users=120, days=10))
    cal_end_ms = END_MS - 5 * DAY_MS
    assert stats_.calibration_end == dt.date(2026, 2, 24) and stats_.start == dt.date(2026, 2, 14)
    assert stats_.holdout_output == str(tmp_path / "cal.holdout.jsonl")
    calibration = _lines(tmp_path / "cal.jsonl")
    holdout = _lines(tmp_path / "cal.holdout.jsonl")
    assert len(calibration) == stats_.records and len(holdout) == stats_.holdout_events > 0
    # Calibration: valid events before the calibration end, plus the bad records.
    problems = [contract_problem(line, END_MS - 15 * DAY_MS, cal_end_ms) for line in calibration]
    assert sum(p is not None for p in problems) == stats_.corrupt > 0
    generated = [orjson.loads(line) for line, p in zip(calibration, problems)
                 if p is None or p == "timestamp outside the period"]
    assert all(_timestamp_ms(e["timestamp"]) < cal_end_ms for e in generated if e["event_id"].startswith("e-"))
    # Hold-out: valid, distinct events at or after the calibration end, none corrupt, no duplicate.
    assert [contract_problem(line, cal_end_ms, END_MS) for line in holdout] == [None] * len(holdout)
    assert len(set(holdout)) == len(holdout)
    ids = list(dict.fromkeys(orjson.loads(line)["event_id"] for line, p in zip(calibration, problems) if p is None))
    ids += [orjson.loads(line)["event_id"] for line in holdout]
    assert len(ids) == len(set(ids)) == stats_.events + stats_.holdout_events


# ---------------------------------------------------------------------------
# A year of 2,400 users with a quarter of hold-out


class _Run:
    """The long run's events (compact), truth and parameters, as read back from the files."""

    def __init__(self, tmp, stats_):
        self.stats = stats_
        self.truth = _read_truth(tmp / "truth.csv")
        self.params = json.loads((tmp / "truth.params.json").read_bytes())
        # (user, type, ms, session, order_id, timestamp form, in hold-out) per event.
        self.events: list[tuple] = []
        self.stamps: list[object] = []  # the raw timestamps (strings or ints)
        self.props: list[dict] = []
        for name, holdout in (("events.jsonl", False), ("events.holdout.jsonl", True)):
            for line in _lines(tmp / name):
                event = orjson.loads(line)
                props = event.get("properties") or {}
                self.events.append((event["user_id"], event["event_type"], _timestamp_ms(event["timestamp"]),
                                    event.get("session_id"), props.get("order_id"), holdout,
                                    event.get("channel"), event.get("device")))
                self.stamps.append(event["timestamp"])
                self.props.append(props)

    def ms(self, text: str) -> int:
        return _timestamp_ms(text)


@pytest.fixture(scope="module")
def long_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("long")
    stats_ = gen.generate(_parser().parse_args([
        "--users", str(LONG_USERS), "--days", str(LONG_DAYS), "--holdout_days", str(LONG_HOLDOUT),
        "--end", END.isoformat(), "--seed", "5", "--out", str(tmp / "events.jsonl"),
        "--truth", str(tmp / "truth.csv")]))
    return _Run(tmp, stats_)


def test_long_run_files_and_truth_parameters(long_run):
    run = long_run
    assert run.stats.events > 0 and run.stats.holdout_events > 0
    assert len(run.truth) == LONG_USERS
    assert run.params["calibration_end"] == "2025-12-01"  # 2026-03-01 minus 90 days
    assert run.params["period_start"] == "2024-12-01"  # minus 365 more
    assert run.params["time_unit"] == "day"
    assert set(run.params["archetypes"]) == set(gen.ARCHETYPE_NAMES)
    for name, archetype in run.params["archetypes"].items():
        assert set(archetype["bgnbd"]) == {"r", "alpha", "a", "b"}
        assert archetype["users"] == sum(row["archetype"] == name for row in run.truth.values())
    # Holdout split by each event's own time.
    assert all((ms >= LONG_CAL_END_MS) == holdout and LONG_START_MS <= ms < END_MS
               for _, _, ms, _, _, holdout, _, _ in run.events)


def test_users_arrive_over_the_first_80_percent_of_the_calibration_period(long_run):
    run = long_run
    acquired = np.array([run.ms(row["acquired_at"]) for row in run.truth.values()])
    window_ms = round(0.8 * LONG_DAYS) * DAY_MS
    assert acquired.min() >= LONG_START_MS and acquired.max() < LONG_START_MS + window_ms
    # Uniform arrivals: each quarter of the window holds a quarter of the users
    # (binomial sd at 2,400 users: 0.9 points; 4 sd = 3.5 points).
    quarters = np.bincount(((acquired - LONG_START_MS) * 4 // window_ms).astype(int), minlength=4) / LONG_USERS
    assert np.all(np.abs(quarters - 0.25) < 0.035), quarters
    # Each user's first event is its acquisition visit, with its one sign-up.
    first_event: dict[str, tuple[int, str]] = {}
    signups = collections.Counter()
    for user, kind, ms, *_ in run.events:
        if user not in first_event or ms < first_event[user][0]:
            first_event[user] = (ms, kind)
        signups[user] += kind == "signup"
    assert set(first_event) == set(run.truth)
    for user, row in run.truth.items():
        assert first_event[user][0] == run.ms(row["acquired_at"]), user
    assert set(signups.values()) == {1}


def test_nobody_is_active_after_dropping_out(long_run):
    run = long_run
    last_event: dict[str, int] = {}
    in_holdout: set[str] = set()
    orders: dict[str, set] = collections.defaultdict(set)
    for user, kind, ms, _, order_id, holdout, *_ in run.events:
        last_event[user] = max(last_event.get(user, ms), ms)
        if holdout:
            in_holdout.add(user)
        if kind == "purchase":
            orders[user].add((ms, order_id))
    dropped = {u: run.ms(row["dropped_out_at"]) for u, row in run.truth.items() if row["dropped_out_at"]}
    assert all(last_event[u] <= when for u, when in dropped.items())
    # The truth's alive flag is "not dropped out by the calibration end".
    for user, row in run.truth.items():
        alive = row["alive_at_calibration_end"]
        assert alive in ("true", "false")
        assert (alive == "false") == (user in dropped and dropped[user] < LONG_CAL_END_MS), user
    # ... and agrees with activity in the 90 hold-out days: none of the churned users is
    # seen again, and alive users are visible (browsing, e-mail) in all but rare cases.
    churned = [u for u, row in run.truth.items() if row["alive_at_calibration_end"] == "false"]
    alive_users = [u for u, row in run.truth.items() if row["alive_at_calibration_end"] == "true"]
    assert not in_holdout & set(churned)
    assert sum(u in in_holdout for u in alive_users) / len(alive_users) > 0.95
    # A good share churns within the year (BG/NBD dropout and the non-buyers' hazard).
    assert 0.3 < len(churned) / LONG_USERS < 0.75
    # Dropout happens after a repeat purchase, never after the first: a buyer who left
    # has at least two orders, and its last event is its last order.
    for user, when in dropped.items():
        n_orders = len({order_id for _, order_id in orders[user]})
        assert n_orders != 1, user
        if n_orders:
            assert max(ms for ms, _ in orders[user]) == when == last_event[user], user


def test_every_purchase_belongs_to_one_checkout_order(long_run):
    run = long_run
    lines_by_order: dict[str, list[tuple]] = collections.defaultdict(list)
    sessions = collections.defaultdict(list)
    for (user, kind, ms, session, order_id, _, channel, device), props in zip(run.events, run.props):
        if session is not None:
            sessions[session].append((ms, kind))
        if kind == "purchase":
            assert order_id is not None
            assert props["currency"] in ("EUR", "USD", "GBP")
            lines_by_order[order_id].append((user, session, ms, channel, device))
        elif kind == "refund":
            assert order_id in lines_by_order and props["currency"] in ("EUR", "USD", "GBP")
    assert len(lines_by_order) > 1000
    per_session = collections.Counter()
    for order_id, lines in lines_by_order.items():
        assert len({(user, session, ms, channel) for user, session, ms, channel, _ in lines}) == 1, order_id
        per_session[lines[0][1]] += 1
        user, session, ms, channel, device = lines[0]
        if channel == "store":
            assert device == "pos"
            continue
        # Online: product views, a cart line per purchase line, a started checkout, all before.
        before = collections.Counter(kind for t, kind in sessions[session] if t <= ms)
        assert before["add_to_cart"] >= len(lines) and before["checkout_start"] == 1, order_id
        assert before["product_view"] >= len(lines)
    assert set(per_session.values()) == {1}  # one order per session; browsing sessions have none
    # Orders usually have one line; several is common, more than six never.
    sizes = collections.Counter(len(lines) for lines in lines_by_order.values())
    assert max(sizes) <= 6 and 0.3 < sizes[1] / len(lines_by_order) < 0.9
    # Abandoned carts stay: started checkouts without an order.
    abandoned = sum(1 for events in sessions.values() if any(k == "checkout_start" for _, k in events)
                    and not any(k == "purchase" for _, k in events))
    assert abandoned > 0.2 * len(lines_by_order)


def test_purchase_days_give_buyers_and_repeat_buyers(long_run):
    run = long_run
    days: dict[str, set] = collections.defaultdict(set)
    orders: dict[str, set] = collections.defaultdict(set)
    for user, kind, ms, _, order_id, holdout, *_ in run.events:
        if kind == "purchase" and not holdout:
            days[user].add(ms // DAY_MS)
            orders[user].add(order_id)
    buyers = len(days) / LONG_USERS
    three_plus = sum(len(d) >= 3 for d in days.values()) / LONG_USERS
    assert buyers >= 0.4 and three_plus >= 0.15
    # Several orders on one UTC day are rare (the pipeline counts purchase days).
    n_orders = sum(len(o) for o in orders.values())
    assert (n_orders - sum(len(d) for d in days.values())) / n_orders < 0.01
    # The truth's first purchase is the first purchase event (over both files).
    first = {}
    for user, kind, ms, *_ in run.events:
        if kind == "purchase":
            first[user] = min(first.get(user, ms), ms)
    assert {u: run.ms(r["first_purchase_at"]) for u, r in run.truth.items() if r["first_purchase_at"]} == first


# Wilks: at the true parameters, 2 (LL(fit) - LL(truth)) ~ chi2 with 4 degrees of freedom.
LR_LIMIT = stats.chi2.ppf(0.999, 4)  # 18.47


def test_bgnbd_fit_on_the_purchase_events_recovers_each_archetypes_parameters(long_run):
    """BG/NBD fitted per archetype on (x, t_x, T) from the calibration file's purchases.

    x = purchase days - 1 (UTC days), t_x = last - first purchase and T = calibration
    end - first purchase, in days. Tolerance: the true (r, alpha, a, b) must lie in the
    fit's 99.9 % likelihood-ratio confidence region, 2 (LL(fit) - LL(truth)) < 18.47
    (chi-squared with 4 degrees of freedom, Wilks). The region is as wide as the sample
    allows and no wider: at 80-330 buyers per archetype r and alpha are loose one by one
    but tight in their ratio (the mean rate), and a and b are loose unless many buyers
    repeat. The generator departs from BG/NBD only in how it puts orders into days (one
    per local day, at a time of the daily rhythm; under 0.5 % of orders share a UTC
    day); fitted on 200,000 users' lifecycles the statistic stayed below 5 for every
    archetype, so at this size the departure is negligible against the limit.

    The test also shows that the region is tight enough to catch a wrong process:
    truths whose mean purchase rate is off by a factor 2 are outside it for every
    archetype with at least 80 repeat buyers, and truths whose mean dropout
    probability is off by about 2.4 for those with at least 200.
    """
    run = long_run
    purchases: dict[str, list[int]] = collections.defaultdict(list)
    for user, kind, ms, _, _, holdout, *_ in run.events:
        if kind == "purchase" and not holdout:
            purchases[user].append(ms)
    failures, powerless = [], []
    for name, archetype in run.params["archetypes"].items():
        x, t_x, T = [], [], []
        for user, times in purchases.items():
            if run.truth[user]["archetype"] != name:
                continue
            first, last = min(times), max(times)
            x.append(len({ms // DAY_MS for ms in times}) - 1)
            t_x.append((last - first) / DAY_MS)
            T.append((LONG_CAL_END_MS - first) / DAY_MS)
        x, t_x, T = np.array(x, float), np.array(t_x), np.array(T)
        fit = fit_bgnbd(x, t_x, T)
        truth = archetype["bgnbd"]
        true = BgNbdParams(truth["r"], truth["alpha"], truth["a"], truth["b"])

        def lr(params, fit=fit, x=x, t_x=t_x, T=T):
            return 2.0 * float(np.sum(log_likelihood(fit, x, t_x, T) - log_likelihood(params, x, t_x, T)))

        if not lr(true) < LR_LIMIT:
            failures.append((name, len(x), fit, lr(true)))
        repeaters = int((x >= 1).sum())
        wrong = []
        if repeaters >= 80:
            wrong += [true._replace(alpha=true.alpha * 2), true._replace(alpha=true.alpha / 2)]
        if repeaters >= 200:
            wrong += [true._replace(b=true.b / 2.5), true._replace(b=true.b * 2.5)]
        powerless += [(name, params, lr(params)) for params in wrong if not lr(params) > LR_LIMIT]
    assert failures == []
    assert powerless == []


def test_local_offsets_carry_the_users_evening_rhythm(long_run):
    run = long_run
    offsets = collections.Counter()
    hours_by_offset: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    suffix_by_user: dict[str, set] = collections.defaultdict(set)
    currency_by_offset: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for (user, kind, *_), stamp, props in zip(run.events, run.stamps, run.props):
        if isinstance(stamp, int):
            continue
        suffix = "Z" if stamp.endswith("Z") else stamp[-6:]
        offsets[suffix] += 1
        suffix_by_user[user].add(suffix)
        if kind == "page_view":
            hours_by_offset[suffix][int(stamp[11:13])] += 1
        if kind == "purchase":
            currency_by_offset[suffix][props["currency"]] += 1
    strings = sum(offsets.values())
    assert (strings - offsets["Z"]) / strings > 0.6  # most users write their local offset
    assert {"+01:00", "-05:00", "+05:30"} <= set(offsets)
    assert all(len(s) == 1 for s in suffix_by_user.values())  # one form per user
    # In local time every region peaks in the evening and sleeps at night; were the
    # offsets wrong, -05:00 users (say) would show their evening at 23-04 h.
    for suffix in ("+00:00", "+01:00", "-05:00"):
        hours = hours_by_offset[suffix]
        total = sum(hours.values())
        evening = sum(hours[h] for h in range(17, 23)) / total
        night = sum(hours[h] for h in range(1, 6)) / total
        assert evening > 0.3 and night < 0.05, (suffix, evening, night)
    # Currencies follow the region.
    assert currency_by_offset["+01:00"].most_common(1)[0][0] == "EUR"
    assert currency_by_offset["-05:00"].most_common(1)[0][0] == "USD"
    assert currency_by_offset["+00:00"].most_common(1)[0][0] == "GBP"


def test_behaviour_by_archetype(long_run):
    run = long_run
    users = collections.Counter(row["archetype"] for row in run.truth.values())
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    values = collections.defaultdict(list)
    sessions = collections.defaultdict(set)
    devices = collections.defaultdict(collections.Counter)
    channels = collections.defaultdict(collections.Counter)
    for (user, kind, _, session, _, _, channel, device), props in zip(run.events, run.props):
        name = run.truth[user]["archetype"]
        counts[name][kind] += 1
        if session is not None:
            sessions[name].add(session)
        if kind == "page_view":
            devices[name][device] += 1
            channels[name][channel] += 1
        if kind == "purchase":
            values[name].append(props["value"])

    def per_user(name, kind):
        return counts[name][kind] / users[name]

    assert per_user("loyal_high_value", "purchase") > 5 * per_user("window_shopper", "purchase")
    assert per_user("cart_abandoner", "add_to_cart") > 2 * per_user("window_shopper", "add_to_cart")
    assert per_user("email_engaged", "email_open") > 3 * per_user("window_shopper", "email_open")
    assert per_user("window_shopper", "page_view") > 3 * per_user("casual_visitor", "page_view")
    assert np.mean(values["bargain_hunter"]) < np.mean(values["loyal_high_value"]) / 2
    assert np.mean(values["occasional_buyer"]) > np.mean(values["bargain_hunter"]) * 2
    share = {name: devices[name]["desktop"] / sum(devices[name].values()) for name in devices}
    assert share["occasional_buyer"] > 2 * share["casual_visitor"]
    social = {name: channels[name]["social"] / sum(channels[name].values()) for name in channels}
    assert social["casual_visitor"] > 3 * social["loyal_high_value"]


def _ms(timestamp) -> int:
    if isinstance(timestamp, int):
        return timestamp
    return int(dt.datetime.fromisoformat(timestamp).timestamp() * 1000)


def _events_by_user(path) -> dict[str, list[dict]]:
    users: dict[str, list[dict]] = collections.defaultdict(list)
    for line in open(path, encoding="utf-8"):
        event = json.loads(line)
        del event["event_id"]  # numbered in output order over all users: they shift
        users[event["user_id"]].append(event)
    return users


def test_checkout_incident_fails_the_affected_users_orders_only(tmp_path):
    """The same seed with and without the incident: only the affected users' events differ, and for
    each failed order the purchase lines are replaced by two more checkout attempts."""
    common = dict(users=300, days=40, seed=5, end=dt.date(2026, 11, 1))
    plain = gen.generate_events(tmp_path / "plain.jsonl", truth=tmp_path / "plain.csv", **common)
    incident = parse_incident("checkout_failure:2026-10-15:2026-10-22:0.4")
    hit = gen.generate_events(tmp_path / "hit.jsonl", truth=tmp_path / "hit.csv", incident=incident, **common)
    truth = list(csv.DictReader(open(tmp_path / "hit.csv", encoding="utf-8")))
    affected = {row["user_id"] for row in truth if row["incident_affected"] == "true"}
    assert 0.3 < len(affected) / len(truth) < 0.5
    assert all(row["incident_affected"] == "false" for row in csv.DictReader(open(tmp_path / "plain.csv")))
    params = json.loads((tmp_path / "hit.params.json").read_text())
    assert params["incident"]["kind"] == "checkout_failure" and params["incident"]["share_of_users"] == 0.4

    before, after = _events_by_user(tmp_path / "plain.jsonl"), _events_by_user(tmp_path / "hit.jsonl")
    start, end = incident.start_ms, incident.end_ms
    failed_orders = 0
    for user, events in before.items():
        if user not in affected:
            assert after[user] == events, user
            continue
        orders = {e["properties"]["order_id"]: e for e in events if e["event_type"] == "purchase"
                  and e["channel"] != "store" and start <= _ms(e["timestamp"]) < end}
        bought = {e["properties"]["order_id"] for e in after[user] if e["event_type"] == "purchase"}
        assert not (set(orders) & bought)  # every online order in the range failed
        for order_id, purchase in orders.items():
            session = [e for e in after[user] if e.get("session_id") == purchase["session_id"]]
            assert [e["event_type"] for e in session].count("checkout_start") == 3  # the first and two retries
        failed_orders += len(orders)
        # Nothing else changed: the other events are the same, in the same order.
        kept = [e for e in events if not (e["event_type"] in ("purchase", "refund")
                                          and e["properties"].get("order_id") in orders)]
        assert [e for e in after[user] if not (e["event_type"] == "checkout_start" and e not in events)] == kept
    assert failed_orders == hit.failed_checkouts > 5
    assert plain.failed_checkouts == 0
