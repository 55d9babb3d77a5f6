"""Profiles of bounded input: one grouping per user, the user's history in time order, snapshots as of given dates.

Every known user is scored as of every requested date (the as-of date and, with
``history_days``, the midnights before it), silent users included: a user's record as of
a date reads the days before it only, so recency and tenure keep growing while the user
is away. A user is known from their first event on; dates before it produce nothing.

The grouping doubles as the dedupe: duplicates share their user (the contract's dedupe key
is (user, event_id)), so each user's copies are dropped here (`ingest.dedupe.unique_events`,
counted as `DedupeEvents` counts) with no separate shuffle of every event on its id.
Events cross the grouping packed as bytes without their user id (`ingest.event_coder`).
"""

from __future__ import annotations

from typing import Iterable

import apache_beam as beam
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from transforms.contracts.events import Event
from transforms.contracts.outcomes import counter
from transforms.features.activity import US_PER_DAY
from transforms.features.profile import Profile, ProfileRules
from transforms.ingest.dedupe import DEDUPE_IN, DEDUPE_OUT, unique_events
from transforms.ingest.event_coder import key_by_user, unpack_for_user

DAILY = "daily"


def scoring_dates(as_of_us: int, history_days: int) -> list[int]:
    """The as-of time and the `history_days` midnights before it, oldest first (UTC microseconds)."""
    return [as_of_us - back * US_PER_DAY for back in range(history_days, -1, -1)]


class ScoreUserHistory(beam.DoFn):
    """``(user_key, packed events)`` -> the user's feature record as of each scoring date.

    Args:
        rules: how profiles are built and scored.
        history_days: also score the user as of this many midnights before the as-of time.
        deduplicate: the events may hold duplicates; keep each event's canonical copy.
    """

    def __init__(self, rules: ProfileRules, history_days: int = 0, deduplicate: bool = True):
        self._rules = rules
        self._history_days = history_days
        self._deduplicate = deduplicate

    def setup(self):
        self._dedupe_in = counter(DEDUPE_IN)
        self._dedupe_out = counter(DEDUPE_OUT)

    def process(self, element: tuple[str, Iterable[bytes]], window=beam.DoFn.WindowParam, as_of_us: int = 0):
        user_key, packed = element
        events = [unpack_for_user(user_key, p) for p in packed]
        if self._deduplicate:
            self._dedupe_in.inc(len(events))
            events = unique_events(events)
            self._dedupe_out.inc(len(events))
        events.sort(key=lambda e: (e.timestamp_us, e.source, e.event_id))
        rules, profile, i = self._rules, Profile(), 0
        windows = (window,)
        for date_us in scoring_dates(as_of_us, self._history_days):
            while i < len(events) and events[i].timestamp_us < date_us:
                rules.add(profile, events[i])
                i += 1
            if not profile.days and profile.settled.events == 0:
                continue
            rules.fold(profile, -(-date_us // US_PER_DAY) - 1)
            record = rules.snapshot(user_key, profile, date_us, DAILY)
            if record is not None:
                # Built directly: a TimestampedValue would make the runner assign a new
                # window object to each record.
                yield WindowedValue(record, Timestamp(micros=date_us - 1), windows)


class ProfilesOfBoundedInput(beam.PTransform):
    """Bounded events -> feature records as of the as-of date (and the history before it).

    Args:
        rules: how profiles are built and scored.
        as_of_us: singleton PCollection of the as-of time (UTC microseconds, a midnight).
        history_days: midnights before the as-of time to score too.
        deduplicate: drop duplicates inside the grouping.
    """

    def __init__(self, rules: ProfileRules, as_of_us: beam.PCollection, history_days: int = 0,
                 deduplicate: bool = True):
        super().__init__()
        self._fn = ScoreUserHistory(rules, history_days, deduplicate)
        self._as_of_us = as_of_us

    def expand(self, events: beam.PCollection[Event]) -> beam.PCollection[dict]:
        return (
            events
            | "KeyByUser" >> beam.Map(key_by_user).with_output_types(tuple[str, bytes])
            | "GroupByUser" >> beam.GroupByKey()
            | "ScoreHistory" >> beam.ParDo(self._fn, as_of_us=beam.pvalue.AsSingleton(self._as_of_us))
        )

