"""Deduplication on `event_id`, the contract's dedupe key.

Duplicates are counted, not dead-lettered: the run summary's `duplicates` is
`dedupe.in - dedupe.out`.

* Bounded input: a `CombinePerKey` keeps one canonical event per id, the one
  with the earliest (event time, source), so the result does not depend on the
  order records arrive in. Combiner lifting makes this cheap.
* Unbounded input: Beam's `DeduplicatePerKey` keeps the first event per id and
  remembers the id for `memory` of event time.
"""

from __future__ import annotations

import datetime as dt

import apache_beam as beam
from apache_beam.transforms.deduplicate import DeduplicatePerKey
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration

from transforms.event_contract import Event
from transforms.outcomes import counter

DEDUPE_IN = "dedupe.in"
DEDUPE_OUT = "dedupe.out"


class _EarliestEvent(beam.CombineFn):
    """Keeps the event with the smallest (timestamp_us, source); constant-size accumulator."""

    def create_accumulator(self):
        return None

    def add_input(self, best, event):
        return event if best is None or (event.timestamp_us, event.source) < (best.timestamp_us, best.source) else best

    def merge_accumulators(self, accumulators):
        best = None
        for candidate in accumulators:
            if candidate is not None:
                best = self.add_input(best, candidate)
        return best

    def extract_output(self, best):
        return best


def _count(name: str):
    metric = counter(name)

    def inc(element):
        metric.inc()
        return element

    return inc


class DedupeEvents(beam.PTransform):
    """Drops repeated `event_id`s and restores event-time timestamps.

    Args:
      memory: for unbounded input, how long (event time) an id is remembered.
    """

    def __init__(self, memory: dt.timedelta = dt.timedelta(days=3)):
        super().__init__()
        self._memory = memory

    def expand(self, events: beam.PCollection[Event]) -> beam.PCollection[Event]:
        keyed = (
            events
            | "CountIn" >> beam.Map(_count(DEDUPE_IN))
            | "KeyByEventId" >> beam.Map(lambda event: (event.event_id, event))
        )
        if events.is_bounded:
            unique = (
                keyed
                | "KeepEarliest" >> beam.CombinePerKey(_EarliestEvent())
                | "DropKey" >> beam.Values()
                | "RestoreEventTime" >> beam.Map(lambda event: TimestampedValue(event, event.timestamp_us / 1e6))
            )
        else:
            unique = (
                keyed
                | "KeepFirst" >> DeduplicatePerKey(event_time_duration=Duration(micros=int(self._memory.total_seconds() * 1e6)))
                | "DropKey" >> beam.Values()
            )
        return unique | "CountOut" >> beam.Map(_count(DEDUPE_OUT))
