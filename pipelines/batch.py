"""The main batch job: event files in, segment assignments out.

Run locally (DirectRunner, local warehouse):

    segments run --input 'data/events-*.jsonl' --summary summary.json --demo_key

On Dataflow (see README, "Production"):

    segments run --input 'gs://BUCKET/events/*.avro' --runner DataflowRunner \
        --project PROJECT --region REGION --temp_location gs://BUCKET/tmp ...
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import functools
import json
import logging
import os
import threading
import time
from typing import Mapping, Optional, Sequence

import apache_beam as beam
from apache_beam.io.filesystems import FileSystems
from apache_beam.options.pipeline_options import PipelineOptions, TestOptions
from apache_beam.runners.runner import PipelineResult, PipelineState

from models.drift import DriftMonitor
from models.serving import ServingModel, serving_model
from pipelines.graph import JobOutputs, segment_and_write
from pipelines.flags import int_in, iso_date
from pipelines.options import MAX_DAYS, ConfigError, FileInputOptions, check_inputs, check_output_file
from pipelines.summary import RunSummary, counters_of
from transforms.bigquery import admin, loads
from transforms.bigquery.client import BigQueryTarget
from transforms.bigquery.loads import WarehouseUnreachable, check_reachable, sweep_staging, write_audit, write_errors
from transforms.bigquery.rows import audit_row
from transforms.contracts.outcomes import ASSIGNMENTS, first_line
from transforms.drift import DRIFT_ROWS, CountFeatureBins, bin_counts
from transforms.features.as_of import AsOfMicros, midnight_us
from transforms.features.snapshots import WriteProfileSnapshot
from transforms.ingest.files import ReadEventFiles
from transforms.ingest.privacy import ApplyPrivacy, IdKeyRef, read_user_ids

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
            "--history_days", type=int_in(0, MAX_DAYS), default=0,
            help="Also score every user as of each of this many midnights before --as_of (a backfill of daily "
                 "history). Default: 0.")


def build_pipeline(p: beam.Pipeline, options: BatchOptions, id_key: bytes, model: ServingModel,
                   target: Optional[BigQueryTarget] = None, run_id: Optional[str] = None,
                   drift_edges: Optional[Mapping[str, Sequence[float]]] = None) -> JobOutputs:
    """Builds the batch graph (exposed for testing).

    Duplicates are dropped inside the profile step's per-user grouping (the dedupe
    contract of `transforms.ingest.dedupe`), which saves a shuffle of every event on its id.

    Args:
      p: the pipeline.
      options: the job's options.
      id_key: the pseudonymisation key.
      model: the verified model (`models.serving.serving_model`): it scores, and explains the
        segment changes between consecutive score dates of a user within the run, and
        "entered" at the user's first scored date of the run (`transforms.changes`).
      target: where to write the tables; None builds the graph without writing.
      run_id: written on dead letters.
      drift_edges: the model's training bins per feature (`models.drift.DriftMonitor.edges`): the
        rows scored as of the run's as-of time are counted into them (counters ``drift.*``,
        `transforms.drift`); None counts nothing.
    """
    parsed = p | "ReadEvents" >> ReadEventFiles(options.input, options.validation_config())
    events = (parsed.events
              | "Privacy" >> ApplyPrivacy(id_key, options.suppression_list, options.consent_default)).events
    if options.snapshot_dir and options.as_of is None:
        raise ValueError("--snapshot_dir needs --as_of: the midnight the snapshot is as of")
    as_of_us = events | "AsOf" >> AsOfMicros(options.as_of)
    profiles = events | "Profiles" >> options.profile_transform(as_of_us, options.history_days,
                                                                snapshot=bool(options.snapshot_dir))
    if options.snapshot_dir:  # every user's profile as of --as_of, to start a streaming job from
        profiles.profiles | "WriteSnapshot" >> WriteProfileSnapshot(options.snapshot_dir, midnight_us(options.as_of))
    segmented = segment_and_write(profiles.features, model, [parsed.dead_letters, profiles.too_late],
                                  target, run_id)
    if drift_edges:
        segmented.assignments | "DriftBins" >> CountFeatureBins(drift_edges, as_of_us)
    return JobOutputs(events, profiles.features, segmented.assignments, segmented.dead_letters,
                      changes=segmented.changes)


def _error_of(task: Optional[concurrent.futures.Future]) -> Optional[str]:
    """What a finished background task raised, as text (None: no task, or it succeeded)."""
    error = None if task is None else task.exception()
    return None if error is None else f"{type(error).__name__}: {error}"


class RunInterrupted(KeyboardInterrupt):
    """The run was stopped with Ctrl-C (SIGINT); its staging tables were dropped.

    The pipeline may still be running on a thread of this process (the local runner
    cannot be stopped from outside): the caller should end the process.
    """


class JobFailed(RuntimeError):
    """The pipeline itself failed; one line of why, and what was done about it."""


def _run_interruptibly(p: beam.Pipeline) -> PipelineResult:
    """Runs `p` to completion on a thread, so that Ctrl-C reaches this (main) thread.

    The local runner runs the pipeline in the calling thread and turns a KeyboardInterrupt
    raised inside a DoFn into a failed bundle that it retries: a Ctrl-C there is lost.

    Raises:
      KeyboardInterrupt: Ctrl-C; a job on a remote runner is cancelled first.
      Exception: what the pipeline raised.
    """
    box: dict = {}
    done = threading.Event()

    def work():
        try:
            box["result"] = p.run()
            box["result"].wait_until_finish()
        except BaseException as error:  # noqa: BLE001 - handed to the main thread
            box["error"] = error
        finally:
            done.set()

    threading.Thread(target=work, name="pipeline", daemon=True).start()
    try:
        while not done.wait(0.5):
            pass
    except KeyboardInterrupt:
        # The local job's thread is abandoned: its bundles now fail as the loads stop, and
        # Beam would log a traceback for each, burying the one line the user gets.
        logging.getLogger("apache_beam").setLevel(logging.CRITICAL)
        result = box.get("result")
        if result is not None and result.state not in (PipelineState.DONE, PipelineState.FAILED):
            with contextlib.suppress(Exception):
                result.cancel()  # a Dataflow job: stop it there too
        raise
    if "error" in box:
        raise box["error"]
    return box["result"]


def _sweep_killed_runs(target: BigQueryTarget, run_id: str) -> Optional[str]:
    """Drops the staging tables of runs that ended without cleaning up, with an audit row for each."""
    client = target.client()
    try:
        swept = sweep_staging(client, target.project, target.dataset)
        now_us = time.time_ns() // 1000
        for killed, tables in swept.tables.items():
            detail = (f"ended without finishing (its process is gone): {len(tables)} staging table(s) with "
                      f"{swept.rows[killed]:,} rows were never merged and were dropped by run {run_id}")
            LOG.warning("run %s %s", killed, detail)
            if killed != "unknown":
                with contextlib.suppress(Exception):
                    write_audit(client, target.project, target.dataset, audit_row(
                        {}, run_id=killed, mode="batch", finished_at_us=now_us, status="killed", detail=detail))
        return f"dropped {swept.count} staging table(s) of ended runs" if swept.count else None
    finally:
        client.close()


def _keep_audit_row(row: dict, fallback_dir: Optional[str]) -> Optional[str]:
    """Writes the audit row to the fallback folder; returns the path (None when it could not)."""
    if not fallback_dir:
        return None
    path = FileSystems.join(fallback_dir, "run_audit.json")
    try:
        if "://" not in path:
            os.makedirs(fallback_dir, exist_ok=True)
        with FileSystems.create(path) as handle:
            handle.write(json.dumps(row, sort_keys=True).encode("utf-8") + b"\n")
        return path
    except Exception as error:  # noqa: BLE001 - reported by the caller
        LOG.error("could not keep the run_audit row in %s: %s", path, error)
        return None


def _write_audit_row(target: BigQueryTarget, row: dict) -> Optional[str]:
    """Appends the run's audit row; on failure keeps it in the fallback folder. Returns an error or None."""
    try:
        client = target.client()
        try:
            write_audit(client, target.project, target.dataset, row)
        finally:
            client.close()
        return None
    except Exception as error:  # noqa: BLE001 - the run itself is reported apart: say so, keep the row
        kept = _keep_audit_row(row, target.fallback_dir)
        LOG.error("could not write the run_audit row: %s%s", first_line(error), f"; kept in {kept}" if kept else "")
        return f"{first_line(error)}" + (f" (kept in {kept})" if kept else "")


def prepare(batch: "BatchOptions") -> tuple[IdKeyRef, ServingModel]:
    """Every check that can fail before any work, in the order a user can fix them.

    Returns:
      (key reference, the verified model pinned to its digest).

    Raises:
      ConfigError, MissingIdKey, SuppressionListError, FileNotFoundError, ArtifactError.
    """
    if not batch.input:
        raise ConfigError("--input is required")
    check_output_file(batch.summary, "--summary")
    check_inputs(batch.input)
    key = batch.id_key_ref()
    if batch.suppression_list:
        read_user_ids(batch.suppression_list, "--suppression_list")
    # Verifies the digest (and --model_sha256), the card, and the clusters against the card.
    return key, serving_model(batch.model_dir(), expected_sha256=batch.model_sha256)


def run(argv: Optional[Sequence[str]] = None) -> RunSummary:
    """Checks everything it can, runs the job, reconciles what was written; returns the summary.

    Before any work: the flags, the inputs, the key, the suppression list, the model
    (`prepare`), and that the warehouse answers. Then the staging tables of runs that
    ended without cleaning up are dropped (with a ``killed`` audit row each), the job
    runs, and one ``run_audit`` row records the counts, the writes and the status.

    The caller decides what an incomplete summary means (`RunSummary.check`).

    Raises:
      RunInterrupted: Ctrl-C; this run's staging tables are dropped and its audit row says so.
      JobFailed: the pipeline failed; the audit row says so.
    """
    options = PipelineOptions(argv)
    batch = options.view_as(BatchOptions)
    key, model = prepare(batch)
    card = model.card
    run_id = batch.resolved_run_id("batch")
    target = batch.bigquery_target(run_id=run_id)
    monitor = DriftMonitor.from_card(card)  # None: a card without a training distribution
    edges = monitor.edges if monitor else None
    if _dry_run(options):  # the runner builds the job and submits nothing: neither do we
        p = beam.Pipeline(options=options)
        build_pipeline(p, batch, key, model, target, run_id, drift_edges=edges)
        p.run()
        return RunSummary.from_counters({}, extra={"run_id": run_id, "dry_run": True})
    started_us = time.time_ns() // 1000
    client = _reachable_client(target)
    try:
        if target.is_local:
            admin.create_tables(client, target.dataset, project=target.project)
    finally:
        client.close()
    swept = _sweep_killed_runs(target, run_id)
    if swept:
        LOG.warning("%s", swept)
    audit = functools.partial(audit_row, run_id=run_id, mode="batch", input=",".join(batch.input),
                              started_at_us=started_us, model_version=card["model_version"],
                              fallback=target.fallback_dir)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="views") as background:
        views = None
        if target.is_local:
            # The job never reads the analyst views: they are made while it runs (seconds on
            # the local warehouse, which works on the other core).
            views = background.submit(admin.create_views, target.client(), target.dataset, target.project)
        p = beam.Pipeline(options=options)
        build_pipeline(p, batch, key, model, target, run_id, drift_edges=edges)
        try:
            result = _run_interruptibly(p)
        except KeyboardInterrupt:
            loads.STOPPING.set()  # this process's loads make no more staging tables
            detail = _clean_up_after(target, run_id, "interrupted (Ctrl-C)")
            _write_audit_row(target, audit({}, finished_at_us=time.time_ns() // 1000, status="interrupted",
                                           detail=detail))
            _clean_up_after(target, run_id, "")  # a load that was making its table as we swept
            raise RunInterrupted(detail) from None
        except Exception as error:  # noqa: BLE001 - recorded, then raised as one line
            detail = _clean_up_after(target, run_id, f"failed: {first_line(error)}")
            _write_audit_row(target, audit({}, finished_at_us=time.time_ns() // 1000, status="failed",
                                           detail=detail))
            raise JobFailed(detail) from error
        views_error = _error_of(views)
    counters = counters_of(result)
    summary = RunSummary.from_counters(counters, extra={
        "run_id": run_id, "input": list(batch.input), "assignments": int(counters.get(ASSIGNMENTS, 0)),
        "model": batch.model_dir(), "model_version": card["model_version"],
        "tables": f"{target.project}.{target.dataset}",
    }, with_writes=True, fallback=target.fallback_dir)
    drift = monitor.audit_fields(bin_counts(counters, edges), int(counters.get(DRIFT_ROWS, 0))) if monitor else None
    if drift is not None:
        summary.extra["drift"] = drift
    if views_error:  # the run itself succeeded: say so, keep the summary
        LOG.error("could not create the analyst views: %s", views_error)
        summary.extra["views_error"] = views_error
    detail = None if summary.complete else summary.writes_line()
    row = audit(dict(summary.to_json(), dead_lettered={**summary.dead_lettered, **summary.rows_dead_lettered}),
                finished_at_us=time.time_ns() // 1000, status=summary.status, detail=detail,
                writes={table: {"produced": w.produced, "written": w.written, "dead_lettered": w.dead_lettered,
                                "kept_in_fallback": w.kept_in_fallback} for table, w in summary.writes.items()},
                drift=drift)
    audit_error = _write_audit_row(target, row)
    if audit_error:
        summary.extra["audit_error"] = audit_error
    if batch.summary:
        summary.write(batch.summary)
    return summary


def _dry_run(options: PipelineOptions) -> bool:
    flag = options.view_as(TestOptions).dry_run
    return str(flag).lower() not in ("", "false", "0", "none")


def _reachable_client(target: BigQueryTarget):
    """A client of the target that has answered once (see `check_reachable`).

    Raises:
      WarehouseUnreachable: no client (no credentials), or no answer within about 20 s.
    """
    try:
        client = target.client()
    except write_errors() as error:
        raise WarehouseUnreachable(f"cannot reach BigQuery (project {target.project}): {first_line(error)}") from None
    try:
        check_reachable(client, target.project, target.dataset)
    except BaseException:
        client.close()
        raise
    return client


def _clean_up_after(target: BigQueryTarget, run_id: str, what: str) -> str:
    """Drops the run's own staging tables (never ones a failed MERGE kept); returns one line for the audit."""
    try:
        client = target.client()
        try:
            swept = sweep_staging(client, target.project, target.dataset, run_id=run_id)
        finally:
            client.close()
        return f"{what}; dropped {swept.count} staging table(s) with {sum(swept.rows.values()):,} unmerged rows"
    except Exception as error:  # noqa: BLE001 - the next run sweeps them
        return f"{what}; could not drop the staging tables now ({first_line(error)}): the next run will"


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run().check()
