"""The streaming job: JSON events from a Pub/Sub subscription, judged like batch input.

Every message body goes through the same parse/validate DoFn as a line of a batch file
(`transforms.sources.ParseMessageFn`), with ``pubsub:<message id>`` as its source (kept
on the event and on any dead letter), then through the same privacy step and the
unbounded form of the dedupe on ``event_id`` (Beam's `DeduplicatePerKey`).

Event time is the payload's ``timestamp``, or, with ``--timestamp_attribute``, the
message attribute of that name (epoch milliseconds or RFC 3339, as Pub/Sub I/O reads
it; the event's own ``timestamp_us`` field keeps the payload's time).

Run locally against the Pub/Sub emulator (see `pipelines.pubsub_emulator`)::

    PUBSUB_EMULATOR_HOST=127.0.0.1:8085 python -m pipelines.streaming \\
        --subscription projects/segments-local/subscriptions/events-sub --demo_key

On Dataflow::

    python -m pipelines.streaming --runner DataflowRunner --project PROJECT \\
        --region REGION --temp_location gs://BUCKET/tmp \\
        --subscription projects/PROJECT/subscriptions/events-sub \\
        --id_key_file gs://BUCKET/secrets/id_key

After ingest the graph is the batch graph: `ComputeUserFeatures` (unbounded input:
early panes every ``--early_firing_seconds``, accumulating, late panes within
``--allowed_lateness_hours``, later events dead-lettered as ``too_late``),
`AssignSegments` and, given a `BigQueryTarget` (``streaming=True``), `WriteAssignments`
and `WriteDeadLetters`. Locally the thin google-cloud-bigquery sink loads each bundle's
rows (Beam's `BatchElements` flushes at the end of every bundle, so rows land within a
bundle's time, about a second on the DirectRunner).

Audit: `StreamingAudit` tallies elements at each stage (messages read, valid events,
events kept by privacy, events that left the dedupe, assignment rows, dead letters per
code) per processing-time interval of ``--audit_interval_seconds`` and appends one
``run_audit`` row (mode ``streaming``, ``run_id`` ``<run id>/<last time counted>``) per
interval with read, valid (unique minus too_late), dead letters and assignments.
Filtered and duplicate counts are differences between stage tallies, which add up only
once nothing is in flight, so interval rows leave them empty and ``reconciled`` NULL
(an interval's counts are what happened in it; records in flight at its end are
counted in the next one). ``segments stream --local`` (`pipelines.live`) sums the
tallies after draining and writes a final, reconciled row for the whole run. Beam's
counters (`pipelines.summary`) are kept too (Dataflow shows them), but the DirectRunner
stops updating them in streaming after the first bundles, so nothing local relies on
them.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import enum
import logging
import re
import threading
import time
import uuid
from typing import TYPE_CHECKING, Callable, Iterable, Optional, Sequence

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult
from apache_beam.transforms.window import TimestampedValue

from pipelines.options import SegmentsOptions, positive_int
from transforms.bigquery_tables import Table, audit_row, format_timestamp

if TYPE_CHECKING:
    from transforms.write_bigquery import BigQueryTarget
from transforms.dedupe import DedupeEvents
from transforms.features import FeatureOutput
from transforms.outcomes import DeadLetter, ErrorCode
from transforms.privacy import ApplyPrivacy
from transforms.sources import ParsedTags, ParseMessageFn
from transforms.validation import ValidationConfig

LOG = logging.getLogger(__name__)

SOURCE_PREFIX = "pubsub:"
_SUBSCRIPTION = re.compile(r"^projects/[^/]+/subscriptions/[^/]+$")


def subscription_path(text: str) -> str:
    """argparse type: a full subscription path, ``projects/P/subscriptions/S``."""
    if not _SUBSCRIPTION.match(text):
        raise argparse.ArgumentTypeError(f"expected projects/PROJECT/subscriptions/NAME, got {text!r}")
    return text


class StreamingOptions(SegmentsOptions):
    """Flags of the streaming job beyond the shared ones."""

    @classmethod
    def _add_argparse_args(cls, parser):
        group = parser.add_argument_group("streaming job")
        # Not argparse-required: Beam re-parses options internally (and `segments` checks
        # every command line against all option classes) without this flag, which would
        # then exit. `run` and `segments stream` insist on it instead.
        group.add_argument(
            "--subscription", type=subscription_path, default=None,
            help="(Required) Pub/Sub subscription to read events from: projects/PROJECT/subscriptions/NAME.")
        group.add_argument(
            "--timestamp_attribute", default=None,
            help="Take event time from this message attribute (epoch milliseconds or RFC 3339) instead of "
                 "the payload's timestamp. Default: none (payload timestamp).")
        group.add_argument(
            "--audit_interval_seconds", type=positive_int, default=60,
            help="Append one run_audit row per this many seconds of processing time. Default: 60.")
        group.add_argument(
            "--run_id", default=None,
            help="Identifier of this job in dead_letters and run_audit. Default: stream-<UTC time>-<random>.")


def message_source(message: PubsubMessage) -> str:
    """The source recorded on events and dead letters: ``pubsub:<message id>``.

    A runner that does not pass the id on gives ``pubsub:unknown@<publish time>``
    (or ``pubsub:unknown``) instead.
    """
    if message.message_id:
        return SOURCE_PREFIX + message.message_id
    if message.publish_time is not None:
        return f"{SOURCE_PREFIX}unknown@{message.publish_time.isoformat()}"
    return SOURCE_PREFIX + "unknown"


class _ParseMessageFn(beam.DoFn):
    """`ParseMessageFn` on (payload, source) pairs, for a job that runs for days.

    * "Now" moves: the validation window (`max_future_skew`, `max_age`) is taken from
      the wall clock, refreshed every `refresh_now_every`, not frozen at launch.
    * With `keep_read_time`, valid events keep the element timestamp given by the read
      (the timestamp attribute) instead of the payload's time that `ParseMessageFn` sets.
    """

    def __init__(self, config: ValidationConfig, keep_read_time: bool,
                 refresh_now_every: dt.timedelta = dt.timedelta(minutes=1)):
        self._config = config
        self._keep_read_time = keep_read_time
        self._refresh_s = refresh_now_every.total_seconds()

    def setup(self):
        self._parse = None
        self._built_at = float("-inf")

    def start_bundle(self):
        if time.monotonic() - self._built_at >= self._refresh_s:
            self._parse = ParseMessageFn(dataclasses.replace(self._config, now_us=None))
            self._parse.setup()
            self._built_at = time.monotonic()

    def process(self, element: tuple[bytes, str], timestamp=beam.DoFn.TimestampParam) -> Iterable:
        for output in self._parse.process(element):
            if self._keep_read_time and isinstance(output, TimestampedValue):
                output = TimestampedValue(output.value, timestamp)
            yield output


# ---------------------------------------------------------------------------
# Audit per processing-time interval

AUDIT_READ = "read"  # messages read
AUDIT_PARSED = "parsed"  # valid events (before privacy)
AUDIT_CONSENTED = "consented"  # events kept by the privacy step
AUDIT_UNIQUE = "unique_events"  # events that left the dedupe
AUDIT_ASSIGNMENTS = "assignments"  # assignment rows produced
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


def interval_audit_row(counts: dict, run_id: str, subscription: str, model_version: Optional[str]) -> dict:
    """A `run_audit` row (mode ``streaming``) from one interval's `AuditCountsFn` output.

    ``valid`` is the events that left the dedupe minus the too-late ones; filtered and
    duplicate counts are differences of stage tallies that only hold once nothing is in
    flight (see the module docstring), so ``duplicates`` is NULL, ``filtered`` empty and
    ``reconciled`` NULL.
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
    return audit_row(summary, run_id=f"{run_id}/{stamp}", mode="streaming", input=subscription,
                     started_at_us=first_us, finished_at_us=last_us, model_version=model_version)


class AuditOutput(str, enum.Enum):
    """Outputs of `StreamingAudit`."""

    COUNTS = "counts"  # the tallies of each interval (dicts)
    ROWS = "rows"  # the run_audit rows


class StreamingAudit(beam.PTransform):
    """Tallies -> one ``run_audit`` row per processing-time interval.

    Input: ``(name, count)`` pairs (names: the ``AUDIT_*`` constants and error codes).
    Output: a dict with `AuditOutput.COUNTS` (one tally dict per interval) and
    `AuditOutput.ROWS` (the ``run_audit`` rows). A global window fires every `interval` of
    processing time after the first tally of a pane, discarding what it fired, so each
    row holds the tallies of one interval.

    Args:
        interval: processing time between rows.
        run_id: the job's id; each row's is ``<run_id>/<last processing time>``.
        subscription: recorded as the row's input.
        model_version: recorded on the rows.
    """

    def __init__(self, interval: dt.timedelta, run_id: str, subscription: str,
                 model_version: Optional[str] = None):
        super().__init__()
        self._interval_s = int(interval.total_seconds())
        self._run_id = run_id
        self._subscription = subscription
        self._model_version = model_version

    def expand(self, tallies: beam.PCollection[tuple[str, int]]) -> dict[str, beam.PCollection]:
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
        rows = counts | "ToAuditRow" >> beam.Map(interval_audit_row, run_id, subscription, model_version)
        return {AuditOutput.COUNTS.value: counts, AuditOutput.ROWS.value: rows}


def _tally(name: str):
    return lambda _element: (name, 1)


def _code_tally(dead: DeadLetter) -> tuple[str, int]:
    return (dead.error_code, 1)


# ---------------------------------------------------------------------------
# The graph


@dataclasses.dataclass
class StreamingOutputs:
    """What `build_pipeline` exposes for further steps.

    Attributes:
      events: valid, consented, pseudonymised, de-duplicated `Event`s, timestamped with
        event time (global window).
      dead_letters: every `DeadLetter` of the job (parse, too late, inference, and
        rows the warehouse refused), written or not.
      features: feature records (early, on-time and late panes).
      assignments: assignment dicts, one per feature record scored.
      audit: the `run_audit` rows (one per interval); None without a target.
      interval_counts: per interval, the tallies behind each audit row (`AuditCountsFn`
        output: stage names and error codes -> counts); None without a target.
    """

    events: beam.PCollection
    dead_letters: beam.PCollection
    features: Optional[beam.PCollection] = None
    assignments: Optional[beam.PCollection] = None
    audit: Optional[beam.PCollection] = None
    interval_counts: Optional[beam.PCollection] = None


@dataclasses.dataclass
class Ingest:
    """The ingest stages of the streaming job.

    Attributes:
      records: (payload, source) per message read.
      parsed: valid events, before privacy.
      consented: events the privacy step kept (pseudonymised).
      events: `consented` without repeated event ids, timestamped with event time.
      dead_letters: the parse and validation dead letters.
    """

    records: beam.PCollection
    parsed: beam.PCollection
    consented: beam.PCollection
    events: beam.PCollection
    dead_letters: beam.PCollection


def read_prepared_events(p: beam.Pipeline, options: StreamingOptions, id_key: bytes) -> Ingest:
    """Pub/Sub -> unique, consented, pseudonymised events and the parse dead letters."""
    if not options.subscription:
        raise ValueError("--subscription is required")
    records = (
        p
        | "ReadPubSub" >> beam.io.ReadFromPubSub(
            subscription=options.subscription, with_attributes=True,
            timestamp_attribute=options.timestamp_attribute)
        | "ToRecordAndSource" >> beam.Map(lambda message: (message.data, message_source(message)))
    )
    parsed = records | "ParseRecords" >> beam.ParDo(
        _ParseMessageFn(options.validation_config(), bool(options.timestamp_attribute))
    ).with_outputs(ParsedTags.DEAD_LETTERS, main=ParsedTags.EVENTS)
    consented = parsed[ParsedTags.EVENTS] | "Privacy" >> ApplyPrivacy(
        id_key, options.suppression_list, options.consent_default)
    events = consented | "Dedupe" >> DedupeEvents()
    return Ingest(records=records, parsed=parsed[ParsedTags.EVENTS], consented=consented, events=events,
                  dead_letters=parsed[ParsedTags.DEAD_LETTERS])


def build_pipeline(p: beam.Pipeline, options: StreamingOptions, id_key: bytes,
                   target: Optional["BigQueryTarget"] = None, run_id: Optional[str] = None,
                   model_version: Optional[str] = None) -> StreamingOutputs:
    """Builds the streaming graph (exposed for testing).

    Args:
      p: the pipeline (streaming).
      options: the job's options.
      id_key: the pseudonymisation key.
      target: where to write assignments, dead letters and audit rows (build it with
        ``streaming=True``); None builds the graph without writing.
      run_id: written on dead letters and audit rows.
      model_version: written on audit rows.
    """
    from models.inference import AssignSegments
    from transforms.write_bigquery import WriteAssignments, WriteDeadLetters, WriteTable

    ingest = read_prepared_events(p, options, id_key)
    events, parse_dead_letters = ingest.events, ingest.dead_letters
    computed = events | "Features" >> options.feature_transform()
    features = computed[FeatureOutput.FEATURES]
    assigned = features | "AssignSegments" >> AssignSegments(options.model_dir())
    assignments = assigned.assignments  # counted by AssignSegments (ASSIGNMENTS)
    dead_letters = [parse_dead_letters, computed[FeatureOutput.TOO_LATE], assigned.dead_letters]
    if target is not None:
        dead_letters.append(assignments | "WriteAssignments" >> WriteAssignments(target))
    every_dead_letter = tuple(dead_letters) | "AllDeadLetters" >> beam.Flatten()
    audit = None
    if target is not None:
        every_dead_letter | "WriteDeadLetters" >> WriteDeadLetters(target, run_id)
        tallies = (
            ingest.records | "TallyRead" >> beam.Map(_tally(AUDIT_READ)),
            ingest.parsed | "TallyParsed" >> beam.Map(_tally(AUDIT_PARSED)),
            ingest.consented | "TallyConsented" >> beam.Map(_tally(AUDIT_CONSENTED)),
            events | "TallyUnique" >> beam.Map(_tally(AUDIT_UNIQUE)),
            assignments | "TallyAssignments" >> beam.Map(_tally(AUDIT_ASSIGNMENTS)),
            every_dead_letter | "TallyDeadLetters" >> beam.Map(_code_tally),
        ) | "AuditTallies" >> beam.Flatten()
        audited = tallies | "Audit" >> StreamingAudit(
            dt.timedelta(seconds=options.audit_interval_seconds), run_id or "stream", options.subscription,
            model_version)
        interval_counts, audit = audited[AuditOutput.COUNTS.value], audited[AuditOutput.ROWS.value]
        # Refused audit rows are logged by the sink; there is no further table for them.
        audit | "WriteAudit" >> WriteTable(Table.RUN_AUDIT, target)
    else:
        interval_counts = None
    return StreamingOutputs(events=events, dead_letters=every_dead_letter, features=features,
                            assignments=assignments, audit=audit, interval_counts=interval_counts)


def local_runner(options: PipelineOptions) -> None:
    """Pins DirectRunner streaming jobs to the BundleBasedDirectRunner.

    Beam's DirectRunner would first try Prism, which cannot run the Python Pub/Sub
    read; the bundle-based runner overrides `ReadFromPubSub` with a local pull reader
    (and honours ``PUBSUB_EMULATOR_HOST``). Other runners are left alone.
    """
    standard = options.view_as(StandardOptions)
    if standard.runner in (None, "DirectRunner", "SwitchingDirectRunner"):
        standard.runner = "BundleBasedDirectRunner"


def cancel_direct(result: PipelineResult, wake: Callable[[], object],
                  wake_every_s: float = 1.0, timeout_s: float = 120.0) -> None:
    """Cancels a streaming run on the (bundle-based) DirectRunner without a 30 s wait.

    The DirectRunner's Pub/Sub reader blocks in a pull of up to 30 s, and `cancel`
    waits for it. While the cancel runs, `wake` is called every `wake_every_s` seconds
    to end that pull: give it something that publishes one message the pipeline
    ignores, such as ``lambda: publisher.publish_wake_up(topic)`` (a consent-less event,
    counted as filtered). Note the reader acknowledges what it pulls before the
    pipeline processes it: messages pulled while cancelling are not processed.

    Raises:
      TimeoutError: the cancel did not finish within `timeout_s`.
    """
    failure: list[BaseException] = []

    def cancel():
        try:
            result.cancel()
        except BaseException as error:  # re-raised in the caller's thread below
            failure.append(error)

    canceller = threading.Thread(target=cancel, name="CancelDirectRun", daemon=True)
    canceller.start()
    waited = 0.0
    while canceller.is_alive():
        wake()
        canceller.join(wake_every_s)
        waited += wake_every_s
        if waited >= timeout_s and canceller.is_alive():
            raise TimeoutError(f"the DirectRunner did not stop within {timeout_s}s")
    if failure:
        raise failure[0]


def new_run_id() -> str:
    """``stream-<UTC time>-<random>``."""
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"stream-{now}-{uuid.uuid4().hex[:6]}"


def run(argv: Optional[Sequence[str]] = None) -> PipelineResult:
    """Parses flags and starts the streaming job; returns its result (the job keeps running).

    On the DirectRunner the result's `wait_until_finish` blocks until it is cancelled; on
    Dataflow the job runs on until it is drained or cancelled there.
    """
    from models.artifact import load_card

    options = PipelineOptions(argv)
    options.view_as(StandardOptions).streaming = True
    local_runner(options)
    streaming = options.view_as(StreamingOptions)
    if not streaming.subscription:
        raise ValueError("--subscription is required")
    id_key = streaming.pseudonymisation_key()
    card = load_card(streaming.model_dir())  # fail fast on a missing model, before launching
    target = streaming.bigquery_target(streaming=True)
    if target.is_local:
        from pipelines import bq_admin

        bq_admin.setup(target.client(), target.dataset, project=target.project)
    p = beam.Pipeline(options=options)
    build_pipeline(p, streaming, id_key, target, streaming.run_id or new_run_id(), card.get("model_version"))
    return p.run()


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run().wait_until_finish()
