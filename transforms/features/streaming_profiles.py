"""Profiles of unbounded input: one stateful step per user, updated on events and re-scored on a timer.

An event-time window exists only where there are events, so it cannot see a customer who
stopped coming. Here each user's `Profile` lives in Beam state and is scored

* on their events: arriving events are buffered (a bag of packed events, cheap to append
  to) and applied together when a processing-time timer fires, ``early_firing`` after the
  first of them; the record is as of 1 µs after the latest event applied, so it reads
  every event applied (``scoring`` = ``event``);
* on a daily event-time timer: when the watermark passes each midnight, the user is
  re-scored as of it (``scoring`` = ``daily``), whether or not they came back, so recency
  and tenure grow and P(alive) falls while they are silent. Re-scoring stops once they
  have been silent ``max_silent`` (the rule the batch job applies too:
  `profile.silent_too_long`), or when the watermark runs a day past the wall clock (a
  drain), and starts again with the user's next event.

A job started from a profile snapshot (`transforms.features.snapshots`) gets each user's
profile as a seed, flattened into this step's input: the seed becomes the user's state
and emits a ``seed`` record (for the change step, not written). A user's updates wait until
the watermark passes the snapshot's midnight, when every seed has been read, and the
midnights up to it are not re-scored: the batch job scored them.

A late event, one whose midnight the watermark has already passed, moves the daily timer
back to that midnight: it fires at once and re-scores every midnight since, each record a
correction of one already emitted (counted as ``corrections``).

The daily timer is also the profile's clock: once it fired at midnight ``M``, the
watermark has passed ``M``, so an event older than ``M - allowed_lateness`` is too late:
it is dead-lettered (`ErrorCode.TOO_LATE`), because its day may be folded away and its id
forgotten by the dedupe. Duplicates of a (user, event_id) seen within the lateness are
dropped and counted like `ingest.dedupe` counts them.

Each flush also emits the number of unique events it applied and of duplicates it dropped,
as audit tallies: an event still waiting in a user's bag is in neither, which is how the
local drain knows every flush has fired (`devtools.live`).
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Iterable, NamedTuple, Optional

import apache_beam as beam
from apache_beam.coders import BooleanCoder, BytesCoder, PickleCoder, VarIntCoder
from apache_beam.transforms import userstate
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.utils.timestamp import Duration, Timestamp

from transforms.audit import AUDIT_CORRECTIONS, AUDIT_DUPLICATES, AUDIT_UNIQUE
from transforms.contracts.events import Event
from transforms.contracts.outcomes import DeadLetter, ErrorCode, Stage, counter, dead_letter_counter
from transforms.features.activity import US_PER_DAY
from transforms.features.profile import Outcome, Profile, ProfileRules, silent_too_long
from transforms.features.snapshots import SEED_MARK, decode
from transforms.ingest.dedupe import DEDUPE_IN, DEDUPE_OUT
from transforms.ingest.event_coder import key_by_user, unpack_for_user

EVENT = "event"
DAILY = "daily"
# The record of a seeded profile as of its snapshot: it tells the change step where the
# user stood (so their first change is a real one) and is not written as a row.
SEED = "seed"


def aligned(at: Timestamp, grid: Duration = Duration(seconds=1)) -> Timestamp:
    """`at` rounded up to the next multiple of `grid` (processing-time timers fire together)."""
    step = grid.micros
    return Timestamp(micros=-(-at.micros // step) * step)


class ProfileTag:
    """Outputs of `UpdateProfileFn` besides the feature records."""

    TOO_LATE = "too_late"
    TALLIES = "tallies"


def late_dead_letter(event: Event, detail: str) -> DeadLetter:
    """A too-late event as a dead letter carrying the event's fields as JSON."""
    import json

    return DeadLetter.of(json.dumps(event._asdict(), sort_keys=True), ErrorCode.TOO_LATE, detail, event.source,
                         Stage.WINDOW)


class UpdateProfileFn(beam.DoFn):
    """``(user_key, packed event)`` -> feature records; too-late dead letters and tallies tagged.

    Args:
        rules: how profiles are built and scored.
        early_firing: processing time between a user's first buffered event and its update.
        rescore_every: event time between re-scorings (whole days).
        max_silent: stop re-scoring a user silent this long (event time).
        seeded_as_of_us: the midnight of the snapshot the job starts from (None: none):
            seeds (``(user_key, SEED_MARK + snapshot state)``) are applied before any event,
            and midnights up to it are not re-scored (the batch job scored them).
    """

    PENDING = userstate.BagStateSpec("pending", BytesCoder())
    PROFILE = userstate.ReadModifyWriteStateSpec("profile", PickleCoder())
    FLUSH_SET = userstate.ReadModifyWriteStateSpec("flush_set", BooleanCoder())
    RESCORE_AT = userstate.ReadModifyWriteStateSpec("rescore_at_us", VarIntCoder())
    FLUSH = userstate.TimerSpec("flush", TimeDomain.REAL_TIME)
    RESCORE = userstate.TimerSpec("rescore", TimeDomain.WATERMARK)
    SCORED_THROUGH = userstate.ReadModifyWriteStateSpec("scored_through_us", VarIntCoder())
    READY = userstate.ReadModifyWriteStateSpec("ready", BooleanCoder())
    SEEDS_IN = userstate.TimerSpec("seeds_in", TimeDomain.WATERMARK)

    def __init__(self, rules: ProfileRules, early_firing: dt.timedelta, rescore_every: dt.timedelta,
                 max_silent: dt.timedelta, seeded_as_of_us: Optional[int] = None):
        if rescore_every < dt.timedelta(days=1) or rescore_every % dt.timedelta(days=1):
            raise ValueError(f"rescore_every must be whole days, got {rescore_every}")
        self._rules = rules
        self._early_s = early_firing.total_seconds()
        self._rescore_us = rescore_every // dt.timedelta(microseconds=1)
        self._max_silent = max_silent
        self._lateness_us = rules.allowed_lateness // dt.timedelta(microseconds=1)
        self._seeded_as_of_us = seeded_as_of_us
        # The first midnight this job scores: the one after the snapshot's.
        self._first_midnight_us = -(2 ** 62) if seeded_as_of_us is None else seeded_as_of_us + self._rescore_us

    def setup(self):
        self._dedupe_in = counter(DEDUPE_IN)
        self._dedupe_out = counter(DEDUPE_OUT)
        self._too_late = dead_letter_counter(ErrorCode.TOO_LATE)
        self._corrected = counter(AUDIT_CORRECTIONS)

    def process(self, element: tuple[str, bytes],
                pending=beam.DoFn.StateParam(PENDING), flush_set=beam.DoFn.StateParam(FLUSH_SET),
                rescore_at=beam.DoFn.StateParam(RESCORE_AT), flush=beam.DoFn.TimerParam(FLUSH),
                rescore=beam.DoFn.TimerParam(RESCORE), profile_state=beam.DoFn.StateParam(PROFILE),
                scored_through=beam.DoFn.StateParam(SCORED_THROUGH)) -> Iterable:
        key, packed = element
        if packed.startswith(SEED_MARK):
            return self._seed(key, packed, profile_state, rescore_at, rescore, scored_through)
        pending.add(packed)
        if not flush_set.read():
            # Processing-time timers take absolute times: the wall clock plus the delay,
            # rounded up to a whole second, so that the users whose events arrived within
            # the same second flush together (one timer bundle a second, not one per
            # arrival: the local runner reads no input in a round where timers fired).
            flush.set(aligned(Timestamp.now() + Duration(seconds=self._early_s)))
            flush_set.write(True)
        # The daily timer is due at the first midnight after any of the user's events not yet
        # scored. A late event (its midnight passed) moves it back: it fires at once and
        # re-scores every midnight since, each a correction of a record already emitted.
        # (The event's own time: the element's may be a message attribute's.)
        event_us = unpack_for_user(element[0], packed).timestamp_us
        next_us = max((event_us // US_PER_DAY + 1) * US_PER_DAY, self._first_midnight_us)
        due_us = rescore_at.read()
        if due_us is None or next_us < due_us:
            # A too-late event (behind the last midnight scored by more than the lateness:
            # the same rule as `ProfileRules.add`) changes nothing.
            scored_us = scored_through.read()
            if scored_us is None or event_us >= scored_us - self._lateness_us:
                rescore.set(Timestamp(micros=next_us))
                rescore_at.write(next_us)
        return ()

    def _apply(self, user_key: str, profile: Profile, pending,
               before_us: Optional[int] = None) -> tuple[list, int]:
        """Applies the buffered events (those before `before_us`; the rest stay buffered) to
        `profile`; returns the dead letters and audit tallies to emit, and how many were added."""
        buffered = [(unpack_for_user(user_key, packed), packed) for packed in pending.read()]
        pending.clear()
        if before_us is not None:
            for event, packed in buffered:
                if event.timestamp_us >= before_us:
                    pending.add(packed)
            buffered = [(event, packed) for event, packed in buffered if event.timestamp_us < before_us]
        events = sorted((event for event, _ in buffered), key=lambda e: (e.timestamp_us, e.source, e.event_id))
        outputs, unique, added, duplicates = [], 0, 0, 0
        for event in events:
            self._dedupe_in.inc()
            outcome = self._rules.add(profile, event, check=True)
            if outcome == Outcome.DUPLICATE:
                duplicates += 1
                continue
            self._dedupe_out.inc()
            unique += 1
            if outcome == Outcome.TOO_LATE:
                self._too_late.inc()
                clock = dt.date(1970, 1, 1) + dt.timedelta(days=profile.watermark_day)
                outputs.append(beam.pvalue.TaggedOutput(ProfileTag.TOO_LATE, late_dead_letter(
                    event, f"event time is more than {self._rules.allowed_lateness} before {clock} 00:00 UTC, "
                           "which the event-time clock has passed")))
            else:
                added += 1
        if unique:
            outputs.append(beam.pvalue.TaggedOutput(ProfileTag.TALLIES, (AUDIT_UNIQUE, unique)))
        if duplicates:
            outputs.append(beam.pvalue.TaggedOutput(ProfileTag.TALLIES, (AUDIT_DUPLICATES, duplicates)))
        return outputs, added

    def _seed(self, key: str, packed: bytes, profile_state, rescore_at, rescore, scored_through) -> list:
        """Starts the user's state from their snapshot; returns the seed record."""
        profile = decode(packed[len(SEED_MARK):])
        profile_state.write(profile)
        as_of_us = self._seeded_as_of_us
        scored_through.write(as_of_us)
        last = profile.last_event_us
        if last is not None and not silent_too_long(self._first_midnight_us, last, self._max_silent):
            rescore.set(Timestamp(micros=self._first_midnight_us))
            rescore_at.write(self._first_midnight_us)
        record = self._rules.snapshot(key, profile, as_of_us, SEED)
        return [] if record is None else [record]

    @userstate.on_timer(FLUSH)
    def on_flush(self, key=beam.DoFn.KeyParam, pending=beam.DoFn.StateParam(PENDING),
                 profile_state=beam.DoFn.StateParam(PROFILE), flush_set=beam.DoFn.StateParam(FLUSH_SET),
                 ready=beam.DoFn.StateParam(READY), seeds_in=beam.DoFn.TimerParam(SEEDS_IN)):
        if self._seeded_as_of_us is not None and not ready.read():
            # Until the watermark passes the snapshot's midnight, the user's seed may still
            # be on its way (the snapshot read holds the watermark back until it is read).
            seeds_in.set(Timestamp(micros=self._seeded_as_of_us))
            return
        yield from self._flush(key, pending, profile_state, flush_set)

    @userstate.on_timer(SEEDS_IN)
    def on_seeds_in(self, key=beam.DoFn.KeyParam, pending=beam.DoFn.StateParam(PENDING),
                    profile_state=beam.DoFn.StateParam(PROFILE), flush_set=beam.DoFn.StateParam(FLUSH_SET),
                    ready=beam.DoFn.StateParam(READY)):
        ready.write(True)
        yield from self._flush(key, pending, profile_state, flush_set)

    def _flush(self, key: str, pending, profile_state, flush_set) -> Iterable:
        """Applies the buffered events; the record as of just after the latest one."""
        flush_set.clear()
        profile = profile_state.read() or Profile()
        outputs, added = self._apply(key, profile, pending)
        yield from outputs
        profile_state.write(profile)
        if added:
            # As of just after the latest event: a record reads the events before its as-of time.
            record = self._rules.snapshot(key, profile, profile.last_event_us + 1, EVENT)
            if record is not None:
                yield record

    @userstate.on_timer(RESCORE)
    def on_rescore(self, key=beam.DoFn.KeyParam, timestamp=beam.DoFn.TimestampParam,
                   pending=beam.DoFn.StateParam(PENDING), profile_state=beam.DoFn.StateParam(PROFILE),
                   rescore_at=beam.DoFn.StateParam(RESCORE_AT), rescore=beam.DoFn.TimerParam(RESCORE),
                   scored_through=beam.DoFn.StateParam(SCORED_THROUGH)):
        as_of_us = timestamp.micros
        profile = profile_state.read() or Profile()
        # Events at or after the midnight wait for their own update (the flush timer is set).
        outputs, _ = self._apply(key, profile, pending, before_us=as_of_us)
        yield from outputs
        correction = profile.watermark_day is not None and as_of_us // US_PER_DAY <= profile.watermark_day
        # A timer moved back by a late event fires behind the clock, which never goes back.
        profile.watermark_day = max(as_of_us // US_PER_DAY, profile.watermark_day or 0)
        scored_through.write(profile.watermark_day * US_PER_DAY)
        self._rules.fold(profile, profile.watermark_day - 1)
        profile_state.write(profile)
        record = self._rules.snapshot(key, profile, as_of_us, DAILY)
        if record is not None and not silent_too_long(as_of_us, record["last_event_us"], self._max_silent):
            if correction:
                self._corrected.inc()
                yield beam.pvalue.TaggedOutput(ProfileTag.TALLIES, (AUDIT_CORRECTIONS, 1))
            yield record
        last, next_us = profile.last_event_us, as_of_us + self._rescore_us
        # The one use of the wall clock: events are never more than a day ahead of it (the
        # validation's future skew), so a watermark a day past it is a drain (or the end
        # of a test) sending it to the end of time, not data: re-scoring every user for
        # every day until then would invent days; their next event starts it again. A
        # replay of past data never comes near it.
        ahead = next_us > (time.time_ns() // 1000) + US_PER_DAY
        if last is not None and not silent_too_long(next_us, last, self._max_silent) and not ahead:
            rescore.set(Timestamp(micros=next_us))
            rescore_at.write(next_us)
        else:
            rescore_at.clear()


class StreamingProfiles(NamedTuple):
    """Outputs of `MaintainProfiles`."""

    features: beam.PCollection  # feature records
    too_late: beam.PCollection  # DeadLetter
    tallies: beam.PCollection  # (name, count) for the audit


class MaintainProfiles(beam.PTransform):
    """Unbounded events -> feature records on events and on the daily re-scoring (see the module docstring).

    Args:
        seeds: ``(user_key, SEED_MARK + snapshot state)`` of the snapshot the job starts
            from (`transforms.features.snapshots.ReadSeeds`), flattened into the same
            stateful step; None starts with no state.
        seeded_as_of_us: the snapshot's midnight (required with `seeds`).
    """

    def __init__(self, rules: ProfileRules, early_firing: dt.timedelta, rescore_every: dt.timedelta,
                 max_silent: dt.timedelta, seeds: Optional[beam.PCollection] = None,
                 seeded_as_of_us: Optional[int] = None):
        super().__init__()
        if (seeds is None) != (seeded_as_of_us is None):
            raise ValueError("seeds and seeded_as_of_us go together")
        self._fn = UpdateProfileFn(rules, early_firing, rescore_every, max_silent, seeded_as_of_us)
        self._seeds = seeds

    def expand(self, events: beam.PCollection[Event]):  # -> StreamingProfiles (not annotated: Beam would take it for an element type)
        keyed = events | "KeyByUser" >> beam.Map(key_by_user).with_output_types(tuple[str, bytes])
        if self._seeds is not None:
            keyed = (keyed, self._seeds) | "WithSeeds" >> beam.Flatten()
        updated = keyed | "UpdateProfiles" >> beam.ParDo(self._fn).with_outputs(
            ProfileTag.TOO_LATE, ProfileTag.TALLIES, main="features")
        return StreamingProfiles(updated.features, updated[ProfileTag.TOO_LATE], updated[ProfileTag.TALLIES])
