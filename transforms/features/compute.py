"""Per-user behavioural features over sliding event-time windows (batch and streaming).

`ComputeUserFeatures` turns validated, pseudonymised, consent-filtered events (element
timestamps = event time; deduplicated upstream, or here with ``deduplicate=True``) into one feature record per user per sliding
window, plus a dead-letter output for events beyond the allowed lateness. Two plans
(`FeaturePlan`) compute the same records from the same pieces (session combiner, period
partials, partial merges, `feature_records.feature_record`):

* the windowed plan, for unbounded input (early, on-time and late panes); stages (cost:
  each event is combined once into a period partial; only the small partials are
  re-read once per overlapping window)::

    events ─ RouteTooLate ─┬─ Sessionize (Sessions(gap) per user+session_id, signed) ─┐
                           └───────────────────────────────────────────────────────────┴─
      PeriodPartials (FixedWindows(period), DISCARDING panes: deltas)
      ─ UserWindows (SlidingWindows(size, period), ACCUMULATING panes) ─ FeatureRecords

* the per-user plan, for bounded input, where every window fires once and the windowed
  plan's trigger machinery is pure overhead: ``GroupByKey`` per user, then sessions,
  partials and windows in one pass (`transforms.features.per_user`).

Definitions of every feature and the trigger reasoning: `transforms/features/FEATURES.md`.

Run on DirectRunner::

    with beam.Pipeline() as p:
        events = p | beam.Create(evs) | beam.Map(lambda e: TimestampedValue(e, e.timestamp_us / 1e6))
        out = events | ComputeUserFeatures(window_size=timedelta(days=30))
        out.features | beam.Map(print)

On Dataflow the same transform is applied by `pipelines/` with ``--runner=DataflowRunner``
(and ``--streaming`` for Pub/Sub input).
"""

from __future__ import annotations

import enum
from datetime import timedelta
from typing import Any, Mapping, NamedTuple, Optional

import apache_beam as beam
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.transforms import trigger, window
from apache_beam.utils.timestamp import Duration

from transforms.features.as_of import KeepWindowsEndingBy
from transforms.features.per_user import PerUserWindowFeatures
from transforms.ingest.dedupe import DedupeEvents
from transforms.contracts.events import Event
from transforms.features.partials import MergePartialsFn, PeriodPartialFn
from transforms.features.records import FormatFeatureRecord
from transforms.contracts.feature_spec import model_input_vector
from transforms.features.lateness import LatenessTag, RouteTooLate
from transforms.contracts.outcomes import DeadLetter
from transforms.features.sessions import Sessionize

class UserFeatures(NamedTuple):
    """Outputs of `ComputeUserFeatures`."""

    features: beam.PCollection  # feature record dicts (keys: `records.FEATURE_RECORD_FIELDS`)
    too_late: beam.PCollection  # DeadLetter of the events beyond the allowed lateness


def _us(delta: timedelta) -> int:
    return delta // timedelta(microseconds=1)


def _duration(delta: timedelta) -> Duration:
    return Duration(micros=_us(delta))


def feature_record_to_vector(record: Mapping[str, Any]) -> list[float]:
    """The model input vector of a feature record (order: `feature_spec.MODEL_FEATURES`)."""
    return model_input_vector(record)


class FeaturePlan(str, enum.Enum):
    """How `ComputeUserFeatures` computes its windows; both give the same records.

    * ``windowed``: Beam's Sessions, FixedWindows and SlidingWindows with triggers; the
      only plan for unbounded input (early, on-time and late panes, too_late).
    * ``per_user``: one GroupByKey per user and the same pieces in one pass
      (`transforms.features.per_user`); bounded input only, several times faster there.
    * ``auto``: ``per_user`` for bounded input in a batch pipeline, else ``windowed``.
    """

    AUTO = "auto"
    WINDOWED = "windowed"
    PER_USER = "per_user"


class ComputeUserFeatures(beam.PTransform):
    """Events -> per-user feature records per sliding window, and too-late dead letters.

    Args:
        session_gap: inactivity that closes a session.
        window_size: length of a user window (a multiple of `window_period`).
        window_period: distance between window starts; also the span of the partials.
        early_firing: processing-time delay between speculative (early) panes.
        allowed_lateness: event-time lateness, after the end of the earliest window that
            contains an event, up to which the event still updates its windows (late
            panes); later events are dead-lettered as too_late.
        num_shards: keys of the lateness tracker.
        plan: how the windows are computed (`FeaturePlan`); the default picks the per-user
            plan for bounded input in a batch pipeline and the windowed plan otherwise.
        ends_by: optional singleton PCollection (UTC microseconds, e.g. `as_of.AsOfMicros`):
            only windows ending at or before it are produced. The per-user plan does not
            even compute the others; the windowed plan filters them.
        deduplicate: the input may hold duplicates; drop them as `transforms.ingest.dedupe` does.
            The per-user plan does it inside its grouping per user (no extra shuffle),
            the windowed plan with `DedupeEvents` first.

    Returns (from expand):
        `UserFeatures`: feature record dicts (keys
        `transforms.features.records.FEATURE_RECORD_FIELDS`) and too-late `DeadLetter`s.
    """

    def __init__(
        self,
        session_gap: timedelta = timedelta(minutes=30),
        window_size: timedelta = timedelta(days=30),
        window_period: timedelta = timedelta(days=1),
        early_firing: timedelta = timedelta(seconds=60),
        allowed_lateness: timedelta = timedelta(days=2),
        num_shards: int = 16,
        plan: FeaturePlan = FeaturePlan.AUTO,
        ends_by: Optional[beam.PCollection] = None,
        deduplicate: bool = False,
    ) -> None:
        super().__init__()
        if window_period <= timedelta(0) or window_size <= timedelta(0):
            raise ValueError("window_size and window_period must be positive")
        if _us(window_size) % _us(window_period):
            raise ValueError(f"window_size {window_size} is not a multiple of window_period {window_period}")
        if _us(window_period) % _us(timedelta(days=1)) and _us(timedelta(days=1)) % _us(window_period):
            raise ValueError("window_period must divide or be a multiple of one day")
        if early_firing.total_seconds() != int(early_firing.total_seconds()):
            raise ValueError(f"early_firing {early_firing} must be whole seconds")
        self.session_gap = session_gap
        self.window_size = window_size
        self.window_period = window_period
        self.early_firing = early_firing
        self.allowed_lateness = allowed_lateness
        self.num_shards = num_shards
        self.plan = FeaturePlan(plan)
        self.ends_by = ends_by
        self.deduplicate = deduplicate

    @property
    def runner_lateness(self) -> timedelta:
        """Lateness given to the windowed groupings: the user's plus two periods of margin."""
        return self.allowed_lateness + 2 * self.window_period

    def _trigger(self, speculative: bool) -> trigger.AfterWatermark:
        early = trigger.AfterProcessingTime(int(self.early_firing.total_seconds())) if speculative else None
        return trigger.AfterWatermark(early=early, late=trigger.AfterCount(1))

    def _firing(self, speculative: bool, accumulation_mode) -> dict:
        """Trigger, accumulation and lateness of a windowing step.

        Bounded input keeps Beam's default trigger: every window fires once, on time,
        exactly as with the streaming trigger, and the runner can then lift the
        combiners (pre-combine before the shuffle), which a custom trigger prevents.
        """
        if not speculative:
            return {}
        return {
            "trigger": self._trigger(True),
            "accumulation_mode": accumulation_mode,
            "allowed_lateness": _duration(self.runner_lateness),
        }

    @staticmethod
    def _is_streaming(events: beam.PCollection) -> bool:
        """Unbounded input or a streaming pipeline: early (processing-time) firings apply.

        Beam's batch runner has no processing-time clock (BEAM-7514); a bounded run has a
        single pane per window anyway, so the early trigger is left out there.
        """
        options = events.pipeline.options
        streaming = bool(options and options.view_as(StandardOptions).streaming)
        return streaming or not events.is_bounded

    @staticmethod
    def _no_dead_letters(events: beam.PCollection) -> beam.PCollection[DeadLetter]:
        return events.pipeline | "NoTooLate" >> beam.Create([]).with_output_types(DeadLetter)

    def expand(self, events: beam.PCollection[Event]) -> UserFeatures:
        speculative = self._is_streaming(events)
        if self.plan is FeaturePlan.PER_USER and speculative:
            raise ValueError("the per_user feature plan needs bounded input in a batch pipeline")
        if self.plan is FeaturePlan.PER_USER or (self.plan is FeaturePlan.AUTO and not speculative):
            features = events | "PerUser" >> PerUserWindowFeatures(
                self.session_gap, self.window_size, self.window_period, self.ends_by, self.deduplicate)
            return UserFeatures(features, self._no_dead_letters(events))
        if self.deduplicate:
            events = events | "Dedupe" >> DedupeEvents()
        if speculative:
            routed = events | "RouteTooLate" >> RouteTooLate(
                self.window_period, self.allowed_lateness, self.window_size, self.num_shards
            )
            on_time, too_late = routed[LatenessTag.ON_TIME.value], routed[LatenessTag.TOO_LATE.value]
        else:
            # Bounded input: the watermark stays before every event until all input is
            # read, so nothing can be late, and the stateful router (a timer loop per
            # shard) would only cost time.
            on_time = events
            too_late = self._no_dead_letters(events)
        keyed = on_time | "KeyByUser" >> beam.Map(lambda e: (e.user_id, e))
        signed_sessions = keyed | "Sessionize" >> Sessionize(self.session_gap, self.runner_lateness,
                                                             retract=speculative)
        partials = (
            (keyed, signed_sessions)
            | "FlattenEventsAndSessions" >> beam.Flatten()
            | "PeriodWindows" >> beam.WindowInto(
                window.FixedWindows(self.window_period.total_seconds()),
                **self._firing(speculative, trigger.AccumulationMode.DISCARDING),
            )
            | "PeriodPartials" >> beam.CombinePerKey(PeriodPartialFn())
        )
        features = (
            partials
            | "UserWindows" >> beam.WindowInto(
                window.SlidingWindows(self.window_size.total_seconds(), self.window_period.total_seconds()),
                **self._firing(speculative, trigger.AccumulationMode.ACCUMULATING),
            )
            | "MergePartials" >> beam.CombinePerKey(MergePartialsFn())
            | "FeatureRecords" >> beam.ParDo(FormatFeatureRecord())
        )
        if self.ends_by is not None:
            features = features | "EndedBy" >> KeepWindowsEndingBy(self.ends_by)
        return UserFeatures(features, too_late)
