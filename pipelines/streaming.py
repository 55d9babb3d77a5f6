"""The streaming job: JSON events from a Pub/Sub subscription, judged like batch input.

Every message goes through the same parse/validate step as a line of a batch file
(`transforms.ingest.messages`), then the same privacy step, then one stateful step per
user (`transforms.features.streaming_profiles`): the dedupe on (user, ``event_id``), the
user's profile, updated ``--early_firing_seconds`` after their events and re-scored at
every midnight of event time (silent users included; events more than
``--allowed_lateness_hours`` behind that clock are dead-lettered as ``too_late``), and the
shared tail (`pipelines.graph`): scoring, segment changes (a small keyed step after
scoring, `transforms.changes`: to ``segment_changes`` and, with ``--changes_topic``, one
JSON message per change on Pub/Sub), dead letters and writes. A message carries one
event or a batch of newline-delimited events (`transforms.ingest.messages`). Audit rows
per processing-time interval: `transforms.audit`.

Run locally against the Pub/Sub emulator (``segments stream --local`` does it all)::

    PUBSUB_EMULATOR_HOST=127.0.0.1:8085 python -m pipelines.streaming \\
        --subscription projects/segments-local/subscriptions/events-sub --demo_key \\
        --changes_topic projects/segments-local/topics/segment-changes

On Dataflow::

    python -m pipelines.streaming --runner DataflowRunner --project PROJECT \\
        --region REGION --temp_location gs://BUCKET/tmp --warehouse bigquery \\
        --subscription projects/PROJECT/subscriptions/events-sub \\
        --changes_topic projects/PROJECT/topics/segment-changes \\
        --id_key_file gs://BUCKET/secrets/id_key
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import re
from typing import NamedTuple, Optional, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult

from models.drift import DriftMonitor
from models.serving import ServingModel, serving_model
from pipelines.graph import JobOutputs, segment_and_write
from pipelines.flags import positive_int
from pipelines.options import SegmentsOptions
from transforms.audit import (AUDIT_ASSIGNMENTS, AUDIT_CHANGES, AUDIT_CONSENTED, AUDIT_PARSED, AUDIT_READ,
                              StreamingAudit, code_tally, filter_tally, tally)
from transforms.bigquery import admin
from transforms.bigquery.client import BigQueryTarget
from transforms.bigquery.tables import Table
from transforms.bigquery.write import WriteTable
from transforms.contracts.feature_spec import FEATURE_VERSION
from transforms.drift import TallyFeatureBins
from transforms.features.snapshots import ReadSeeds, latest_snapshot
from transforms.ingest.messages import Messages, read_event_messages
from transforms.ingest.privacy import ApplyPrivacy

LOG = logging.getLogger(__name__)

_SUBSCRIPTION = re.compile(r"^projects/[^/]+/subscriptions/[^/]+$")
_TOPIC = re.compile(r"^projects/[^/]+/topics/[^/]+$")


def subscription_path(text: str) -> str:
    """argparse type: a full subscription path, ``projects/P/subscriptions/S``."""
    if not _SUBSCRIPTION.match(text):
        raise argparse.ArgumentTypeError(f"expected projects/PROJECT/subscriptions/NAME, got {text!r}")
    return text


def topic_path(text: str) -> str:
    """argparse type: a full topic path, ``projects/P/topics/T``."""
    if not _TOPIC.match(text):
        raise argparse.ArgumentTypeError(f"expected projects/PROJECT/topics/NAME, got {text!r}")
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
            "--changes_topic", type=topic_path, default=None,
            help="Publish every segment change (entered, moved, named RFM segment changed) as one JSON message to "
                 "this Pub/Sub topic, projects/PROJECT/topics/NAME. Changes go to the segment_changes table "
                 "either way. Default: none (no messages).")


class Ingest(NamedTuple):
    """The ingest stages of the streaming job."""

    messages: Messages  # what was read, and it judged
    events: beam.PCollection  # valid, consented, pseudonymised events; duplicates still in
    filtered: beam.PCollection  # the `FilterReason` of each valid event kept out by privacy


def read_events(p: beam.Pipeline, options: StreamingOptions, id_key: bytes) -> Ingest:
    """Pub/Sub -> consented, pseudonymised events (and the parse dead letters)."""
    if not options.subscription:
        raise ValueError("--subscription is required")
    messages = read_event_messages(p, options.subscription, options.validation_config(), options.timestamp_attribute,
                                   count_read_as=AUDIT_READ)
    privacy = messages.parsed.events | "Privacy" >> ApplyPrivacy(
        id_key, options.suppression_list, options.consent_default)
    return Ingest(messages, privacy.events, privacy.filtered)


def build_pipeline(p: beam.Pipeline, options: StreamingOptions, id_key: bytes, model: ServingModel,
                   target: Optional[BigQueryTarget] = None, run_id: Optional[str] = None,
                   drift: Optional[DriftMonitor] = None) -> JobOutputs:
    """Builds the streaming graph (exposed for testing).

    Args:
      p: the pipeline (streaming).
      options: the job's options.
      id_key: the pseudonymisation key.
      model: the verified model (`models.serving.serving_model`): it scores and explains the
        segment changes; its version is written on audit rows.
      target: where to write assignments, dead letters and audit rows (build it with
        ``streaming=True``); None builds the graph without writing.
      run_id: written on dead letters and audit rows.
      drift: the model's training bins (`models.drift.DriftMonitor.from_card`): each audit row
        records the PSI of the interval's midnight re-scorings; None records none.
    """
    messages, events, filtered = read_events(p, options, id_key)
    seeds, seeded_as_of_us = None, None
    if options.snapshot_dir:
        latest = latest_snapshot(options.snapshot_dir)
        if latest is None:
            LOG.warning("no profile snapshot of feature version %s under %s: starting with empty profiles",
                        FEATURE_VERSION, options.snapshot_dir)
        else:
            pattern, seeded_as_of_us = latest
            LOG.info("starting from the profile snapshot %s", pattern)
            seeds = p | "ReadSnapshot" >> ReadSeeds(pattern, id_key, options.suppression_list)
    # One stateful step per user: the dedupe, sessions, the profile and its re-scoring,
    # each user's state seeded from the snapshot first when there is one.
    profiles = events | "Profiles" >> options.profile_transform(seeds=seeds, seeded_as_of_us=seeded_as_of_us)
    segmented = segment_and_write(profiles.features, model, [messages.parsed.dead_letters, profiles.too_late],
                                  target, run_id, options.changes_topic, seeded=seeds is not None)
    if target is None:
        return JobOutputs(events, profiles.features, segmented.assignments, segmented.dead_letters,
                          changes=segmented.changes)
    # Counted per bundle (`transforms.audit.TallyPerBundle`), not per element.
    tallies = (
        messages.read_tallies,  # records read, counted by the parse step
        messages.parsed.events | "TallyParsed" >> beam.ParDo(tally(AUDIT_PARSED)),
        events | "TallyConsented" >> beam.ParDo(tally(AUDIT_CONSENTED)),
        filtered | "TallyFiltered" >> beam.ParDo(filter_tally()),
        profiles.tallies,  # unique events and duplicates, counted by the profile step
        segmented.assignments | "TallyAssignments" >> beam.ParDo(tally(AUDIT_ASSIGNMENTS)),
        segmented.changes | "TallyChanges" >> beam.ParDo(tally(AUDIT_CHANGES)),
        segmented.dead_letters | "TallyDeadLetters" >> beam.ParDo(code_tally()),
    )
    if drift is not None:  # the midnight re-scorings counted into the training bins, per bundle too
        tallies += (segmented.assignments | "TallyDrift" >> beam.ParDo(TallyFeatureBins(drift.edges)),)
    tallies = tallies | "AuditTallies" >> beam.Flatten()
    audited = tallies | "Audit" >> StreamingAudit(
        dt.timedelta(seconds=options.audit_interval_seconds), run_id or "stream", options.subscription,
        model.card["model_version"], drift)
    # Refused audit rows are logged by the sink; there is no further table for them.
    audited.rows | "WriteAudit" >> WriteTable(Table.RUN_AUDIT, target)
    return JobOutputs(events, profiles.features, segmented.assignments, segmented.dead_letters,
                      audit=audited.rows, interval_counts=audited.counts, changes=segmented.changes)


def local_runner(options: PipelineOptions) -> None:
    """Pins DirectRunner streaming jobs to the BundleBasedDirectRunner.

    Beam's DirectRunner would first try Prism, which cannot run the Python Pub/Sub
    read; the bundle-based runner overrides `ReadFromPubSub` with a local pull reader
    (and honours ``PUBSUB_EMULATOR_HOST``). Other runners are left alone.
    """
    standard = options.view_as(StandardOptions)
    if standard.runner in (None, "DirectRunner", "SwitchingDirectRunner"):
        standard.runner = "BundleBasedDirectRunner"


def run(argv: Optional[Sequence[str]] = None) -> PipelineResult:
    """Parses flags and starts the streaming job; returns its result (the job keeps running).

    On the DirectRunner the result's `wait_until_finish` blocks until it is cancelled; on
    Dataflow the job runs on until it is drained or cancelled there.
    """
    options = PipelineOptions(argv)
    options.view_as(StandardOptions).streaming = True
    local_runner(options)
    streaming = options.view_as(StreamingOptions)
    if not streaming.subscription:
        raise ValueError("--subscription is required")
    id_key = streaming.pseudonymisation_key()
    # Fail fast on a missing, tampered or unpinned model, before launching.
    model = serving_model(streaming.model_dir(), expected_sha256=streaming.model_sha256)
    target = streaming.bigquery_target(streaming=True)
    if target.is_local:
        admin.setup(target.client(), target.dataset, project=target.project)
    p = beam.Pipeline(options=options)
    build_pipeline(p, streaming, id_key, model, target, streaming.resolved_run_id("stream"),
                   drift=DriftMonitor.from_card(model.card))
    return p.run()


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run().wait_until_finish()
