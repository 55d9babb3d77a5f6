"""Sessions: per-user session windows turned into signed session summaries.

A session is a maximal run of one user's events, sharing the same `session_id` (or all
lacking one), in which consecutive events are less than `gap` apart. Beam's
`Sessions(gap)` window, keyed by ``(user_key, session_id)``, finds them; an
out-of-order event that bridges two sessions merges them.

The session windows fire when the watermark passes the session's end (on time) and
again for every late event (accumulating). Each firing restates the *whole* session,
which a downstream sum would double count, so `RetractSupersededSessions` turns the
firings into a signed stream: for every new firing it emits a retraction (sign -1) of
each summary it previously emitted that the new session window contains (an earlier
firing of the same session, or the sessions a bridging event merged), then the new
summary (sign +1). Summing the signed stream gives each session exactly once.

Usage (inside `transforms.features.compute.ComputeUserFeatures`)::

    signed = keyed_events | "Sessionize" >> Sessionize(gap=timedelta(minutes=30),
                                                      runner_lateness=timedelta(days=4))
"""

from __future__ import annotations

from datetime import timedelta
from typing import Iterable, NamedTuple, Optional

import apache_beam as beam
from apache_beam.coders import PickleCoder, VarIntCoder
from apache_beam.transforms import trigger, userstate, window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.utils.timestamp import Duration, Timestamp

from transforms.contracts.events import Event

US_PER_SECOND = 1_000_000


class SessionSummary(NamedTuple):
    """One session of one user.

    `start_us`/`end_us` are the first and last event timestamps (UTC microseconds);
    the session's duration is ``end_us - start_us``.
    """

    user_key: str
    session_id: Optional[str]
    start_us: int
    end_us: int
    events: int
    page_views: int
    product_views: int
    reached_cart: bool
    reached_checkout: bool
    reached_purchase: bool

    @property
    def duration_s(self) -> float:
        return (self.end_us - self.start_us) / US_PER_SECOND

    @property
    def bounce(self) -> bool:
        """A single-event session."""
        return self.events == 1

    @property
    def abandoned_cart(self) -> bool:
        """Reached the cart (add_to_cart) but no purchase in the session."""
        return self.reached_cart and not self.reached_purchase


class SignedSession(NamedTuple):
    """A session summary (+1) or the retraction of one emitted earlier (-1)."""

    session: SessionSummary
    sign: int


class SessionCombineFn(beam.CombineFn):
    """Events of one session -> `SessionSummary`. Fixed-size accumulator (a list of 8)."""

    # acc: [start_us, end_us, events, page_views, product_views, cart, checkout, purchase]

    def create_accumulator(self) -> list:
        return [None, None, 0, 0, 0, False, False, False]

    def add_input(self, acc: list, event: Event) -> list:
        t = event.timestamp_us
        acc[0] = t if acc[0] is None else min(acc[0], t)
        acc[1] = t if acc[1] is None else max(acc[1], t)
        acc[2] += 1
        kind = event.event_type
        acc[3] += kind == "page_view"
        acc[4] += kind == "product_view"
        acc[5] = acc[5] or kind == "add_to_cart"
        acc[6] = acc[6] or kind == "checkout_start"
        acc[7] = acc[7] or kind == "purchase"
        return acc

    def merge_accumulators(self, accumulators: Iterable[list]) -> list:
        merged = self.create_accumulator()
        for acc in accumulators:
            if acc[0] is None:
                continue
            merged[0] = acc[0] if merged[0] is None else min(merged[0], acc[0])
            merged[1] = acc[1] if merged[1] is None else max(merged[1], acc[1])
            for i in (2, 3, 4):
                merged[i] += acc[i]
            for i in (5, 6, 7):
                merged[i] = merged[i] or acc[i]
        return merged

    def extract_output(self, acc: list) -> list:
        return acc


def summarise(user_key: str, session_id: Optional[str], acc: list) -> SessionSummary:
    """The summary of one session from its `SessionCombineFn` accumulator."""
    return SessionSummary(user_key, session_id, acc[0], acc[1], acc[2], acc[3], acc[4],
                          bool(acc[5]), bool(acc[6]), bool(acc[7]))


class RetractSupersededSessions(beam.DoFn):
    """Turns accumulating session firings into a signed stream (see module docstring).

    Keyed by ``(user_key, session_id)`` in the global window. State holds the summaries
    emitted for the key whose session window can still change, i.e. has not passed
    `runner_lateness` (a firing happens only once the watermark has passed the session
    end, so a summary ending more than `runner_lateness` before the newest one can no
    longer be merged); a timer clears it when the key goes quiet.
    """

    EMITTED = userstate.ReadModifyWriteStateSpec("emitted", PickleCoder())
    EXPIRY = userstate.ReadModifyWriteStateSpec("expiry_us", VarIntCoder())
    GC = userstate.TimerSpec("gc", TimeDomain.WATERMARK)

    def __init__(self, gap: timedelta, runner_lateness: timedelta) -> None:
        self._gap_us = gap // timedelta(microseconds=1)
        self._lateness_us = runner_lateness // timedelta(microseconds=1)

    def process(
        self,
        element: tuple[tuple[str, Optional[str]], SessionSummary],
        emitted=beam.DoFn.StateParam(EMITTED),
        expiry=beam.DoFn.StateParam(EXPIRY),
        gc=beam.DoFn.TimerParam(GC),
    ):
        _, summary = element
        window_end = summary.end_us + self._gap_us
        horizon = window_end - self._lateness_us
        kept = []
        for old in emitted.read() or ():
            if old.start_us >= summary.start_us and old.end_us + self._gap_us <= window_end:
                yield window.TimestampedValue(SignedSession(old, -1), Timestamp(micros=old.start_us))
            elif old.end_us + self._gap_us >= horizon:
                kept.append(old)
        kept.append(summary)
        emitted.write(kept)
        yield window.TimestampedValue(SignedSession(summary, +1), Timestamp(micros=summary.start_us))
        new_expiry = max(expiry.read() or 0, window_end + self._lateness_us)
        expiry.write(new_expiry)
        gc.set(Timestamp(micros=new_expiry))

    @userstate.on_timer(GC)
    def clear(self, emitted=beam.DoFn.StateParam(EMITTED), expiry=beam.DoFn.StateParam(EXPIRY)):
        emitted.clear()
        expiry.clear()


class Sessionize(beam.PTransform):
    """``(user_key, Event)`` -> ``(user_key, SignedSession)`` timestamped at session start.

    Args:
        gap: inactivity that closes a session.
        runner_lateness: how long session windows accept late events (set by the caller
            a little beyond the user-facing allowed lateness; see FEATURES.md).
    """

    def __init__(self, gap: timedelta = timedelta(minutes=30), runner_lateness: timedelta = timedelta(days=4),
                 retract: bool = True):
        super().__init__()
        self.gap = gap
        self.runner_lateness = runner_lateness
        # Bounded input fires each session window once (no early or late panes), so
        # there is nothing to retract and the stateful step can be skipped.
        self.retract = retract

    def _late_firings(self) -> dict:
        """Late panes (and so retractions) only where late data can arrive; bounded
        input keeps the default trigger, which lets the runner lift the combiner."""
        if not self.retract:
            return {}
        return {
            "trigger": trigger.AfterWatermark(late=trigger.AfterCount(1)),
            "accumulation_mode": trigger.AccumulationMode.ACCUMULATING,
            "allowed_lateness": Duration(micros=self.runner_lateness // timedelta(microseconds=1)),
        }

    def expand(self, keyed_events: beam.PCollection) -> beam.PCollection:
        summaries = (
            keyed_events
            | "KeyBySession" >> beam.Map(lambda kv: ((kv[0], kv[1].session_id), kv[1]))
            | "SessionWindows" >> beam.WindowInto(
                window.Sessions(self.gap.total_seconds()),
                timestamp_combiner=window.TimestampCombiner.OUTPUT_AT_EARLIEST,
                **self._late_firings(),
            )
            | "CombineSession" >> beam.CombinePerKey(SessionCombineFn())
            | "Summarise" >> beam.Map(lambda kv: (kv[0], summarise(kv[0][0], kv[0][1], kv[1]))).with_output_types(
                beam.typehints.Tuple[beam.typehints.Tuple[str, beam.typehints.Optional[str]], SessionSummary])
            | "SessionsToGlobal" >> beam.WindowInto(window.GlobalWindows())
        )
        if self.retract:
            signed = summaries | "RetractSuperseded" >> beam.ParDo(
                RetractSupersededSessions(self.gap, self.runner_lateness))
        else:
            signed = summaries | "SignOnce" >> beam.Map(
                lambda kv: window.TimestampedValue(SignedSession(kv[1], +1), Timestamp(micros=kv[1].start_us)))
        return signed | "KeyByUser" >> beam.Map(lambda signed: (signed.session.user_key, signed))
