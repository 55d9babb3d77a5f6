"""Writing rows to the warehouse tables: `WriteTable` and the two paths behind it.

Both paths share the schemas (`transforms.bigquery.tables`), the row conversion and
validation (`transforms.bigquery.rows`) and the MERGE statement (`transforms.bigquery.merge`):

* **Production** (``BigQueryTarget.endpoint is None``): Beam's ``WriteToBigQuery``.

  - Batch: ``FILE_LOADS`` into a per-run staging table (``WRITE_TRUNCATE``), then one
    ``MERGE`` into ``segment_assignments`` on ``row_key``. Load jobs are free, atomic per
    table and need no streaming buffer; the MERGE makes reruns idempotent.
  - Streaming: ``STREAMING_INSERTS`` with ``WRITE_APPEND``. Beam's Python
    ``STORAGE_WRITE_API`` is a cross-language transform: building the pipeline needs a
    Java expansion service jar fetched from Maven, which breaks the offline
    ``DataflowRunner --dry_run`` build and adds a JVM to the launcher. Streaming inserts
    are pure Python, give per-row errors (``failed_rows_with_errors``, routed to the
    dead letters) and best-effort de-duplication by insert id. Successive scorings of a
    user's day share a ``row_key``; the views pick the latest.
  - Tables are created if needed from the schema constants, with partitioning and
    clustering passed as ``additional_bq_parameters`` (``transforms.bigquery.admin.setup``
    creates them ahead of time in the normal flow).

* **Local** (``BigQueryTarget.endpoint`` set): `transforms.bigquery.local_sink`.

Idempotent, authoritative reruns: ``row_key = sha256(user_key, score_date, model_version)``.
The MERGE inserts unseen keys and replaces an existing row with a later scoring, or with
one as of the same time whose content differs (`transforms.bigquery.merge`), so writing
the same assignments again changes nothing, ``assigned_at`` included, while a rerun over
corrected input replaces the days it recomputed.

Every row is counted (``bigquery.<table>.rows``, ``loaded``, ``rejected``,
``load_failed``, ``fallback``: `transforms.contracts.outcomes.WriteCount`) and validated
against its schema first. A row that fails validation, that BigQuery refuses, or whose
load fails after its retries is `Refused`: assignments become ``DeadLetter``s
(``ErrorCode.ROW_REJECTED``, ``Stage.WRITE``, the row as JSON) in the composite's output,
for the caller to write to ``dead_letters``; refused dead letters and audit rows, which
have no table left to go to, are kept as JSON lines in the target's fallback folder. The
run summary (`pipelines.summary`) reconciles these counts.

Usage::

    target = BigQueryTarget(project="my-proj", dataset="segments")              # Dataflow
    target = BigQueryTarget.local("http://127.0.0.1:9050", "segments-local", "segments")
    rejected = assignments | "WriteAssignments" >> WriteAssignments(target)
    (parse_dead_letters, rejected) | beam.Flatten() | "WriteDeadLetters" >> WriteDeadLetters(target, run_id)
"""

from __future__ import annotations

import enum
import functools
import json
import logging
import time
import uuid
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional

import apache_beam as beam
import orjson
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.gcp.bigquery import BigQueryDisposition, WriteToBigQuery
from apache_beam.io.gcp.bigquery_tools import RetryStrategy
from apache_beam.transforms import window

from transforms.bigquery.client import BigQueryTarget
from transforms.bigquery.loads import merge_staging
from transforms.bigquery.local_sink import LocalSink, Refused
from transforms.bigquery.rows import (assignment_row, change_row, dead_letter_row, rejected_row_dead_letter,
                                      validate_row)
from transforms.bigquery.tables import TABLES, Table, TableSpec, additional_bq_parameters, beam_schema
from transforms.contracts import outcomes
from transforms.contracts.outcomes import DeadLetter, ErrorCode, WriteCount, write_counter

_LOG = logging.getLogger(__name__)


class WriteTag(str, enum.Enum):
    """Outputs of `ValidateRowsFn`."""

    ROWS = "rows"
    REJECTED = "rejected"


class Refusals(str, enum.Enum):
    """Where a table's refused rows go."""

    DEAD_LETTERS = "dead_letters"  # become `row_rejected` dead letters (the job writes them to dead_letters)
    FALLBACK = "fallback"  # kept as JSON lines in the target's fallback folder (no table left to go to)


# Rows derived from events become dead letters; dead letters and audit rows have no
# further table, so they go to the fallback folder.
DEFAULT_REFUSALS = {Table.SEGMENT_ASSIGNMENTS: Refusals.DEAD_LETTERS, Table.SEGMENT_CHANGES: Refusals.DEAD_LETTERS}


class ValidateRowsFn(beam.DoFn):
    """Rows that match the schema go to ROWS; the rest are `Refused` in REJECTED.

    With `to_row`, elements are first converted to rows by it, in this step: one step
    less for the runner's per-element work.
    """

    def __init__(self, spec: TableSpec, to_row: Callable[[Any], dict] | None = None):
        self._spec = spec
        self._to_row = to_row
        self._rows = write_counter(spec.name, WriteCount.ROWS)
        self._rejected = write_counter(spec.name, WriteCount.REJECTED)

    def process(self, element: Any) -> Iterator[Any]:
        row = element if self._to_row is None else self._to_row(element)
        self._rows.inc()
        problems = validate_row(row, self._spec.schema)
        if problems:
            self._rejected.inc()
            yield beam.pvalue.TaggedOutput(WriteTag.REJECTED.value, Refused(row, "; ".join(problems)))
        else:
            yield row


class _FailedRowToRefused(beam.DoFn):
    def __init__(self, spec: TableSpec):
        self._failed = write_counter(spec.name, WriteCount.LOAD_FAILED)

    def process(self, failed: tuple) -> Iterator[Refused]:
        _destination, row, errors = failed
        self._failed.inc()
        yield Refused(row, json.dumps(errors, default=str)[:1000])


class RefusedToDeadLetterFn(beam.DoFn):
    """A refused row -> a `row_rejected` dead letter carrying the row as JSON."""

    def __init__(self, spec: TableSpec):
        self._spec = spec
        self._rejected = outcomes.dead_letter_counter(ErrorCode.ROW_REJECTED)
        self._dead_lettered = write_counter(spec.name, WriteCount.DEAD_LETTERED)

    def process(self, refused: Refused) -> Iterator[DeadLetter]:
        self._rejected.inc()
        self._dead_lettered.inc()
        yield rejected_row_dead_letter(refused.row, [refused.reason], self._spec.table)


class WriteFallbackFn(beam.DoFn):
    """Keeps refused rows as newline-delimited JSON files in the fallback folder.

    One file per bundle, ``<folder>/<table>-<random>.jsonl``, each line a row as the
    table takes it (so ``bq load --source_format=NEWLINE_DELIMITED_JSON`` can load the
    file later). Without a folder, or when the file cannot be written, the job fails:
    a row is never dropped silently.
    """

    def __init__(self, spec: TableSpec, folder: Optional[str]):
        self._spec = spec
        self._folder = folder
        self._kept = write_counter(spec.name, WriteCount.FALLBACK)

    def start_bundle(self) -> None:
        self._refused: list[Refused] = []

    def process(self, refused: Refused) -> Iterable[Refused]:
        self._refused.append(refused)
        return ()  # kept rows are emitted by finish_bundle, once they are written

    def finish_bundle(self) -> Iterator[Any]:
        if not self._refused:
            return
        refused, self._refused = self._refused, []
        first = refused[0].reason.splitlines()[0][:300] if refused[0].reason else ""
        if not self._folder:
            raise RuntimeError(f"{len(refused)} {self._spec.name} rows were refused ({first}) and no fallback "
                               "folder is configured (--dead_letter_fallback)")
        path = FileSystems.join(self._folder, f"{self._spec.name}-{uuid.uuid4().hex[:12]}.jsonl")
        try:
            if "://" not in path:
                import os

                os.makedirs(self._folder, exist_ok=True)
            with FileSystems.create(path) as handle:
                for item in refused:
                    handle.write(orjson.dumps(item.row, default=str) + b"\n")
        except Exception as error:
            raise RuntimeError(f"{len(refused)} {self._spec.name} rows were refused ({first}) and could not be "
                               f"kept in {path}: {error}") from error
        self._kept.inc(len(refused))
        _LOG.error("%d %s rows the warehouse refused (%s) are kept in %s", len(refused), self._spec.name, first, path)
        for item in refused:  # written rows go on: rows are in the global window (WriteTable)
            yield window.GlobalWindows.windowed_value(item)


class MergeStagingFn(beam.DoFn):
    """Production batch: waits for the staging load jobs, MERGEs, drops the staging table."""

    def __init__(self, spec: TableSpec, target: BigQueryTarget, staging_table_id: str):
        self._spec = spec
        self._target = target
        self._staging = staging_table_id
        self._loaded = write_counter(spec.name, WriteCount.LOADED)

    def process(self, job_refs: list) -> Iterator[int]:
        client = self._target.client()
        try:
            # No jobs: nothing was written, there is no staging table to merge.
            rows = sum(_load_job_rows(client, ref) for _dest, ref in job_refs)
            if job_refs:
                from google.cloud import bigquery

                merge_staging(client, self._spec, self._target.table_id(self._spec.table), [self._staging],
                              retry=bigquery.DEFAULT_RETRY)
            self._loaded.inc(rows)
            yield len(job_refs)
        finally:
            client.close()


def _load_job_rows(client, ref) -> int:
    """Waits for a load job (Beam's job reference) and returns its output row count."""
    job_id = getattr(ref, "jobId", None) or ref["jobId"]
    job = client.get_job(job_id, project=getattr(ref, "projectId", None), location=getattr(ref, "location", None))
    job.result()
    return int(getattr(job, "output_rows", None) or 0)


class CountLoadedFn(beam.DoFn):
    """Production batch, append tables: counts the rows the load jobs wrote."""

    def __init__(self, spec: TableSpec, target: BigQueryTarget):
        self._target = target
        self._loaded = write_counter(spec.name, WriteCount.LOADED)

    def process(self, job_refs: list) -> Iterator[int]:
        client = self._target.client()
        try:
            rows = sum(_load_job_rows(client, ref) for _dest, ref in job_refs)
        finally:
            client.close()
        self._loaded.inc(rows)
        yield rows


class WriteTable(beam.PTransform):
    """Validates rows of one table and writes them to the target.

    Input: row dicts, or elements that `to_row` turns into row dicts (the table's
    conversion function). Every row is counted (`WriteCount`) and either loaded or
    refused: by the schema check, or by a load that failed after its retries. Refused
    rows go where `refusals` says (by default: `row_rejected` dead letters for
    assignments, the fallback folder for the other tables).

    Output: the dead letters of refused rows (`Refusals.DEAD_LETTERS`), or the `Refused`
    rows kept in the fallback folder (`Refusals.FALLBACK`).
    """

    def __init__(self, table: Table, target: BigQueryTarget, to_row: Callable[[Any], dict] | None = None,
                 refusals: Refusals | None = None):
        super().__init__()
        self._spec = TABLES[table]
        self._target = target
        self._to_row = to_row
        self._refusals = refusals or DEFAULT_REFUSALS.get(table, Refusals.FALLBACK)

    def expand(self, rows: beam.PCollection[Any]) -> beam.PCollection:  # Any: whatever to_row takes
        # Rows carry their day as a column; rows from a windowed stage are loaded together,
        # across windows, rather than in one load per window.
        if not rows.windowing.is_default():  # bounded runs are in the global window already
            rows = rows | "AcrossWindows" >> beam.WindowInto(window.GlobalWindows())
        checked = (rows
                   | "Validate" >> beam.ParDo(ValidateRowsFn(self._spec, self._to_row)).with_outputs(
            WriteTag.REJECTED.value, main=WriteTag.ROWS.value))
        valid = checked[WriteTag.ROWS.value]
        if self._target.is_local:
            refused = valid | "Write" >> LocalSink(self._spec, self._target)
        else:
            refused = valid | "Write" >> _ProductionWrite(self._spec, self._target)
        refused = (checked[WriteTag.REJECTED.value], refused) | "Rejected" >> beam.Flatten()
        if self._refusals is Refusals.DEAD_LETTERS:
            return refused | "RefusedToDeadLetters" >> beam.ParDo(RefusedToDeadLetterFn(self._spec))
        return refused | "KeepInFallback" >> beam.ParDo(WriteFallbackFn(self._spec, self._target.fallback_dir))


class _ProductionWrite(beam.PTransform):
    def __init__(self, spec: TableSpec, target: BigQueryTarget):
        super().__init__()
        self._spec = spec
        self._target = target

    def expand(self, rows: beam.PCollection[dict]) -> beam.PCollection[Refused]:
        spec, target = self._spec, self._target
        common = dict(
            schema=beam_schema(spec),
            create_disposition=target.create_disposition,
            additional_bq_parameters=additional_bq_parameters(spec),
        )
        if target.streaming:
            result = rows | "StreamingInserts" >> WriteToBigQuery(
                target.beam_table(spec.table),
                method=WriteToBigQuery.Method.STREAMING_INSERTS,
                write_disposition=BigQueryDisposition.WRITE_APPEND,
                insert_retry_strategy=RetryStrategy.RETRY_ON_TRANSIENT_ERROR,
                **common,
            )
            return result.failed_rows_with_errors | "FailedRows" >> beam.ParDo(_FailedRowToRefused(spec))
        if spec.merge_key is None:
            result = rows | "FileLoads" >> WriteToBigQuery(
                target.beam_table(spec.table),
                method=WriteToBigQuery.Method.FILE_LOADS,
                write_disposition=BigQueryDisposition.WRITE_APPEND,
                **common,
            )
            _ = (result.destination_load_jobid_pairs
                 | "AllLoadJobs" >> beam.combiners.ToList()
                 | "CountLoaded" >> beam.ParDo(CountLoadedFn(spec, target)))
        else:
            staging = f"{spec.name}__{target.staging_suffix}"
            owner = target.staging_owner()
            staging_params = dict(common["additional_bq_parameters"])
            if owner is not None:  # so that `loads.sweep_staging` can tell whose it is
                staging_params["description"] = owner.description()
            result = rows | "FileLoads" >> WriteToBigQuery(
                target.beam_table(staging),
                method=WriteToBigQuery.Method.FILE_LOADS,
                write_disposition=BigQueryDisposition.WRITE_TRUNCATE,
                **dict(common, create_disposition=BigQueryDisposition.CREATE_IF_NEEDED,
                       additional_bq_parameters=staging_params),
            )
            _ = (
                (result.destination_load_jobid_pairs, result.destination_copy_jobid_pairs)
                | "StagedJobs" >> beam.Flatten()
                | "AllJobs" >> beam.combiners.ToList()
                | "Merge" >> beam.ParDo(MergeStagingFn(spec, target, target.table_id(staging)))
            )
        # Load jobs fail as a whole rather than per row (and fail the job); rows are validated beforehand.
        return rows | "NoFailedRows" >> beam.FlatMap(lambda _row: ()).with_output_types(Refused)


def assignment_row_now(assignment: Mapping[str, Any]) -> dict:
    """Assignment dict -> `segment_assignments` row, stamped with the write's processing time."""
    return assignment_row(assignment, time.time_ns() // 1000)


class WriteAssignments(beam.PTransform):
    """Writes model-stage assignment dicts to `segment_assignments`.

    Returns:
        Dead letters (ROW_REJECTED) of the assignments that could not be written.
    """

    def __init__(self, target: BigQueryTarget):
        super().__init__()
        self._target = target

    def expand(self, assignments: beam.PCollection[dict]) -> beam.PCollection[DeadLetter]:
        return assignments | "WriteSegmentAssignments" >> WriteTable(
            Table.SEGMENT_ASSIGNMENTS, self._target, to_row=assignment_row_now)


def change_row_now(change: Mapping[str, Any]) -> dict:
    """Change record -> `segment_changes` row, stamped with the processing time of its detection."""
    return change_row(change, time.time_ns() // 1000)


class WriteChanges(beam.PTransform):
    """Writes change records (`transforms.changes`) to `segment_changes`.

    Returns:
        Dead letters (ROW_REJECTED) of the changes that could not be written.
    """

    def __init__(self, target: BigQueryTarget):
        super().__init__()
        self._target = target

    def expand(self, changes: beam.PCollection[dict]) -> beam.PCollection[DeadLetter]:
        return changes | "WriteSegmentChanges" >> WriteTable(Table.SEGMENT_CHANGES, self._target, to_row=change_row_now)


class WriteDeadLetters(beam.PTransform):
    """Writes `DeadLetter`s to `dead_letters` (payloads over the target's
    `max_payload_bytes` truncated, see `dead_letter_row`).

    Returns:
        The `Refused` rows of dead letters the warehouse did not take, which are kept in
        the target's fallback folder (counted ``bigquery.dead_letters.fallback``); without
        a folder, such a refusal fails the job.
    """

    def __init__(self, target: BigQueryTarget, run_id: str | None = None):
        super().__init__()
        self._target = target
        self._run_id = run_id

    def expand(self, dead_letters: beam.PCollection[DeadLetter]) -> beam.PCollection[Refused]:
        to_row = functools.partial(dead_letter_row, run_id=self._run_id, max_payload_bytes=self._target.max_payload_bytes)
        return dead_letters | "WriteDeadLetterRows" >> WriteTable(Table.DEAD_LETTERS, self._target, to_row=to_row)
