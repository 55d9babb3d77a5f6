"""ComputeProfiles in Beam: batch and streaming give the same records; silence shows; lateness.

Streaming runs on TestStream: events arrive day by day while the watermark passes each
midnight (the daily re-scoring), and processing time jumps past the early firing so that
the updates on events fire too.
"""

from __future__ import annotations

import datetime as dt
import functools
import time

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that
from apache_beam.transforms.window import TimestampedValue

from models.handler import assignment_handler
from models import moments
from tests.support.models import MOMENTS, save_small_model
from transforms.contracts.events import Event
from transforms.features.compute import ComputeProfiles
from transforms.features.profile import ProfileRules
from transforms.scoring import AssignSegments

US = 1_000_000
HOUR = 3600 * US
DAY = 24 * HOUR
D0 = 20_000  # 2024-10-04
RULES = ProfileRules()


def midnight(day: int) -> int:
    return (D0 + day) * DAY


def event(i: int, user: str, day: float, kind: str = "page_view", **fields) -> Event:
    return Event(f"{user}-{i}", user, kind, midnight(0) + int(day * DAY), session_id=f"{user}-s{int(day)}",
                 source=f"test:{i}", **fields)


def history() -> list[Event]:
    """Two users: a buyer who stops after day 10 and a browser who keeps coming every other day."""
    buyer = [event(i, "buyer", d, kind, **({"value": 20.0, "order_id": f"o{i}"} if kind == "purchase" else {}))
             for i, (d, kind) in enumerate([(0.4, "page_view"), (0.45, "purchase"), (3.5, "product_view"),
                                            (3.52, "purchase"), (7.2, "search"), (10.1, "purchase")])]
    browser = [event(i, "browser", d + 0.3, "product_view") for i, d in enumerate(range(0, 20, 2))]
    return buyer + browser


def streaming_options() -> PipelineOptions:
    options = PipelineOptions(["--streaming"])
    options.view_as(StandardOptions).streaming = True
    return options


def stream_of(events: list[Event], last_day: int, duplicates: int = 0) -> TestStream:
    """Events in their days' order (a few redelivered), each midnight passed after its day's events."""
    stream = TestStream().advance_watermark_to(midnight(0) / US)
    by_day: dict[int, list] = {}
    for e in events + events[:duplicates]:
        by_day.setdefault((e.timestamp_us - midnight(0)) // DAY, []).append(
            TimestampedValue(e, e.timestamp_us / US))
    clock = int(time.time())
    for day in range(last_day):
        if day in by_day:
            stream = stream.add_elements(by_day[day])
            clock += 3600  # past the early firing: the updates on these events fire
            stream = stream.advance_processing_time(3600 if day else clock)
        stream = stream.advance_watermark_to(midnight(day + 1) / US)
    return stream.advance_watermark_to_infinity()


# What the pipelines produced: a matcher runs on a pickled copy of itself, so it reports
# through this module's global (shared in-process) rather than through a closure's list.
COLLECTED: dict[str, list] = {}


def _extend(key: str, actual) -> None:
    COLLECTED[key].extend(actual)


def _collect(into: list):
    """An `assert_that` matcher that appends what it is given to `into` (and checks nothing)."""
    key = f"c{id(into)}"
    COLLECTED[key] = into
    return functools.partial(_extend, key)


def streaming_records(events: list[Event], last_day: int, duplicates: int = 0,
                      max_silent: dt.timedelta = dt.timedelta(days=730)) -> list[dict]:
    got: list[dict] = []
    with TestPipeline(options=streaming_options()) as p:
        out = p | stream_of(events, last_day, duplicates) | ComputeProfiles(RULES, max_silent=max_silent)
        assert_that(out.features, _collect(got))
    return got


def batch_records(events: list[Event], as_of_day: int, history_days: int) -> list[dict]:
    got: list[dict] = []
    with TestPipeline() as p:
        events_pc = p | "Events" >> beam.Create(events) | beam.Map(lambda e: TimestampedValue(e, e.timestamp_us / US))
        as_of = p | "AsOf" >> beam.Create([midnight(as_of_day)])
        out = events_pc | ComputeProfiles(RULES, as_of_us=as_of, history_days=history_days)
        assert_that(out.features, _collect(got))
    return got


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for name in a:
        if isinstance(a[name], float):
            assert a[name] == pytest.approx(b[name], rel=1e-9, abs=1e-9), name
        else:
            assert a[name] == b[name], name


def test_batch_and_streaming_agree_across_midnight_at_midnight_and_on_a_late_event():
    """Through the runner (generated cases: `test_batch_equals_streaming.py`): a session
    from 23:55 into the next day, an event at 00:00:00 exactly, and a purchase of day 1
    arriving after the watermark passed day 3's midnight (within the lateness)."""
    def at(i, day, kind="page_view", session="s", **fields):
        return Event(f"e{i}", "u", kind, midnight(day) + int(round(fields.pop("hours", 0) * HOUR)),
                     session_id=session, source=f"test:{i}", **fields)

    straddling = [at(0, 0, hours=23 + 55 / 60), at(1, 1, "add_to_cart", hours=0.05),
                  at(2, 1, "purchase", hours=0.1, value=30.0, order_id="o1")]
    on_midnight = at(3, 2, "product_view", session=None)
    late = at(4, 1, "purchase", session=None, hours=20, value=12.5, order_id="o2")
    clock = int(time.time())
    stream = (TestStream().advance_watermark_to(midnight(0) / US)
              .add_elements([TimestampedValue(e, e.timestamp_us / US) for e in straddling])
              .advance_processing_time(clock + 3600)
              .advance_watermark_to(midnight(2) / US)
              .add_elements([TimestampedValue(on_midnight, on_midnight.timestamp_us / US)])
              .advance_processing_time(3600)
              .advance_watermark_to(midnight(3) / US)
              .add_elements([TimestampedValue(late, midnight(3) / US)])
              .advance_processing_time(3600)
              .advance_watermark_to(midnight(4) / US)
              .advance_watermark_to_infinity())
    got: list[dict] = []
    with TestPipeline(options=streaming_options()) as p:
        out = p | stream | ComputeProfiles(RULES)
        assert_that(out.features, _collect(got))
    streamed: dict[int, list[dict]] = {}
    for r in got:
        if r["scoring"] == "daily":
            streamed.setdefault(r["as_of_us"], []).append(r)
    # the late purchase re-scored midnights 2 and 3: each has its record and its correction
    assert {as_of: sorted(r["event_count"] for r in records) for as_of, records in streamed.items()
            if as_of <= midnight(4)} == {midnight(1): [1], midnight(2): [3, 4], midnight(3): [4, 5], midnight(4): [5]}
    corrected = {as_of: max(records, key=lambda r: r["event_count"]) for as_of, records in streamed.items()}
    batched = {r["as_of_us"]: r for r in batch_records(straddling + [on_midnight, late], 4, history_days=3)}
    assert sorted(batched) == [midnight(d) for d in (1, 2, 3, 4)]
    assert set(batched) <= set(streamed)  # streaming goes on re-scoring until it is drained
    for as_of, record in batched.items():
        _same(record, corrected[as_of])
    # as of midnight 1 the session is its 23:55 page view alone: a bounce, no purchase
    assert (batched[midnight(1)]["bounce_rate"], batched[midnight(1)]["purchase_session_share"]) == (1.0, 0.0)
    assert [batched[midnight(d)]["orders"] for d in (1, 2, 3, 4)] == [0.0, 2.0, 2.0, 2.0]
    assert [batched[midnight(d)]["event_count"] for d in (1, 2, 3, 4)] == [1, 4, 5, 5]


def test_streaming_updates_on_events_read_the_events_up_to_the_latest():
    records = [r for r in streaming_records(history(), 12) if r["scoring"] == "event" and r["user_key"] == "buyer"]
    # as of just after the latest event: a record reads the events before its as-of time
    assert [r["as_of_us"] for r in records] == [e.timestamp_us + 1 for e in history()[:6] if e.event_id in
                                                ("buyer-1", "buyer-3", "buyer-4", "buyer-5")]
    assert [r["orders"] for r in records] == [1.0, 2.0, 2.0, 3.0]
    assert all(r["days_since_last_event"] == 1 / DAY for r in records)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_small_model(str(tmp_path_factory.mktemp("model") / "artifact"), moments=MOMENTS)


def _scored(records: list[dict], model_dir: str) -> list[dict]:
    got: list[dict] = []
    with TestPipeline() as p:
        assigned = p | beam.Create(records) | AssignSegments(assignment_handler(model_dir))
        assert_that(assigned.assignments, _collect(got))
    return sorted(got, key=lambda a: a["as_of_us"])


@pytest.mark.parametrize("job", ["streaming", "batch"])
def test_a_silent_customer_drifts_recency_up_and_p_alive_down(job, model_dir):
    buyer = [e for e in history() if e.user_id == "buyer"]  # last event on day 10
    records = (streaming_records(buyer, 75) if job == "streaming" else batch_records(buyer, 75, history_days=64))
    daily = sorted((r for r in records if r["scoring"] == "daily" and r["as_of_us"] >= midnight(11)),
                   key=lambda r: r["as_of_us"])
    assert [r["as_of_us"] for r in daily][:65] == [midnight(d) for d in range(11, 76)]
    recency = [r["recency_days"] for r in daily]
    assert all(later > earlier for earlier, later in zip(recency, recency[1:]))
    assert daily[-1]["recency_days"] >= 60
    scores = _scored(daily, model_dir)
    alive = [a["p_alive"] for a in scores]
    assert all(later < earlier for earlier, later in zip(alive, alive[1:]))
    p90 = [a["p_purchase_90d"] for a in scores]
    assert all(later < earlier for earlier, later in zip(p90, p90[1:]))
    assert all(a["p_purchase_30d"] < a["p_purchase_90d"] for a in scores)
    # churn risk = P(no purchase in 90 days): it grows with the silence, never 0.
    assert [a["churn_risk"] for a in scores] == pytest.approx([1 - p for p in p90])
    assert 0 < scores[0]["churn_risk"] < scores[-1]["churn_risk"] < 1
    # The moment on the midnight re-scorings, no event needed. Active on days 0, 3, 7 and 10 (first
    # event 0.4, last 10.1): usual gap (9.7 + 1 x 3.3) / (3 + 1) = 3.25 days, so silent for more than
    # 1.5 x 3.25 = 4.875 days is quieter than usual (from the midnight of day 15: 4.9 days), more
    # than 6.5 lapsing (day 17: 6.9), more than max(4 x 3.25, 30) lapsed (day 41: 30.9).
    expected = ([moments.ACTIVE_AS_USUAL] * 4 + [moments.QUIETER_THAN_USUAL] * 2 + [moments.LAPSING] * 24
                + [moments.LAPSED] * 35)
    assert [a["moment"] for a in scores][:65] == expected
    assert scores[6]["moment_reason"] == "silent 6.9 days, more than 2 x the usual gap of 3.2"


def test_re_scoring_stops_after_max_silent_and_events_behind_the_clock_are_too_late():
    buyer = [e for e in history() if e.user_id == "buyer"]
    late = event(99, "buyer", 1.5, "purchase", value=5.0)  # from day 1, arriving on day 9
    stream = (TestStream().advance_watermark_to(midnight(0) / US).add_elements(
        [TimestampedValue(e, e.timestamp_us / US) for e in buyer[:4]])
        .advance_processing_time(int(time.time()) + 3600)
        .advance_watermark_to(midnight(9) / US)
        .add_elements([TimestampedValue(late, midnight(9) / US)])
        .advance_processing_time(3600)
        .advance_watermark_to(midnight(30) / US)
        .advance_watermark_to_infinity())
    features, dead = [], []
    with TestPipeline(options=streaming_options()) as p:
        out = p | stream | ComputeProfiles(RULES, max_silent=dt.timedelta(days=10))
        assert_that(out.features, _collect(features), label="Features")
        assert_that(out.too_late, _collect(dead), label="TooLate")
    daily = sorted(r["as_of_us"] for r in features if r["scoring"] == "daily")
    # last event on day 3.52: scored at the midnights where the silence is under 10 days,
    # the last at day 13 (9.48 days), as the batch job would (`profile.silent_too_long`)
    assert daily == [midnight(d) for d in range(1, 14)]
    assert [(d.error_code, d.source) for d in dead] == [("too_late", "test:99")]
    assert max(r["orders"] for r in features) == 2.0  # the late purchase counted nowhere
