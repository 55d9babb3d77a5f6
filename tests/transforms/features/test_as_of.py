"""`AsOfMicros`: the given date at midnight UTC, or the midnight after the latest event."""

from __future__ import annotations

import datetime as dt

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from transforms.contracts.events import Event
from transforms.features.as_of import DAY_US, AsOfMicros, _LatestEventTime, midnight_us

DAY = dt.date(2026, 12, 7)
MIDNIGHT = 1_796_601_600_000_000  # 2026-12-07T00:00:00Z, computed apart: 20,794 days after the epoch


def _event(event_id: str, timestamp_us: int) -> Event:
    return Event(event_id=event_id, user_id="u1", event_type="page_view", timestamp_us=timestamp_us, source="t")


def test_midnight_of_a_date():
    assert midnight_us(DAY) == MIDNIGHT == 20_794 * DAY_US


@pytest.mark.parametrize("as_of, latest_us, expected", [
    (None, MIDNIGHT + 1, MIDNIGHT + DAY_US),  # just after midnight: that day is the last one
    (None, MIDNIGHT - 1, MIDNIGHT),  # the last microsecond of the day before
    (None, MIDNIGHT, MIDNIGHT + DAY_US),  # an event at midnight starts its day
    (dt.date(2026, 1, 1), MIDNIGHT + 1, midnight_us(dt.date(2026, 1, 1))),  # given: the events do not matter
])
def test_as_of(as_of, latest_us, expected):
    with TestPipeline() as p:
        events = p | beam.Create([_event("a", MIDNIGHT - 5 * DAY_US), _event("b", latest_us)])
        assert_that(events | AsOfMicros(as_of), equal_to([expected]))


def test_the_latest_event_time_combines_partial_results():
    fn = _LatestEventTime()
    left = fn.add_input(fn.create_accumulator(), _event("a", 5))
    right = fn.add_input(fn.add_input(fn.create_accumulator(), _event("b", 9)), _event("c", 7))
    assert fn.extract_output(fn.merge_accumulators([left, fn.create_accumulator(), right])) == 9
    assert fn.extract_output(fn.merge_accumulators([fn.create_accumulator()])) is None
