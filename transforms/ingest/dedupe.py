"""Deduplication: one event per (`user_id`, `event_id`), the contract's dedupe key per user.

A duplicate is a second delivery of the same event, so it carries the same user. Two
records with one `event_id` but different users are two users' events (a producer
that reuses ids); each user's history keeps its own, rather than dedupe picking one
user at random. Keying by user also lets a per-user grouping dedupe for free
(`unique_events`, used by the per-user feature plan), with the same result as
`DedupeEvents`.

Duplicates are counted, not dead-lettered: the run summary's `duplicates` is
`dedupe.in - dedupe.out`.

`DedupeEvents` is for bounded input: a `CombinePerKey` keeps one canonical event per key,
the one with the earliest (event time, source), so the result does not depend on the
order records arrive in. Combiner lifting makes this cheap. The streaming job dedupes in
its per-user state (`transforms.features.streaming_profiles`), which it keeps anyway.
"""

from __future__ import annotations

from typing import Iterable

import apache_beam as beam
from apache_beam.transforms.window import TimestampedValue

from transforms.contracts.events import Event
from transforms.contracts.outcomes import counter

DEDUPE_IN = "dedupe.in"
DEDUPE_OUT = "dedupe.out"


def dedupe_key(event: Event) -> tuple[str, str]:
    return event.user_id, event.event_id


def _canonical(best, event: Event) -> Event:
    """Of two copies, the one with the smaller (timestamp_us, source)."""
    return event if best is None or (event.timestamp_us, event.source) < (best.timestamp_us, best.source) else best


def unique_events(events: Iterable[Event]) -> list[Event]:
    """The canonical copy of each event among `events` (as `DedupeEvents` on bounded input)."""
    best: dict[tuple[str, str], Event] = {}
    for event in events:
        key = dedupe_key(event)
        best[key] = _canonical(best.get(key), event)
    return list(best.values())


class _EarliestEvent(beam.CombineFn):
    """Keeps the canonical copy, the smallest (timestamp_us, source); constant-size accumulator."""

    def create_accumulator(self):
        return None

    def add_input(self, best, event):
        return _canonical(best, event)

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
    """Bounded input: drops repeated (`user_id`, `event_id`)s and restores event-time timestamps."""

    def expand(self, events: beam.PCollection[Event]) -> beam.PCollection[Event]:
        if not events.is_bounded:
            raise ValueError("DedupeEvents takes bounded input; the streaming job dedupes in its per-user state")
        return (
            events
            | "CountIn" >> beam.Map(_count(DEDUPE_IN))
            | "KeyByUserAndEventId" >> beam.Map(lambda event: (dedupe_key(event), event))
            | "KeepEarliest" >> beam.CombinePerKey(_EarliestEvent())
            | "DropKey" >> beam.Values()
            | "RestoreEventTime" >> beam.Map(lambda event: TimestampedValue(event, event.timestamp_us / 1e6))
            | "CountOut" >> beam.Map(_count(DEDUPE_OUT))
        )
