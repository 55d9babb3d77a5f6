"""Per-user profiles and their feature records, for bounded and unbounded input alike.

`ComputeProfiles` turns validated, pseudonymised, consent-filtered events (duplicates may
still be in: the contract's dedupe happens here, inside the per-user step) into feature
records, each a user's profile as of a scoring time (`transforms.features.profile`):

* bounded input (a batch pipeline): one grouping per user, the user's whole history in
  time order, records as of the as-of date and the history dates before it
  (`batch_profiles`);
* unbounded input: one stateful step per user, records on the user's events (every
  ``early_firing``) and at every midnight of event time, silent users included
  (`streaming_profiles`).

Both build the same `Profile` with the same `ProfileRules`, so the same events give the
same records (`tests/transforms/features/test_compute.py` runs both). Definitions of every
feature: `transforms/features/FEATURES.md`.

Run on DirectRunner::

    with beam.Pipeline() as p:
        events = p | beam.Create(evs) | beam.Map(lambda e: TimestampedValue(e, e.timestamp_us / 1e6))
        as_of = p | beam.Create([midnight_us])
        out = events | ComputeProfiles(ProfileRules(), as_of_us=as_of)
        out.features | beam.Map(print)
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple, Optional

import apache_beam as beam
from apache_beam.options.pipeline_options import StandardOptions

from transforms.contracts.events import Event
from transforms.contracts.outcomes import DeadLetter
from transforms.features.batch_profiles import ProfilesOfBoundedInput
from transforms.features.profile import ProfileRules
from transforms.features.streaming_profiles import MaintainProfiles


class UserFeatures(NamedTuple):
    """Outputs of `ComputeProfiles`."""

    features: beam.PCollection  # feature record dicts (keys: `profile.ProfileRules.record`)
    too_late: beam.PCollection  # DeadLetter of the events beyond the allowed lateness (streaming)
    tallies: beam.PCollection  # (name, count) audit tallies of the per-user step (streaming)
    profiles: Optional[beam.PCollection] = None  # (user_key, Profile) as of the as-of time (batch, with snapshot)


class ComputeProfiles(beam.PTransform):
    """Events -> feature records of per-user profiles (see the module docstring).

    Args:
        rules: how profiles are built and scored (session gap, lateness, currency).
        as_of_us: bounded input: singleton PCollection of the as-of time (UTC microseconds,
            a midnight; `as_of.AsOfMicros`).
        history_days: bounded input: also score as of this many midnights before it.
        early_firing: unbounded input: processing time from a user's event to their update.
        rescore_every: unbounded input: event time between re-scorings of every user (whole days).
        max_silent: both: a user silent this long before a midnight is not scored as of it.
        snapshot: bounded input: also output every user's profile as of the as-of time.
        seeds: unbounded input: the snapshot to start from (`snapshots.ReadSeeds`).
        seeded_as_of_us: unbounded input: the snapshot's midnight.
    """

    def __init__(self, rules: ProfileRules, *, as_of_us: Optional[beam.PCollection] = None, history_days: int = 0,
                 early_firing: dt.timedelta = dt.timedelta(seconds=60),
                 rescore_every: dt.timedelta = dt.timedelta(days=1),
                 max_silent: dt.timedelta = dt.timedelta(days=730), snapshot: bool = False,
                 seeds: Optional[beam.PCollection] = None, seeded_as_of_us: Optional[int] = None):
        super().__init__()
        if history_days < 0:
            raise ValueError("history_days must be >= 0")
        self.rules = rules
        self.as_of_us = as_of_us
        self.history_days = history_days
        self.early_firing = early_firing
        self.rescore_every = rescore_every
        self.max_silent = max_silent
        self.snapshot = snapshot
        self.seeds = seeds
        self.seeded_as_of_us = seeded_as_of_us

    @staticmethod
    def is_unbounded(events: beam.PCollection) -> bool:
        options = events.pipeline.options
        return bool(options and options.view_as(StandardOptions).streaming) or not events.is_bounded

    def expand(self, events: beam.PCollection[Event]):  # -> UserFeatures (not annotated: Beam would take it for an element type)
        if self.is_unbounded(events):
            out = events | "Streaming" >> MaintainProfiles(self.rules, self.early_firing, self.rescore_every,
                                                          self.max_silent, self.seeds, self.seeded_as_of_us)
            return UserFeatures(out.features, out.too_late, out.tallies)
        if self.as_of_us is None:
            raise ValueError("bounded input needs as_of_us (the scoring time)")
        bounded = events | "Batch" >> ProfilesOfBoundedInput(self.rules, self.as_of_us, self.history_days,
                                                             snapshot=self.snapshot, max_silent=self.max_silent)
        nothing = events.pipeline | "NoTooLate" >> beam.Create([]).with_output_types(DeadLetter)
        no_tallies = events.pipeline | "NoTallies" >> beam.Create([]).with_output_types(tuple[str, int])
        return UserFeatures(bounded.features, nothing, no_tallies, bounded.profiles if self.snapshot else None)
