"""The main batch job: event files in, segment assignments out.

Run locally (DirectRunner, local warehouse):

    segments run --input 'data/events-*.jsonl' --summary summary.json --demo_key

On Dataflow (see README, "Production"):

    segments run --input 'gs://BUCKET/events/*.avro' --runner DataflowRunner \
        --project PROJECT --region REGION --temp_location gs://BUCKET/tmp ...
"""

from __future__ import annotations

import concurrent.futures
import logging
import time
from typing import Optional, Sequence

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler
from apache_beam.options.pipeline_options import PipelineOptions

from models.artifact import load_card
from models.explain import change_explainer
from models.handler import assignment_handler
from pipelines.graph import JobOutputs, segment_and_write
from pipelines.options import FileInputOptions, iso_date, non_negative_int
from pipelines.summary import RunSummary, counters_of
from transforms.bigquery import admin
from transforms.bigquery.client import BigQueryTarget
from transforms.bigquery.loads import write_audit
from transforms.bigquery.rows import audit_row
from transforms.changes import ExplainerLoader
from transforms.contracts.outcomes import ASSIGNMENTS
from transforms.features.as_of import AsOfMicros
from transforms.ingest.files import ReadEventFiles
from transforms.ingest.privacy import ApplyPrivacy

LOG = logging.getLogger(__name__)


class BatchOptions(FileInputOptions):
    """Flags of `segments run` beyond the shared ones."""

    @classmethod
    def _add_argparse_args(cls, parser):
        group = parser.add_argument_group("batch job")
        group.add_argument(
            "--summary", default=None,
            help="Write the run summary (JSON) to this path. Default: console only.")
        group.add_argument(
            "--as_of", type=iso_date, default=None,
            help="Score every known user as of this UTC date (midnight): events from it on are not read. "
                 "Default: the midnight after the latest event.")
        group.add_argument(
            "--history_days", type=non_negative_int, default=0,
            help="Also score every user as of each of this many midnights before --as_of (a backfill of daily "
                 "history). Default: 0.")


def build_pipeline(p: beam.Pipeline, options: BatchOptions, id_key: bytes, handler: ModelHandler,
                   target: Optional[BigQueryTarget] = None, run_id: Optional[str] = None,
                   explainer: Optional[ExplainerLoader] = None) -> JobOutputs:
    """Builds the batch graph (exposed for testing).

    Duplicates are dropped inside the profile step's per-user grouping (the dedupe
    contract of `transforms.ingest.dedupe`), which saves a shuffle of every event on its id.

    Args:
      p: the pipeline.
      options: the job's options.
      id_key: the pseudonymisation key.
      handler: the model (`models.handler.assignment_handler`).
      target: where to write the tables; None builds the graph without writing.
      run_id: written on dead letters.
      explainer: explains segment changes; default: the model of ``--model``. The changes
        are those between consecutive score dates of a user within the run, and
        "entered" at the user's first scored date of the run (`transforms.changes`).
    """
    parsed = p | "ReadEvents" >> ReadEventFiles(options.input, options.validation_config())
    events = parsed.events | "Privacy" >> ApplyPrivacy(id_key, options.suppression_list, options.consent_default)
    as_of_us = events | "AsOf" >> AsOfMicros(options.as_of)
    profiles = events | "Profiles" >> options.profile_transform(as_of_us, options.history_days)
    segmented = segment_and_write(profiles.features, handler, [parsed.dead_letters, profiles.too_late],
                                  target, run_id, explainer or change_explainer(options.model_dir()))
    return JobOutputs(events, profiles.features, segmented.assignments, segmented.dead_letters,
                      changes=segmented.changes)


def _error_of(task: Optional[concurrent.futures.Future]) -> Optional[str]:
    """What a finished background task raised, as text (None: no task, or it succeeded)."""
    error = None if task is None else task.exception()
    return None if error is None else f"{type(error).__name__}: {error}"


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
    run_id = batch.resolved_run_id("batch")
    target = batch.bigquery_target()
    started_us = time.time_ns() // 1000
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="views") as background:
        views = None
        if target.is_local:
            admin.create_tables(target.client(), target.dataset, project=target.project)
            # The job never reads the analyst views: they are made while it runs (seconds on
            # the local warehouse, which works on the other core).
            views = background.submit(admin.create_views, target.client(), target.dataset, target.project)
        with beam.Pipeline(options=options) as p:
            build_pipeline(p, batch, id_key, assignment_handler(batch.model_dir()), target, run_id)
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
