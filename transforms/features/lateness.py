"""Too-late routing: events beyond the allowed lateness go to a dead-letter output.

A Beam runner silently drops an element that reaches a `GroupByKey` after the
watermark has passed its window's end plus the allowed lateness. To keep "nothing
disappears", `RouteTooLate` decides lateness itself, *before* any windowed grouping,
and the groupings downstream are given a little more lateness than the user asked for
(`runner_lateness`), so that the only place an event can be refused is here.

How the watermark is observed: a DoFn cannot read the input watermark, but an
event-time timer fires exactly when the watermark reaches the timer's timestamp.
Lateness is quantised: an event at time t is too late once the watermark reaches
``deadline(t) = end of the period containing t + allowed_lateness`` (the period is the
user window's period, so the end of that period is the end of the earliest user window
containing t). Deadlines are therefore the points ``k * period + allowed_lateness``.
Per shard key (a hash of the user key) a looping timer is set at the next such point
above the last one known to be passed; when it fires, that point is recorded as
*closed* and the timer moves on by one period. An event whose deadline is at or below
the closed point is too late. The loop only runs up to ``window_size`` past the
largest deadline the shard has seen (so it ends when the input ends, where the
watermark jumps to +inf) and restarts with the next event.

Exactness: on a shard that keeps receiving events the classification is exact at
period granularity. After a shard was idle for more than ``window_size`` of event time
the first events after the gap may be judged on a stale closed point while the loop
catches up; the runner lateness margin (two periods) absorbs that unless the gap was
both idle and longer than ``window_size``. See `transforms/features/FEATURES.md`.
"""

from __future__ import annotations

import enum
import json
import zlib
from datetime import timedelta

import apache_beam as beam
from apache_beam.coders import VarIntCoder
from apache_beam.transforms import userstate, window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.utils.timestamp import Timestamp

from transforms.contracts.events import Event
from transforms.contracts.outcomes import DeadLetter, ErrorCode, Stage, dead_letter_counter


class LatenessTag(str, enum.Enum):
    """Outputs of `RouteTooLate`."""

    ON_TIME = "on_time"  # main output: events within the allowed lateness
    TOO_LATE = "too_late"  # DeadLetter records


def _us(delta: timedelta) -> int:
    return delta // timedelta(microseconds=1)


def event_payload(event: Event) -> str:
    """A JSON rendering of an event (all fields, incl. its source), for dead letters."""
    return json.dumps(event._asdict(), sort_keys=True, separators=(",", ":"))


def shard_of(user_key: str, num_shards: int) -> int:
    """A stable shard for a user key."""
    return zlib.crc32(user_key.encode("utf-8")) % num_shards


def _count_too_late(dead: DeadLetter) -> DeadLetter:
    dead_letter_counter(ErrorCode.TOO_LATE).inc()
    return dead


class _RouteTooLateFn(beam.DoFn):
    """Keyed by shard, global window. See the module docstring."""

    CLOSED = userstate.ReadModifyWriteStateSpec("closed_us", VarIntCoder())
    MAX_DEADLINE = userstate.ReadModifyWriteStateSpec("max_deadline_us", VarIntCoder())
    ARMED = userstate.ReadModifyWriteStateSpec("armed_us", VarIntCoder())
    WATERMARK = userstate.TimerSpec("watermark", TimeDomain.WATERMARK)

    def __init__(self, period: timedelta, allowed_lateness: timedelta, window_size: timedelta) -> None:
        self._period_us = _us(period)
        self._lateness_us = _us(allowed_lateness)
        self._reach_us = _us(window_size)

    def deadline_us(self, t_us: int) -> int:
        return (t_us // self._period_us + 1) * self._period_us + self._lateness_us

    def process(
        self,
        element: tuple[int, Event],
        closed=beam.DoFn.StateParam(CLOSED),
        max_deadline=beam.DoFn.StateParam(MAX_DEADLINE),
        armed=beam.DoFn.StateParam(ARMED),
        timer=beam.DoFn.TimerParam(WATERMARK),
    ):
        event = element[1]
        deadline = self.deadline_us(event.timestamp_us)
        closed_us = closed.read()
        if closed_us is not None and deadline <= closed_us:
            yield beam.pvalue.TaggedOutput(
                LatenessTag.TOO_LATE.value,
                DeadLetter.of(
                    event_payload(event),
                    ErrorCode.TOO_LATE,
                    f"event time {event.timestamp_us} us is beyond the allowed lateness: the watermark "
                    f"has passed {deadline} us (end of its earliest window + allowed lateness)",
                    event.source,
                    Stage.WINDOW,
                ),
            )
            return
        known_max = max_deadline.read()
        if known_max is None or deadline > known_max:
            max_deadline.write(deadline)
        target = deadline if closed_us is None else closed_us + self._period_us
        armed_us = armed.read()
        if armed_us is None or target < armed_us:
            armed.write(target)
            timer.set(Timestamp(micros=target))
        yield window.TimestampedValue(event, Timestamp(micros=event.timestamp_us))

    @userstate.on_timer(WATERMARK)
    def watermark_reached(
        self,
        fired=beam.DoFn.TimestampParam,
        closed=beam.DoFn.StateParam(CLOSED),
        max_deadline=beam.DoFn.StateParam(MAX_DEADLINE),
        armed=beam.DoFn.StateParam(ARMED),
        timer=beam.DoFn.TimerParam(WATERMARK),
    ):
        fired_us = fired.micros
        closed_us = max(closed.read() or fired_us, fired_us)
        closed.write(closed_us)
        following = closed_us + self._period_us
        if following <= (max_deadline.read() or closed_us) + self._reach_us:
            armed.write(following)
            timer.set(Timestamp(micros=following))
        else:
            armed.clear()


class RouteTooLate(beam.PTransform):
    """Splits events into those within the allowed lateness and too-late dead letters.

    Args:
        window_period: the user windows' period (deadlines are quantised to it).
        allowed_lateness: how far behind the watermark an event may still arrive,
            measured from the end of the earliest user window that contains it.
        window_size: the user windows' size (how far the watermark loop runs on).
        num_shards: keys of the watermark-tracking state.

    Returns:
        A dict with `LatenessTag.ON_TIME` (events, timestamps unchanged) and
        `LatenessTag.TOO_LATE` (`DeadLetter` with code too_late, stage window).
    """

    def __init__(
        self,
        window_period: timedelta = timedelta(days=1),
        allowed_lateness: timedelta = timedelta(days=2),
        window_size: timedelta = timedelta(days=30),
        num_shards: int = 16,
    ) -> None:
        super().__init__()
        self.window_period = window_period
        self.allowed_lateness = allowed_lateness
        self.window_size = window_size
        self.num_shards = num_shards

    def expand(self, events: beam.PCollection[Event]):
        num_shards = self.num_shards
        routed = (
            events
            | "LatenessGlobalWindow" >> beam.WindowInto(window.GlobalWindows())
            | "KeyByShard" >> beam.Map(lambda e: (shard_of(e.user_id, num_shards), e)).with_output_types(
                beam.typehints.Tuple[int, Event])
            | "RouteTooLate" >> beam.ParDo(
                _RouteTooLateFn(self.window_period, self.allowed_lateness, self.window_size)
            ).with_outputs(LatenessTag.TOO_LATE.value, main=LatenessTag.ON_TIME.value)
        )
        # Counted in a stateless step: the DirectRunner does not report metrics from
        # bundles of a stateful DoFn that also fire timers.
        too_late = routed[LatenessTag.TOO_LATE.value] | "CountTooLate" >> beam.Map(_count_too_late)
        return {LatenessTag.ON_TIME.value: routed[LatenessTag.ON_TIME.value], LatenessTag.TOO_LATE.value: too_late}
