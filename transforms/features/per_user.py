"""The bounded-input plan of `ComputeUserFeatures`: one grouping per user, windows in one pass.

On bounded input every window fires exactly once, on time, so the per-key trigger
machinery that the windowed plan needs for streaming (Sessions, FixedWindows and
SlidingWindows groupings, each run through Beam's general trigger driver) only costs
time (measured: `benchmarks/RESULTS.md`). This plan
groups each user's events once, in the global window, and then builds the same things
from the same pieces, in event-time order:

* sessions: `SessionCombineFn` over each run of one ``session_id`` whose consecutive
  events are less than the gap apart, which is exactly how Beam merges `Sessions(gap)`
  windows (a window ``[t, t + gap)`` per event; overlapping windows merge);
* period partials: `UserPartial.add_event` / `add_session`, a session counted in the
  period of its first event (as the windowed plan's ``OUTPUT_AT_EARLIEST``);
* user windows: every sliding window (start a multiple of the period) that contains an
  active period, merged from that window's period partials (`UserPartial.merge`), then
  `feature_record` as in the windowed plan.

With ``deduplicate``, the grouping doubles as the dedupe: duplicates share their user
(`transforms.ingest.dedupe` keys by user and event_id), so each user's copies are dropped here
(`unique_events`, counted as `DedupeEvents` counts) and the pipeline saves the separate
shuffle of every event on its id.

The output equals the windowed plan's record for record (up to the order of float
sums); `tests/transforms/features/test_plans.py` runs both plans on the same events and compares.
A user's events are held in memory while that user is processed: a few hundred at most
for the behaviour this product sees (the generator averages under two per day).

The events cross the grouping packed as bytes, without the user id that is their key
(`event_coder.key_by_user`): the in-process runner decodes what it groups and encodes it
again for the next stage, so an `Event` value would be pickled twice, bytes once; and the
runner holds every grouped value in memory, where the key would be repeated in each.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Iterable, Iterator, Optional

import apache_beam as beam
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from transforms.ingest.dedupe import DEDUPE_IN, DEDUPE_OUT, unique_events
from transforms.ingest.event_coder import key_by_user, unpack_for_user
from transforms.contracts.events import Event
from transforms.features.partials import UserPartial, merge_all
from transforms.features.records import Pane, feature_record
from transforms.contracts.outcomes import counter
from transforms.features.sessions import SessionCombineFn, SessionSummary, SignedSession, summarise


def _us(delta: timedelta) -> int:
    return delta // timedelta(microseconds=1)


def sessions_of(user_key: str, events: Iterable[Event], gap_us: int) -> Iterator[SessionSummary]:
    """The sessions of one user's events (any order), as Beam's `Sessions(gap)` per session_id."""
    combine = SessionCombineFn()
    by_session: dict[Optional[str], list[Event]] = {}
    for event in events:
        by_session.setdefault(event.session_id, []).append(event)
    for session_id, members in by_session.items():
        members.sort(key=lambda event: event.timestamp_us)
        acc, last_us = None, None
        for event in members:
            if acc is not None and event.timestamp_us - last_us >= gap_us:
                yield summarise(user_key, session_id, acc)
                acc = None
            if acc is None:
                acc = combine.create_accumulator()
            acc = combine.add_input(acc, event)
            last_us = event.timestamp_us
        if acc is not None:
            yield summarise(user_key, session_id, acc)


class UserWindowFeatures(beam.DoFn):
    """``(user_key, packed events)`` -> a feature record per sliding window with activity.

    Args:
        session_gap: inactivity that closes a session.
        window_size: length of a user window (a multiple of `window_period`).
        window_period: distance between window starts, and the span of a partial.
        deduplicate: the events may hold duplicates; keep each event's canonical copy.
    """

    def __init__(self, session_gap: timedelta, window_size: timedelta, window_period: timedelta,
                 deduplicate: bool = False) -> None:
        self._gap_us = _us(session_gap)
        self._period_us = _us(window_period)
        self._periods_per_window = _us(window_size) // self._period_us
        self._deduplicate = deduplicate

    def setup(self):
        self._dedupe_in = counter(DEDUPE_IN)
        self._dedupe_out = counter(DEDUPE_OUT)

    def process(self, element: tuple[str, Iterable[bytes]], window=beam.DoFn.WindowParam,
                ends_by_us: Optional[int] = None):
        user_key, packed = element
        period_us = self._period_us
        partials: dict[int, UserPartial] = {}  # period index -> partial
        events = [unpack_for_user(user_key, p) for p in packed]
        if self._deduplicate:
            self._dedupe_in.inc(len(events))
            events = unique_events(events)
            self._dedupe_out.inc(len(events))
        for event in events:
            index = event.timestamp_us // period_us
            partial = partials.get(index)
            if partial is None:
                partial = partials[index] = UserPartial()
            partial.add_event(event)
        for session in sessions_of(user_key, events, self._gap_us):
            partials[session.start_us // period_us].add_session(SignedSession(session, +1))
        n = self._periods_per_window
        starts = sorted({index - back for index in partials for back in range(n)})
        if ends_by_us is not None:
            # Windows ending after the as-of time describe a future the data has not seen.
            starts = [start for start in starts if (start + n) * period_us <= ends_by_us]
        # The records stay in the input's (global) window. Built directly: a TimestampedValue
        # would make the runner assign a new window object to each record (tens of microseconds apiece).
        windows = (window,)
        for start in starts:
            inside = [partials[index] for index in range(start, start + n) if index in partials]
            # finalize only reads a lone partial; merging it into an empty one would copy it.
            merged = inside[0] if len(inside) == 1 else merge_all(inside)
            start_us, end_us = start * period_us, (start + n) * period_us
            record = feature_record(user_key, merged, start_us, end_us, Pane.ON_TIME)
            # As the windowed plan's output: stamped at the window's last microsecond.
            yield WindowedValue(record, Timestamp(micros=end_us - 1), windows)


class PerUserWindowFeatures(beam.PTransform):
    """Bounded events -> feature records, via one `GroupByKey` per user (see module docstring).

    `ends_by`, a singleton of UTC microseconds, limits the output to windows ending by it;
    `deduplicate` drops duplicates inside the grouping (see module docstring).
    """

    def __init__(self, session_gap: timedelta, window_size: timedelta, window_period: timedelta,
                 ends_by: Optional[beam.PCollection] = None, deduplicate: bool = False) -> None:
        super().__init__()
        self._fn = UserWindowFeatures(session_gap, window_size, window_period, deduplicate)
        self._ends_by = ends_by

    def expand(self, events: beam.PCollection[Event]) -> beam.PCollection[dict]:
        side = {} if self._ends_by is None else {"ends_by_us": beam.pvalue.AsSingleton(self._ends_by)}
        return (
            events
            | "KeyByUser" >> beam.Map(key_by_user).with_output_types(tuple[str, bytes])
            | "GroupByUser" >> beam.GroupByKey()
            | "WindowRecords" >> beam.ParDo(self._fn, **side)
        )
