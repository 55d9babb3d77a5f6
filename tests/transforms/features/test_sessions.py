"""Sessions: the session combiner, and the signed (retracting) session stream."""

from __future__ import annotations

from datetime import timedelta

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from transforms.contracts.events import Event
from transforms.features.sessions import SessionCombineFn, SessionSummary, Sessionize, summarise

SEC = 1_000_000
MIN = 60 * SEC
DAY0 = 20_000 * 86_400 * SEC


def ev(event_id, t_us, kind="page_view", user="u", session_id=None) -> Event:
    return Event(event_id, user, kind, t_us, session_id=session_id, source=f"s:{event_id}")


def test_session_combiner_summarises_and_merges():
    fn = SessionCombineFn()
    left = fn.create_accumulator()
    for e in (ev("1", DAY0 + 5 * MIN, "add_to_cart"), ev("2", DAY0, "page_view")):
        left = fn.add_input(left, e)
    right = fn.add_input(fn.create_accumulator(), ev("3", DAY0 + 9 * MIN, "product_view"))
    merged = fn.merge_accumulators([left, fn.create_accumulator(), right])
    summary = summarise("u", None, fn.extract_output(merged))
    assert summary == SessionSummary("u", None, DAY0, DAY0 + 9 * MIN, 3, 1, 1, True, False, False)
    assert summary.duration_s == 540.0
    assert summary.abandoned_cart and not summary.bounce


def test_single_event_session_is_a_bounce():
    fn = SessionCombineFn()
    summary = summarise("u", "s", fn.add_input(fn.create_accumulator(), ev("1", DAY0, "purchase")))
    assert summary.bounce and summary.reached_purchase and not summary.abandoned_cart
    assert summary.duration_s == 0.0


def _signed(kv):
    user, signed = kv
    s = signed.session
    return user, s.session_id, (s.start_us - DAY0) // MIN, (s.end_us - DAY0) // MIN, s.events, signed.sign


def test_late_bridging_event_retracts_fired_sessions():
    stream = (
        TestStream()
        .advance_watermark_to(DAY0 / SEC)
        .add_elements([TimestampedValue(("u", e), e.timestamp_us / SEC)
                       for e in (ev("1", DAY0), ev("3", DAY0 + 50 * MIN), ev("x", DAY0 + 5 * MIN, session_id="s"))])
        .advance_watermark_to((DAY0 + 120 * MIN) / SEC)  # all three sessions fire on time
        .add_elements([TimestampedValue(("u", ev("2", DAY0 + 25 * MIN)), (DAY0 + 25 * MIN) / SEC)])  # late bridge
        .advance_watermark_to_infinity()
    )
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with TestPipeline(options=options) as p:
        signed = p | stream | Sessionize(gap=timedelta(minutes=30), runner_lateness=timedelta(days=1))
        assert_that(signed | beam.Map(_signed), equal_to([
            ("u", None, 0, 0, 1, +1),    # 00:00 alone
            ("u", None, 50, 50, 1, +1),  # 00:50 alone
            ("u", "s", 5, 5, 1, +1),     # its own session id: never merged with the others
            ("u", None, 0, 0, 1, -1),    # the late 00:25 event bridges both: retract them ...
            ("u", None, 50, 50, 1, -1),
            ("u", None, 0, 50, 3, +1),   # ... and emit the merged session
        ]))
