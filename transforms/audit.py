"""The streaming job's audit: stage tallies per processing-time interval, as ``run_audit`` rows.

`StreamingAudit` tallies elements at each stage (records read: a single-event message or
one line of a batched message, valid events, events
kept by privacy, events that left the dedupe, assignment rows, dead letters per code)
per processing-time interval and turns each interval into one ``run_audit`` row (mode
``streaming``, ``run_id`` ``<run id>/<last time counted>``) with read, valid (unique
minus too_late), dead letters and assignments.

Filtered and duplicate counts are differences between stage tallies, which add up only
once nothing is in flight, so interval rows leave them empty and ``reconciled`` NULL (an
interval's counts are what happened in it; records in flight at its end are counted in
the next one). The local live mode (`segments stream --local`) sums the tallies after draining
and writes a final, reconciled row for the whole run. Beam's counters are kept too
(Dataflow shows them), but the DirectRunner stops updating them in streaming after the
first bundles, so nothing local relies on them.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Iterable, NamedTuple, Optional

import apache_beam as beam
from apache_beam.transforms import window

from transforms.bigquery.rows import audit_row, format_timestamp
from transforms.contracts.outcomes import DeadLetter, ErrorCode
from transforms.drift import DRIFT_ROWS, bin_counts


AUDIT_READ = "read"  # records read: a single-event message, or one line of a batched message
AUDIT_PARSED = "parsed"  # valid events (before privacy)
AUDIT_CONSENTED = "consented"  # events kept by the privacy step
AUDIT_UNIQUE = "unique_events"  # events that left the dedupe
AUDIT_DUPLICATES = "duplicates"  # events the profile step dropped as duplicates (counted, not derived)
AUDIT_ASSIGNMENTS = "assignments"  # assignment rows produced
AUDIT_CORRECTIONS = "corrections"  # daily records re-emitted because a late event changed them
AUDIT_CHANGES = "changes"  # segment change records produced
# Filtered events are tallied per reason, as ``filtered.<reason>`` (`filter_tally`).
_FIRST_US, _LAST_US = "_first_us", "_last_us"


class AuditCountsFn(beam.CombineFn):
    """Counts ``(name, 1)`` tallies; remembers the first and last processing time seen.

    The accumulator is one small dict: one entry per counted name (a fixed set: the
    audit names and the error codes) plus two timestamps, whatever the volume.
    """

    def create_accumulator(self) -> dict:
        return {}

    def add_input(self, acc: dict, element: tuple[str, int]) -> dict:
        name, n = element
        acc[name] = acc.get(name, 0) + n
        now_us = time.time_ns() // 1000
        acc[_FIRST_US] = min(acc.get(_FIRST_US, now_us), now_us)
        acc[_LAST_US] = max(acc.get(_LAST_US, now_us), now_us)
        return acc

    def merge_accumulators(self, accumulators) -> dict:
        merged: dict = {}
        for acc in accumulators:
            for name, value in acc.items():
                if name == _FIRST_US:
                    merged[name] = min(merged.get(name, value), value)
                elif name == _LAST_US:
                    merged[name] = max(merged.get(name, value), value)
                else:
                    merged[name] = merged.get(name, 0) + value
        return merged

    def extract_output(self, acc: dict) -> dict:
        return dict(acc)


def interval_audit_row(counts: dict, run_id: str, subscription: str, model_version: Optional[str],
                       drift=None) -> dict:
    """A `run_audit` row (mode ``streaming``) from one interval's `AuditCountsFn` output.

    ``valid`` is the events that left the dedupe minus the too-late ones; filtered and
    duplicate counts are differences of stage tallies that only hold once nothing is in
    flight (see the module docstring), so ``duplicates`` is NULL, ``filtered`` empty and
    ``reconciled`` NULL.

    With `drift` (the model's `models.drift.DriftMonitor`, handed in by the job), the row
    also carries the PSI of the interval's midnight re-scorings against the training bins,
    from the ``drift.*`` tallies of `transforms.drift.TallyFeatureBins`; NULL in an interval
    without any.
    """
    first_us, last_us = counts.get(_FIRST_US), counts.get(_LAST_US)
    dead = {code.value: counts[code.value] for code in ErrorCode if counts.get(code.value)}
    too_late = counts.get(ErrorCode.TOO_LATE.value, 0)
    summary = {
        "read": counts.get(AUDIT_READ, 0),
        "valid": counts.get(AUDIT_UNIQUE, 0) - too_late,
        "dead_lettered": dead,
        "assignments": counts.get(AUDIT_ASSIGNMENTS, 0),
    }
    stamp = format_timestamp(last_us) if last_us is not None else "unknown"
    rows = counts.get(DRIFT_ROWS, 0)
    drift_fields = drift.audit_fields(bin_counts(counts, drift.edges), rows) if drift is not None and rows else None
    return audit_row(summary, run_id=f"{run_id}/{stamp}", mode="streaming", input=subscription,
                     started_at_us=first_us, finished_at_us=last_us, model_version=model_version, drift=drift_fields)


class Audited(NamedTuple):
    """Outputs of `StreamingAudit`."""

    counts: beam.PCollection  # the tallies of each interval (dicts)
    rows: beam.PCollection  # the run_audit rows


class StreamingAudit(beam.PTransform):
    """Tallies -> one ``run_audit`` row per processing-time interval.

    Input: ``(name, count)`` pairs (names: the ``AUDIT_*`` constants and error codes).
    Output: `Audited` (one tally dict per interval, and the ``run_audit`` rows). A global
    window fires every `interval` of
    processing time after the first tally of a pane, discarding what it fired, so each
    row holds the tallies of one interval.

    Args:
        interval: processing time between rows.
        run_id: the job's id; each row's is ``<run_id>/<last processing time>``.
        subscription: recorded as the row's input.
        model_version: recorded on the rows.
        drift: the model's training bins and PSI (`models.drift.DriftMonitor`: ``edges`` and
            ``audit_fields``), to record the drift of each interval's midnight re-scorings
            (tallied by `transforms.drift.TallyFeatureBins`); None records none.
    """

    def __init__(self, interval: dt.timedelta, run_id: str, subscription: str,
                 model_version: Optional[str] = None, drift=None):
        super().__init__()
        self._interval_s = int(interval.total_seconds())
        self._run_id = run_id
        self._subscription = subscription
        self._model_version = model_version
        self._drift = drift

    def expand(self, tallies: beam.PCollection[tuple[str, int]]):  # -> Audited (not annotated: Beam would take it for an element type)
        from apache_beam.transforms import trigger, window

        run_id, subscription, model_version = self._run_id, self._subscription, self._model_version
        counts = (
            tallies
            | "AuditIntervals" >> beam.WindowInto(
                window.GlobalWindows(),
                trigger=trigger.Repeatedly(trigger.AfterProcessingTime(self._interval_s)),
                accumulation_mode=trigger.AccumulationMode.DISCARDING)
            | "CountPerInterval" >> beam.CombineGlobally(AuditCountsFn()).without_defaults()
        )
        rows = counts | "ToAuditRow" >> beam.Map(interval_audit_row, run_id, subscription, model_version, self._drift)
        return Audited(counts, rows)


class TallyPerBundle(beam.DoFn):
    """Counts the elements of each bundle (per name) and emits ``(name, count)`` at its end.

    One tally per bundle and name instead of one per element: the audit's processing-time
    trigger costs the local runner per element it sees (`benchmarks/RESULTS_latency.md`).

    Args:
        name: the tally's name; or, with `name_of`, a function of the element (dead letters
            are tallied per error code).
    """

    def __init__(self, name: Optional[str] = None, name_of=None):
        self._name = name
        self._name_of = name_of

    def start_bundle(self):
        self._counts: dict[str, int] = {}

    def process(self, element) -> Iterable:
        name = self._name if self._name_of is None else self._name_of(element)
        self._counts[name] = self._counts.get(name, 0) + 1
        return ()

    def finish_bundle(self) -> Iterable:
        for name, n in self._counts.items():
            yield window.GlobalWindows.windowed_value((name, n))


def tally(name: str) -> TallyPerBundle:
    """The bundle's elements, counted under `name`."""
    return TallyPerBundle(name)


def code_tally() -> TallyPerBundle:
    """The bundle's dead letters, counted per error code."""
    return TallyPerBundle(name_of=_error_code)


def _error_code(dead: DeadLetter) -> str:
    return dead.error_code


def filter_tally() -> TallyPerBundle:
    """The bundle's filtered events (their `FilterReason` values), counted per reason as
    ``filtered.<reason>``."""
    return TallyPerBundle(name_of=filtered_name)


def filtered_name(reason: str) -> str:
    """The tally of the events kept out for `reason` (a `FilterReason` value)."""
    return f"filtered.{reason}"
