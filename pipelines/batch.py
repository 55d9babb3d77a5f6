"""The main batch job: event files in, segment assignments out.

Run locally (DirectRunner, local warehouse):

    segments run --input 'data/events-*.jsonl' --summary summary.json --demo_key

On Dataflow (see README, "Production"):

    segments run --input 'gs://BUCKET/events/*.avro' --runner DataflowRunner \
        --project PROJECT --region REGION --temp_location gs://BUCKET/tmp ...
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import datetime as dt
import logging
import time
import uuid
from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.transforms.window import GlobalWindows

from models.artifact import load_card
from models.inference import AssignSegments
from pipelines import bq_admin
from pipelines.options import SegmentsOptions, iso_date
from pipelines.summary import RunSummary, counters_of
from transforms.as_of import AsOfMicros
from transforms.bigquery_tables import audit_row
from transforms.features import FeatureOutput
from transforms.outcomes import ASSIGNMENTS
from transforms.privacy import ApplyPrivacy
from transforms.sources import ReadEventFiles
from transforms.write_bigquery import BigQueryTarget, WriteAssignments, WriteDeadLetters, write_audit

LOG = logging.getLogger(__name__)


class BatchOptions(SegmentsOptions):
    """Flags of `segments run` beyond the shared ones."""

    @classmethod
    def _add_argparse_args(cls, parser):
        group = parser.add_argument_group("batch job")
        # Not argparse-required: Beam re-parses options internally without our flags,
        # which would then exit. `run` and the CLI insist on it instead.
        group.add_argument(
            "--input", action="append", default=None,
            help="(Required) Event files: a path, glob or gs:// pattern; JSON lines, or Avro when it ends in .avro. "
                 "Repeatable.")
        group.add_argument(
            "--summary", default=None,
            help="Write the run summary (JSON) to this path. Default: console only.")
        group.add_argument(
            "--as_of", type=iso_date, default=None,
            help="Assign windows that end by this UTC date (midnight) only; later windows describe a future the "
                 "data has not seen. Default: the midnight after the latest event.")
        group.add_argument(
            "--run_id", default=None,
            help="Identifier of this run in dead_letters and run_audit. Default: batch-<UTC time>-<random>.")


@dataclasses.dataclass
class BatchOutputs:
    events: beam.PCollection  # valid, consented, pseudonymised; duplicates still in (features drop them)
    features: beam.PCollection
    assignments: beam.PCollection
    dead_letters: beam.PCollection  # every dead letter of the run, written or not


def read_consented_events(p: beam.Pipeline, options, id_key: bytes) -> tuple[beam.PCollection, beam.PCollection]:
    """Files -> validated, consented, pseudonymised events (+ their dead letters).

    Duplicates are still in: `ComputeUserFeatures(deduplicate=True)` drops them inside
    its per-user grouping, which saves a shuffle of every event on its id.
    """
    parsed = p | "ReadEvents" >> ReadEventFiles(options.input, options.validation_config())
    events = parsed.events | "Privacy" >> ApplyPrivacy(id_key, options.suppression_list, options.consent_default)
    return events, parsed.dead_letters


def build_pipeline(p: beam.Pipeline, options: BatchOptions, id_key: bytes,
                   target: Optional[BigQueryTarget] = None, run_id: Optional[str] = None) -> BatchOutputs:
    """Builds the batch graph (exposed for testing).

    Args:
      p: the pipeline.
      options: the job's options.
      id_key: the pseudonymisation key.
      target: where to write the tables; None builds the graph without writing.
      run_id: written on dead letters.
    """
    events, parse_dead_letters = read_consented_events(p, options, id_key)
    as_of_us = events | "AsOf" >> AsOfMicros(options.as_of)
    computed = events | "Features" >> options.feature_transform(ends_by=as_of_us, deduplicate=True)
    features = computed[FeatureOutput.FEATURES]
    assigned = features | "AssignSegments" >> AssignSegments(options.model_dir())
    assignments = assigned.assignments  # counted by AssignSegments (ASSIGNMENTS)
    dead_letters = [parse_dead_letters, computed[FeatureOutput.TOO_LATE], assigned.dead_letters]
    if target is not None:
        dead_letters.append(assignments | "WriteAssignments" >> WriteAssignments(target))
    every_dead_letter = (
        [letters | f"DeadLettersGlobal{i}" >> beam.WindowInto(GlobalWindows()) for i, letters in enumerate(dead_letters)]
        | "AllDeadLetters" >> beam.Flatten())
    if target is not None:
        every_dead_letter | "WriteDeadLetters" >> WriteDeadLetters(target, run_id)
    return BatchOutputs(events=events, features=features, assignments=assignments, dead_letters=every_dead_letter)


def _error_of(task: Optional[concurrent.futures.Future]) -> Optional[str]:
    """What a finished background task raised, as text (None: no task, or it succeeded)."""
    error = None if task is None else task.exception()
    return None if error is None else f"{type(error).__name__}: {error}"


def new_run_id(mode: str = "batch") -> str:
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{mode}-{now}-{uuid.uuid4().hex[:6]}"


def run(argv: Optional[Sequence[str]] = None) -> RunSummary:
    """Parses flags, runs the job to completion, writes the audit row; returns the summary.

    The caller decides what an unreconciled summary means (`RunSummary.check`).
    """
    options = PipelineOptions(argv)
    batch = options.view_as(BatchOptions)
    if not batch.input:
        raise ValueError("--input is required")
    id_key = batch.pseudonymisation_key()
    card = load_card(batch.model_dir())  # fail fast on a missing or unreadable model, before any work
    run_id = batch.run_id or new_run_id()
    target = batch.bigquery_target()
    started_us = time.time_ns() // 1000
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="views") as background:
        views = None
        if target.is_local:
            bq_admin.create_tables(target.client(), target.dataset, project=target.project)
            # The job never reads the analyst views: they are made while it runs (seconds on
            # the local warehouse, which works on the other core).
            views = background.submit(bq_admin.create_views, target.client(), target.dataset, target.project)
        with beam.Pipeline(options=options) as p:
            build_pipeline(p, batch, id_key, target, run_id)
        views_error = _error_of(views)
    counters = counters_of(p.result)
    summary = RunSummary.from_counters(counters, extra={
        "run_id": run_id, "input": list(batch.input), "assignments": int(counters.get(ASSIGNMENTS, 0)),
        "model": batch.model_dir(), "tables": f"{target.project}.{target.dataset}",
    })
    if views_error:  # the run itself succeeded: say so, keep the summary
        LOG.error("could not create the analyst views: %s", views_error)
        summary.extra["views_error"] = views_error
    audit = dict(summary.to_json(), dead_lettered={**summary.dead_lettered, **summary.rows_dead_lettered})
    try:
        write_audit(target.client(), target.project, target.dataset, audit_row(
            audit, run_id=run_id, mode="batch", input=",".join(batch.input), started_at_us=started_us,
            finished_at_us=time.time_ns() // 1000, model_version=card["model_version"]))
    except Exception as error:  # the run itself succeeded: say so, keep the summary
        LOG.error("could not write the run_audit row: %s", error)
        summary.extra["audit_error"] = str(error)
    if batch.summary:
        summary.write(batch.summary)
    return summary


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run().check()
