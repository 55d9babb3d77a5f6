"""Fuzzing the real read-parse-validate path: every record meets exactly one fate.

Hypothesis generates records as raw bytes, as JSON (event-like objects with any field
broken, and any JSON at all) and as Avro files (valid records, then damaged bytes), writes
them to a file and runs the file reader's DoFn (`transforms.ingest.files._ParseFileFn`)
over it. For each input the checks are:

* one output per record (per non-empty line, per Avro record, per unreadable stretch),
  each with its own source, none dropped, none doubled;
* a dead letter keeps its payload byte for byte and carries a known code;
* a record built valid becomes an event with its own fields; a record broken in one
  known way is dead-lettered with the code the README's contract names for it.
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import tempfile

import fastavro
import pytest
from apache_beam.io import fileio
from apache_beam.io.filesystems import FileSystems
from apache_beam.pvalue import TaggedOutput
from apache_beam.transforms.window import GlobalWindow
from hypothesis import HealthCheck, given, settings, strategies as st

from transforms.contracts.events import CHANNELS, EVENT_TYPES, VALUE_REQUIRED_TYPES, load_avro_schema
from transforms.contracts.outcomes import DeadLetter, ErrorCode
from transforms.ingest.files import _ParseFileFn
from transforms.ingest.validation import ValidationConfig

NOW = dt.datetime(2026, 11, 2, tzinfo=dt.timezone.utc)
NOW_US = int(NOW.timestamp() * 1_000_000)
CONFIG = ValidationConfig(max_event_bytes=600, now_us=NOW_US)
CODES = {code.value for code in ErrorCode}
FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def judge_file(data: bytes, suffix: str) -> list:
    """The reader's outputs for a file holding `data`: Events (windowed) and dead letters (tagged)."""
    with tempfile.NamedTemporaryFile(suffix=suffix) as handle:
        handle.write(data)
        handle.flush()
        (metadata,) = FileSystems.match([handle.name])[0].metadata_list
        fn = _ParseFileFn(CONFIG)
        fn.setup()
        return list(fn.process(fileio.ReadableFile(metadata), window=GlobalWindow()))


def fates(outputs) -> dict[str, object]:
    """source -> Event or DeadLetter; fails on a source seen twice."""
    by_source = {}
    for output in outputs:
        item = output.value if isinstance(output, TaggedOutput) else output.value
        assert item.source not in by_source, f"two fates for {item.source}"
        by_source[item.source] = item
    return by_source


def payload(letter: DeadLetter) -> bytes:
    return base64.b64decode(letter.raw_payload) if letter.payload_encoding == "base64" else letter.raw_payload.encode(
        "utf-8", "surrogatepass")


# ----------------------------------------------------------------------------- strategies

json_leaf = (st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.text(max_size=12)
             | st.floats(allow_nan=True, allow_infinity=True))
json_any = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.text(max_size=6), inner, max_size=3), max_leaves=8)
ids = st.text(min_size=1, max_size=20)
timestamps = st.one_of(
    st.integers(int((NOW - dt.timedelta(days=300)).timestamp() * 1000), int(NOW.timestamp() * 1000)),
    st.datetimes(min_value=dt.datetime(2026, 1, 1), max_value=dt.datetime(2026, 11, 1),
                 timezones=st.sampled_from([dt.timezone.utc, dt.timezone(dt.timedelta(hours=2))])).map(
        lambda d: d.isoformat()))


@st.composite
def valid_events(draw) -> dict:
    event_type = draw(st.sampled_from(EVENT_TYPES))
    record = {"event_id": draw(ids), "user_id": draw(ids), "event_type": event_type, "timestamp": draw(timestamps),
              "consent": {"analytics": draw(st.booleans()), "personalization": draw(st.booleans())}}
    if draw(st.booleans()):
        record["channel"] = draw(st.sampled_from(CHANNELS))
    properties = {}
    if event_type in VALUE_REQUIRED_TYPES or draw(st.booleans()):
        properties["value"] = draw(st.floats(0, 1e6, allow_nan=False))
    if draw(st.booleans()):
        properties["quantity"] = draw(st.integers(1, 100))
    if properties:
        record["properties"] = properties
    return record


# (how to break a valid event, the code the contract gives it)
BREAKS = [
    (lambda r: r.pop("event_id"), ErrorCode.MISSING_FIELD),
    (lambda r: r.pop("timestamp"), ErrorCode.MISSING_FIELD),
    (lambda r: r.update(user_id=42), ErrorCode.BAD_TYPE),
    (lambda r: r.update(event_type="teleport"), ErrorCode.UNKNOWN_EVENT_TYPE),
    (lambda r: r.update(timestamp="yesterday"), ErrorCode.BAD_TIMESTAMP),
    (lambda r: r.update(timestamp=int(NOW.timestamp() * 1000) + 3 * 86_400_000), ErrorCode.TIMESTAMP_OUT_OF_RANGE),
    (lambda r: r.setdefault("properties", {}).update(value=-1.0), ErrorCode.NEGATIVE_VALUE),
    (lambda r: r.update(channel="pigeon"), ErrorCode.INVALID_FIELD_VALUE),
    (lambda r: r.update(consent={"personalization": "yes"}), ErrorCode.BAD_TYPE),
    (lambda r: r.update(page="x" * 700), ErrorCode.OVERSIZED),
]


def encode(record, draw_style) -> bytes:
    ascii_only, spaced = draw_style
    text = json.dumps(record, ensure_ascii=ascii_only, allow_nan=True, separators=(", ", ": ") if spaced else (",", ":"))
    return text.encode("utf-8", "surrogatepass")


# ----------------------------------------------------------------------------- JSON lines


@FUZZ
@given(st.lists(st.one_of(
    st.binary(max_size=200),  # any bytes at all (NUL, BOM, invalid UTF-8, ...)
    st.tuples(json_any, st.tuples(st.booleans(), st.booleans())).map(lambda t: encode(*t)),  # any JSON
    st.tuples(valid_events(), st.tuples(st.booleans(), st.booleans())).map(lambda t: encode(*t)),
), min_size=1, max_size=25), st.sampled_from([b"\n", b"\r\n"]))
def test_every_line_meets_exactly_one_fate(lines, ending):
    lines = [line.replace(b"\n", b" ") for line in lines]  # one record per line
    outputs = judge_file(ending.join(lines) + ending, ".jsonl")
    records = {f"{i}": line.rstrip(b"\r") for i, line in enumerate(lines, start=1) if line.rstrip(b"\r")}
    by_source = fates(outputs)
    assert {source.rsplit(":", 1)[1] for source in by_source} == set(records)
    for source, item in by_source.items():
        raw = records[source.rsplit(":", 1)[1]]
        if isinstance(item, DeadLetter):
            assert item.error_code in CODES
            assert payload(item) == raw  # byte for byte
        else:
            assert item.event_id == json.loads(raw)["event_id"]


@FUZZ
@given(st.lists(valid_events(), min_size=1, max_size=10), st.data())
def test_valid_events_pass_and_each_break_gets_its_code(records, data):
    lines, expected = [], []
    for record in records:
        if data.draw(st.booleans()):
            index = data.draw(st.integers(0, len(BREAKS) - 1))
            breaks, code = BREAKS[index]
            record = json.loads(json.dumps(record))
            breaks(record)
            expected.append(code.value)
        else:
            expected.append(None)
        lines.append(json.dumps(record).encode())
    by_source = fates(judge_file(b"\n".join(lines), ".jsonl"))
    for i, (line, code) in enumerate(zip(lines, expected), start=1):
        item = next(v for k, v in by_source.items() if k.endswith(f":{i}"))
        if code is None:
            record = json.loads(line)
            assert (item.event_id, item.user_id, item.event_type) == (
                record["event_id"], record["user_id"], record["event_type"]), item
        else:
            assert isinstance(item, DeadLetter) and item.error_code == code, (line, item)


# ----------------------------------------------------------------------------- Avro

AVRO_SCHEMA = fastavro.parse_schema(load_avro_schema())
optional_text = st.none() | st.text(max_size=10)


@st.composite
def avro_records(draw) -> dict:
    base = draw(valid_events())
    properties = base.get("properties") or {}
    return {
        "event_id": draw(ids | st.just("")), "user_id": base["user_id"],
        "event_type": draw(st.sampled_from(EVENT_TYPES) | st.text(max_size=8)),
        "timestamp": draw(timestamps | st.integers(-2**62, 2**62) | st.text(max_size=10)),
        "session_id": draw(optional_text), "channel": draw(st.none() | st.sampled_from(CHANNELS) | st.text(max_size=5)),
        "device": draw(optional_text),
        "properties": None if not properties and draw(st.booleans()) else {
            "product_id": None, "category": draw(optional_text),
            "value": draw(st.none() | st.floats(allow_nan=True, allow_infinity=True)),
            "currency": draw(st.none() | st.sampled_from(["EUR", "usd", "euro"])),
            "quantity": draw(st.none() | st.integers(-5, 5)), "page": None, "search_query": None, "campaign": None,
            "duration_s": None},
        "consent": draw(st.none() | st.fixed_dictionaries({"analytics": st.none() | st.booleans(),
                                                           "personalization": st.none() | st.booleans()})),
    }


@FUZZ
@given(st.lists(avro_records(), min_size=1, max_size=30), st.sampled_from(["null", "deflate"]),
       st.integers(40, 400))
def test_every_avro_record_meets_exactly_one_fate(records, codec, sync_interval):
    out = io.BytesIO()
    fastavro.writer(out, AVRO_SCHEMA, records, codec=codec, sync_interval=sync_interval)
    by_source = fates(judge_file(out.getvalue(), ".avro"))
    assert sorted(int(source.rsplit("#", 1)[1]) for source in by_source) == list(range(len(records)))
    for source, item in by_source.items():
        record = records[int(source.rsplit("#", 1)[1])]
        if isinstance(item, DeadLetter):
            assert item.error_code in CODES and item.error_code != ErrorCode.CORRUPT_FILE.value
        else:
            assert (item.event_id, item.user_id) == (record["event_id"], record["user_id"])


@FUZZ
@given(st.lists(avro_records(), min_size=1, max_size=30), st.data())
def test_a_damaged_avro_file_never_crashes_the_reader_nor_doubles_a_record(records, data):
    out = io.BytesIO()
    fastavro.writer(out, AVRO_SCHEMA, records, sync_interval=data.draw(st.integers(40, 400)))
    damaged = bytearray(out.getvalue())
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(damaged) - 1))
        damaged[at] = data.draw(st.integers(0, 255))
    if data.draw(st.booleans()):
        damaged = damaged[:data.draw(st.integers(0, len(damaged)))]
    outputs = judge_file(bytes(damaged), ".avro")
    by_source = fates(outputs)
    indexes = sorted(int(s.rsplit("#", 1)[1]) for s in by_source if "#" in s)
    assert indexes == list(range(len(indexes)))  # decoded records are numbered without gaps or repeats
    stretches = [item for s, item in by_source.items() if "@" in s.rsplit("/", 1)[-1]]
    assert all(isinstance(item, DeadLetter) and item.error_code == ErrorCode.CORRUPT_FILE.value for item in stretches)
    assert all(payload(item) for item in stretches)
    if not damaged:
        assert outputs == []


@pytest.mark.parametrize("data", [b"", b"\x00" * 10, b"Obj\x01", b"Obj\x01\x02\x02", "\ufeff{}\n".encode()])
def test_small_broken_avro_files(data):
    outputs = judge_file(data, ".avro")
    assert len(outputs) == (0 if not data else 1)
