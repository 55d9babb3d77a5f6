"""Streaming ingest: the publisher, the streaming options, and Pub/Sub -> events end to end.

The end-to-end test runs the streaming graph on the (bundle-based) DirectRunner against
the real Pub/Sub emulator. A streaming pipeline never finishes, so its outputs go to a
file sink that the test reads while it runs; the run is then cancelled. It fails,
rather than skips, when the emulator is missing.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import hashlib
import hmac
import json
import threading
import time
import uuid

import apache_beam as beam
import orjson
import pytest
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.transforms.window import TimestampedValue

from devtools import live, publisher, pubsub_emulator
from pipelines import streaming
from tests.support.waiting import wait_for
from transforms.ingest.messages import ParseMessageFn, message_source
from transforms.ingest.privacy import DEMO_ID_KEY
from transforms.ingest.validation import ValidationConfig

EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
CONSENTED = {"analytics": True, "personalization": True}


def _event(event_id: str, user_id: str, timestamp, **extra) -> dict:
    return {"event_id": event_id, "user_id": user_id, "event_type": "page_view", "timestamp": timestamp,
            "consent": CONSENTED, **extra}


def _hmac_hex(raw_user_id: str) -> str:
    # Written out here rather than calling transforms.ingest.privacy.pseudonymise.
    return hmac.new(DEMO_ID_KEY, raw_user_id.encode(), hashlib.sha256).hexdigest()


# ---------------------------------------------------------------------------
# Publisher


class FakePublisher:
    """Records what would be published; futures resolve at once with sequential ids."""

    def __init__(self, fail_every: int = 0):
        self.messages: list[tuple[str, bytes, dict]] = []
        self._fail_every = fail_every

    def publish(self, topic, data, **attributes):
        self.messages.append((topic, data, attributes))
        future = concurrent.futures.Future()
        if self._fail_every and len(self.messages) % self._fail_every == 0:
            future.set_exception(RuntimeError("publish refused"))
        else:
            future.set_result(str(len(self.messages)))
        return future


def test_encode_restamps_a_copy_and_leaves_bytes_alone():
    record = _event("e1", "u1", "2020-01-01T00:00:00Z")
    # 2026-03-01T12:00:00.123Z, in epoch ms computed from the calendar.
    now_ms = int((dt.datetime(2026, 3, 1, 12, 0, 0, tzinfo=dt.timezone.utc) - EPOCH).total_seconds()) * 1000 + 123

    encoded = orjson.loads(publisher.encode(record, now_ms))

    assert encoded == {**record, "timestamp": "2026-03-01T12:00:00.123Z"}
    assert record["timestamp"] == "2020-01-01T00:00:00Z"
    assert orjson.loads(publisher.encode(record, None)) == record
    assert publisher.encode(b"\xff not json", now_ms) == b"\xff not json"


def test_publish_events_sends_everything_with_event_time_attribute():
    records = [_event(f"e{i}", f"u{i}", "2020-01-01T00:00:00Z") for i in range(5)] + [b"{broken"]
    fake = FakePublisher()

    stats = publisher.publish_events(records, "projects/p/topics/t", rate=1000, publisher=fake,
                                     event_time_attribute="event_time", attributes={"origin": "test"},
                                     keep_ids=True)

    assert (stats.published, stats.failed, stats.stop_reason) == (6, 0, publisher.StopReason.EXHAUSTED)
    assert stats.message_ids == ["1", "2", "3", "4", "5", "6"]
    assert [topic for topic, _, _ in fake.messages] == ["projects/p/topics/t"] * 6
    assert fake.messages[-1][1] == b"{broken"
    for _, data, attributes in fake.messages[:5]:
        body = orjson.loads(data)
        stamped = dt.datetime.fromisoformat(body["timestamp"])
        # The attribute and the payload carry the same instant.
        assert int((stamped - EPOCH).total_seconds() * 1000) == int(attributes["event_time"])
        assert attributes["origin"] == "test"
    assert [orjson.loads(data)["event_id"] for _, data, _ in fake.messages[:5]] == [f"e{i}" for i in range(5)]


def test_publish_events_batches_records_into_ndjson_messages():
    records = [_event(f"e{i}", f"u{i}", "2020-01-01T00:00:00Z") for i in range(5)] + [b"{broken"]
    fake = FakePublisher()

    stats = publisher.publish_events(records, "projects/p/topics/t", rate=1000, publisher=fake, batch_size=4,
                                     max_batch_delay_s=60, keep_ids=True, restamp=False)

    # 6 records in messages of at most 4: 4 + 2, each marked as a batch.
    assert (stats.published, stats.messages, stats.failed) == (6, 2, 0)
    assert [attributes for _, _, attributes in fake.messages] == [{"content-type": "application/x-ndjson"}] * 2
    lines = [line for _, data, _ in fake.messages for line in data.split(b"\n")[:-1]]
    assert [orjson.loads(line)["event_id"] for line in lines[:5]] == [f"e{i}" for i in range(5)]
    assert lines[5] == b"{broken"
    assert all(data.endswith(b"\n") for _, data, _ in fake.messages)
    # The source each record will carry: message id, then its 1-based line.
    assert stats.message_ids == ["1#1", "1#2", "1#3", "1#4", "2#1", "2#2"]


def test_a_failed_batch_fails_all_its_records():
    fake = FakePublisher(fail_every=2)

    stats = publisher.publish_events([b"x"] * 7, "projects/p/topics/t", rate=1000, publisher=fake, batch_size=3,
                                     max_batch_delay_s=60)

    assert (stats.published, stats.failed, stats.messages) == (4, 3, 2)  # messages of 3, 3 (failed) and 1


def test_split_message_single_and_batched():
    from transforms.ingest.messages import split_message

    single = PubsubMessage(b'{"a": 1}\n{"b": 2}', {}, message_id="7")
    batch = PubsubMessage(b'{"a": 1}\r\n\n  \n{"b": 2\n{"c": 3}\n', {"content-type": "application/x-ndjson"},
                          message_id="8")

    assert list(split_message(single)) == [(b'{"a": 1}\n{"b": 2}', "pubsub:7")]
    # Line endings are not part of a record; blank lines are skipped but keep their number.
    assert list(split_message(batch)) == [(b'{"a": 1}', "pubsub:8#1"), (b'{"b": 2', "pubsub:8#4"),
                                          (b'{"c": 3}', "pubsub:8#5")]


def test_parse_step_judges_each_line_and_counts_records_read():
    fn = ParseMessageFn(ValidationConfig(), count_read_as="read")
    fn.setup()
    fn.start_bundle()
    now_ms = time.time_ns() // 1_000_000 - 60_000
    body = b"\n".join([orjson.dumps(_event("e1", "u1", now_ms)), b'{"event_id": "e2"', orjson.dumps(_event("e3", "u3", now_ms))])
    message = PubsubMessage(body, {"content-type": "application/x-ndjson"}, message_id="42")

    outputs = list(fn.process(message, timestamp=beam.utils.timestamp.Timestamp(0)))
    (tally,) = list(fn.finish_bundle())

    events = [o.value for o in outputs if isinstance(o, TimestampedValue)]
    dead = [o.value for o in outputs if isinstance(o, beam.pvalue.TaggedOutput)]
    assert [(e.event_id, e.source) for e in events] == [("e1", "pubsub:42#1"), ("e3", "pubsub:42#3")]
    assert [(d.error_code, d.source) for d in dead] == [("invalid_json", "pubsub:42#2")]
    assert tally.value.value == ("read", 3)


def test_publish_events_counts_failures():
    fake = FakePublisher(fail_every=3)

    stats = publisher.publish_events([b"x"] * 7, "projects/p/topics/t", rate=1000, publisher=fake)

    assert (stats.published, stats.failed) == (5, 2)


def test_publish_events_stops_at_max_events():
    fake = FakePublisher()

    stats = publisher.publish_events(iter([b"x"] * 10), "projects/p/topics/t", rate=1000, max_events=4,
                                     publisher=fake)

    assert (stats.published, stats.stop_reason, len(fake.messages)) == (4, publisher.StopReason.MAX_EVENTS, 4)


def test_publish_events_stops_when_asked():
    fake = FakePublisher()
    stop = threading.Event()

    def records():
        yield b"first"
        stop.set()
        yield b"second"

    stats = publisher.publish_events(records(), "projects/p/topics/t", rate=1000, stop=stop, publisher=fake)

    assert (stats.published, stats.stop_reason) == (1, publisher.StopReason.STOPPED)
    assert [data for _, data, _ in fake.messages] == [b"first"]


def test_publish_events_stops_at_the_deadline():
    fake = FakePublisher()

    # 10 000 records at 20/s cannot all go out in 0.5 s.
    stats = publisher.publish_events(iter([b"x"] * 10_000), "projects/p/topics/t", rate=20, seconds=0.5,
                                     publisher=fake)

    assert stats.stop_reason == publisher.StopReason.DEADLINE
    assert 0 < stats.published < 10_000


def test_publish_events_rejects_bad_arguments():
    with pytest.raises(ValueError, match="rate"):
        publisher.publish_events([], "projects/p/topics/t", rate=0, publisher=FakePublisher())
    with pytest.raises(ValueError, match="restamp"):
        publisher.publish_events([], "projects/p/topics/t", rate=1, restamp=False, event_time_attribute="t",
                                 publisher=FakePublisher())


def test_wake_up_event_is_valid_but_without_consent():
    from transforms.ingest.validation import validate_record

    event = validate_record(publisher.wake_up_event(), "test", ValidationConfig())

    assert event.consent_personalization is False


# ---------------------------------------------------------------------------
# Options and parsing


@pytest.mark.parametrize("message_id, publish_time, expected", [
    ("123", None, "pubsub:123"),
    (None, dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.timezone.utc), "pubsub:unknown@2026-03-01T12:00:00+00:00"),
    (None, None, "pubsub:unknown"),
])
def test_message_source(message_id, publish_time, expected):
    message = PubsubMessage(b"{}", {}, message_id=message_id, publish_time=publish_time)

    assert message_source(message) == expected


def test_subscription_is_checked_and_required_by_the_builder():
    with pytest.raises(SystemExit):
        PipelineOptions(["--subscription", "events-sub"]).view_as(streaming.StreamingOptions)
    # Not argparse-required (Beam re-parses options without it); the builder insists.
    missing = PipelineOptions([]).view_as(streaming.StreamingOptions)
    with pytest.raises(ValueError, match="--subscription"):
        streaming.read_events(beam.Pipeline(), missing, DEMO_ID_KEY)

    options = PipelineOptions(["--subscription", "projects/p/subscriptions/s"]).view_as(streaming.StreamingOptions)

    assert (options.subscription, options.timestamp_attribute) == ("projects/p/subscriptions/s", None)


@pytest.mark.parametrize("runner, expected", [
    (None, "BundleBasedDirectRunner"),
    ("DirectRunner", "BundleBasedDirectRunner"),
    ("DataflowRunner", "DataflowRunner"),
])
def test_local_runner_pins_the_bundle_based_direct_runner(runner, expected):
    options = PipelineOptions([] if runner is None else ["--runner", runner])

    streaming.local_runner(options)

    assert options.view_as(StandardOptions).runner == expected


@pytest.mark.parametrize("keep_read_time", [False, True])
def test_parse_keeps_payload_or_read_time(keep_read_time):
    fn = ParseMessageFn(ValidationConfig(), keep_read_time)
    fn.setup()
    fn.start_bundle()
    payload_ms = time.time_ns() // 1_000_000 - 60_000  # a minute ago
    read_time = beam.utils.timestamp.Timestamp(1_600_000_000)

    (output,) = fn.process((orjson.dumps(_event("e1", "u1", payload_ms)), "pubsub:7"), timestamp=read_time)

    assert isinstance(output, TimestampedValue)
    expected = read_time if keep_read_time else beam.utils.timestamp.Timestamp(micros=payload_ms * 1000)
    assert output.timestamp == expected
    assert output.value.timestamp_us == payload_ms * 1000
    assert output.value.source == "pubsub:7"


def test_parse_judges_against_the_current_time_not_the_launch_time():
    # A job launched in 2020 (its config's "now"), still running today.
    launched_us = int((dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc) - EPOCH).total_seconds()) * 1_000_000
    fn = ParseMessageFn(ValidationConfig(max_future_skew=dt.timedelta(days=1), now_us=launched_us), False)
    fn.setup()
    fn.start_bundle()
    today_ms = time.time_ns() // 1_000_000

    (output,) = fn.process((orjson.dumps(_event("e1", "u1", today_ms)), "pubsub:8"),
                           timestamp=beam.utils.timestamp.Timestamp(0))

    assert isinstance(output, TimestampedValue)
    assert output.value.event_id == "e1"


# ---------------------------------------------------------------------------
# End to end through the emulator


class _FileSink(beam.DoFn):
    """Appends each element, its kind and its timestamp to a JSON-lines file (test only)."""

    def __init__(self, path: str, kind: str):
        self._path = path
        self._kind = kind
        self._lock = threading.Lock()

    def __getstate__(self):
        return {"_path": self._path, "_kind": self._kind}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def process(self, element, timestamp=beam.DoFn.TimestampParam):
        line = orjson.dumps({"kind": self._kind, "timestamp_us": timestamp.micros, "value": element._asdict()})
        with self._lock, open(self._path, "ab") as handle:
            handle.write(line + b"\n")


def _read_sink(path) -> list[dict]:
    try:
        with open(path, "rb") as handle:
            return [json.loads(line) for line in handle if line.strip()]
    except FileNotFoundError:
        return []


def _wait_for(condition, what, timeout_s: float = 30.0, poll_s: float = 0.2):
    return wait_for(condition, what, timeout_s, poll_s)


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    with pubsub_emulator.running(log_dir=tmp_path_factory.mktemp("pubsub")) as running:
        yield running


@pytest.mark.integration
@pytest.mark.parametrize("timestamp_attribute", [None, "event_time"])
def test_pubsub_to_events_on_direct_runner(emulator, tmp_path, timestamp_attribute):
    name = f"events-{uuid.uuid4().hex[:8]}"
    topic, subscription = emulator.create_topic_and_subscription(name, name + "-sub")
    sink = str(tmp_path / "sink.jsonl")
    # Event times an hour ago (payload) and two hours ago (attribute), whole milliseconds.
    now_ms = time.time_ns() // 1_000_000
    payload_ms, attribute_ms = now_ms - 3_600_000, now_ms - 7_200_000
    payload_time = (EPOCH + dt.timedelta(milliseconds=payload_ms)).isoformat()
    first_batch = [
        _event("e1", "alice", payload_time),
        _event("e2", "bob", payload_time),
        b'{"event_id": "e3", "user_id": "carol"',  # truncated JSON
        _event("e1", "alice", payload_time),  # a redelivered duplicate
    ]

    options = PipelineOptions(["--subscription", subscription, "--demo_key"]
                              + (["--timestamp_attribute", timestamp_attribute] if timestamp_attribute else []))
    options.view_as(StandardOptions).streaming = True
    streaming.local_runner(options)
    p = beam.Pipeline(options=options)
    ingest = streaming.read_events(p, options.view_as(streaming.StreamingOptions), DEMO_ID_KEY)
    ingest.events | "SinkEvents" >> beam.ParDo(_FileSink(sink, "event"))
    ingest.messages.parsed.dead_letters | "SinkDeadLetters" >> beam.ParDo(_FileSink(sink, "dead_letter"))

    result = p.run()
    try:
        published = publisher.publish_events(
            first_batch, topic, rate=1000, restamp=False, keep_ids=True,
            attributes={"event_time": str(attribute_ms)})
        assert (published.published, published.failed) == (4, 0)
        # All four judged (so the duplicate has reached the dedupe), then a last event
        # whose arrival in the sink shows the earlier bundles went through.
        # The DirectRunner's streaming counters stop updating after the first bundles, so
        # progress is watched in the sink: two events and the dead letter.
        _wait_for(lambda: len(_read_sink(sink)) >= 3, "the first records in the sink")
        last = publisher.publish_events([_event("e4", "dave", payload_time)], topic, rate=1000, restamp=False,
                                        keep_ids=True, attributes={"event_time": str(attribute_ms)})
        _wait_for(lambda: any(row["value"]["event_id"] == "e4" for row in _read_sink(sink)
                              if row["kind"] == "event"), "the last event in the sink")
    finally:
        live.cancel_direct(result, lambda: publisher.publish_wake_up(topic))

    rows = _read_sink(sink)
    events = sorted((row for row in rows if row["kind"] == "event"), key=lambda row: row["value"]["event_id"])
    dead = [row["value"] for row in rows if row["kind"] == "dead_letter"]
    ids = published.message_ids

    # Ingest keeps the redelivered e1: the dedupe is the profile step's (tests/transforms/features).
    assert [(row["value"]["event_id"], row["value"]["user_id"]) for row in events] == [
        ("e1", _hmac_hex("alice")), ("e1", _hmac_hex("alice")), ("e2", _hmac_hex("bob")), ("e4", _hmac_hex("dave"))]
    sources = {row["value"]["source"] for row in events if row["value"]["event_id"] == "e1"}
    assert sources == {f"pubsub:{ids[0]}", f"pubsub:{ids[3]}"}
    sources = {row["value"]["event_id"]: row["value"]["source"] for row in events}
    assert sources["e2"] == f"pubsub:{ids[1]}"
    assert sources["e4"] == f"pubsub:{last.message_ids[0]}"
    assert [(letter["error_code"], letter["source"], letter["stage"]) for letter in dead] == [
        ("invalid_json", f"pubsub:{ids[2]}", "parse")]
    expected_ms = attribute_ms if timestamp_attribute else payload_ms
    assert {row["timestamp_us"] for row in events} == {expected_ms * 1000}
    assert {row["value"]["timestamp_us"] for row in events} == {payload_ms * 1000}
