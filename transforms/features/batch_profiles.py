"""Profiles of bounded input: one grouping per user, the user's history in time order, snapshots as of given dates.

Every known user is scored as of every requested date (the as-of date and, with
``history_days``, the midnights before it), silent users included: a user's record as of
a date reads the days before it only, so recency and tenure keep growing while the user
is away. A user is known from their first event on; dates before it produce nothing.

The grouping doubles as the dedupe: duplicates share their user (the contract's dedupe key
is (user, event_id)), so each user's copies are dropped here (`ingest.dedupe.unique_events`,
counted as `DedupeEvents` counts) with no separate shuffle of every event on its id.
Events cross the grouping packed as bytes without their user id (`ingest.event_coder`).

With ``snapshot``, each user's profile as of the as-of time is also output (tag
``PROFILE_SNAPSHOT``): the state a streaming job would hold had it read the same events,
to start one from (`transforms.features.snapshots`).
"""

from __future__ import annotations

import datetime as dt
from typing import Iterable, NamedTuple, Optional

import apache_beam as beam
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from transforms.contracts.events import Event
from transforms.contracts.outcomes import counter
from transforms.features.activity import US_PER_DAY
from transforms.features.profile import Profile, ProfileRules, silent_too_long
from transforms.ingest.dedupe import DEDUPE_IN, DEDUPE_OUT, unique_events
from transforms.ingest.event_coder import key_by_user, unpack_for_user

DAILY = "daily"
PROFILE_SNAPSHOT = "profile_snapshot"


def scoring_dates(as_of_us: int, history_days: int) -> list[int]:
    """The as-of time and the `history_days` midnights before it, oldest first (UTC microseconds)."""
    return [as_of_us - back * US_PER_DAY for back in range(history_days, -1, -1)]


class ScoreUserHistory(beam.DoFn):
    """``(user_key, packed events)`` -> the user's feature record as of each scoring date.

    Args:
        rules: how profiles are built and scored.
        history_days: also score the user as of this many midnights before the as-of time.
        deduplicate: the events may hold duplicates; keep each event's canonical copy.
        snapshot: also output ``(user_key, Profile)`` as of the as-of time, tagged
            ``PROFILE_SNAPSHOT``, as a streaming job's state would be at that midnight.
        max_silent: a user silent this long before a date is not scored as of it.
    """

    def __init__(self, rules: ProfileRules, history_days: int = 0, deduplicate: bool = True,
                 snapshot: bool = False, max_silent: dt.timedelta = dt.timedelta(days=730)):
        self._rules = rules
        self._max_silent = max_silent
        self._history_days = history_days
        self._deduplicate = deduplicate
        self._snapshot = snapshot

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
            if record is not None and not silent_too_long(date_us, record["last_event_us"], self._max_silent):
                # Built directly: a TimestampedValue would make the runner assign a new
                # window object to each record.
                yield WindowedValue(record, Timestamp(micros=date_us - 1), windows)
        if self._snapshot and (profile.days or profile.settled.events):
            yield beam.pvalue.TaggedOutput(PROFILE_SNAPSHOT, (user_key, self.as_streaming_state(
                profile, events[:i], as_of_us)))

    def as_streaming_state(self, profile: Profile, added: list, as_of_us: int) -> Profile:
        """`profile` (of the events `added`, before `as_of_us`) completed with what the
        streaming step keeps besides: its clock, and the ids its dedupe remembers."""
        rules, today = self._rules, as_of_us // US_PER_DAY
        profile.watermark_day = today
        for event in added:
            profile.seen[event.event_id] = event.timestamp_us // US_PER_DAY
        rules.fold(profile, today - 1)  # forgets the ids the streaming step would have forgotten
        return profile


class ProfilesOfBoundedInput(beam.PTransform):
    """Bounded events -> feature records as of the as-of date (and the history before it).

    Args:
        rules: how profiles are built and scored.
        as_of_us: singleton PCollection of the as-of time (UTC microseconds, a midnight).
        history_days: midnights before the as-of time to score too.
        deduplicate: drop duplicates inside the grouping.
        snapshot: also output every user's profile as of the as-of time.
        max_silent: a user silent this long before a date is not scored as of it.
    """

    def __init__(self, rules: ProfileRules, as_of_us: beam.PCollection, history_days: int = 0,
                 deduplicate: bool = True, snapshot: bool = False, max_silent: dt.timedelta = dt.timedelta(days=730)):
        super().__init__()
        self._fn = ScoreUserHistory(rules, history_days, deduplicate, snapshot, max_silent)
        self._as_of_us = as_of_us

    def expand(self, events: beam.PCollection[Event]):  # -> BoundedProfiles (a NamedTuple, not an element type)
        scored = (
            events
            | "KeyByUser" >> beam.Map(key_by_user).with_output_types(tuple[str, bytes])
            | "GroupByUser" >> beam.GroupByKey()
            | "ScoreHistory" >> beam.ParDo(self._fn, as_of_us=beam.pvalue.AsSingleton(self._as_of_us)).with_outputs(
                PROFILE_SNAPSHOT, main="features")
        )
        return BoundedProfiles(scored.features, scored[PROFILE_SNAPSHOT])


class BoundedProfiles(NamedTuple):
    """Outputs of `ProfilesOfBoundedInput`."""

    features: beam.PCollection  # feature records
    profiles: Optional[beam.PCollection] = None  # (user_key, Profile) as of the as-of time (empty without snapshot)

