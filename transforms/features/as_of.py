"""The batch notion of "now": the time a bounded run scores its users as of.

A streaming job scores users as the event-time clock passes each midnight; a bounded
run's clock jumps to the end of time, so it is told when "now" is: ``--as_of`` (a UTC
date, at midnight), or by default the midnight (UTC) after the latest event, so that
the last day of data is a whole day and nothing after the data is invented.
"""

from __future__ import annotations

import datetime as dt
from typing import Optional

import apache_beam as beam

from transforms.contracts.events import Event

DAY_US = 86_400_000_000


def midnight_us(day: dt.date) -> int:
    return (day - dt.date(1970, 1, 1)).days * DAY_US


class AsOfMicros(beam.PTransform):
    """A one-element PCollection: `as_of` at midnight UTC, or the midnight after the latest event.

    The batch job passes its events before dedupe (dedupe happens inside the per-user
    grouping), so a duplicate counts here: only a copy stamped later than every other
    event, and than its own original, could move the default, and re-deliveries of an
    event carry its time.
    """

    def __init__(self, as_of: Optional[dt.date] = None):
        super().__init__()
        self._as_of = as_of

    def expand(self, events: beam.PCollection[Event]) -> beam.PCollection[int]:
        if self._as_of is not None:
            return events.pipeline | "Given" >> beam.Create([midnight_us(self._as_of)])
        return (
            events
            | "LatestEventTime" >> beam.CombineGlobally(_LatestEventTime()).without_defaults()
            | "NextMidnight" >> beam.Map(lambda us: (us // DAY_US + 1) * DAY_US)
        )


class _LatestEventTime(beam.CombineFn):
    """Events -> the largest `timestamp_us` (reads the events directly: no extra step per event)."""

    def create_accumulator(self) -> Optional[int]:
        return None

    def add_input(self, latest: Optional[int], event: Event) -> int:
        t = event.timestamp_us
        return t if latest is None or t > latest else latest

    def merge_accumulators(self, accumulators) -> Optional[int]:
        found = [a for a in accumulators if a is not None]
        return max(found) if found else None

    def extract_output(self, latest: Optional[int]) -> Optional[int]:
        return latest
