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

Every row is validated against its schema first; a row that fails (or that BigQuery
refuses) becomes a ``DeadLetter`` (``ErrorCode.ROW_REJECTED``, ``Stage.WRITE``, the row
as JSON) in the composite's output, for the caller to write to ``dead_letters``.

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
from typing import Any, Callable, Iterator, Mapping

import apache_beam as beam
from apache_beam.io.gcp.bigquery import BigQueryDisposition, WriteToBigQuery
from apache_beam.io.gcp.bigquery_tools import RetryStrategy
from apache_beam.transforms import window

from transforms.bigquery.client import BigQueryTarget
from transforms.bigquery.loads import merge_staging
from transforms.bigquery.local_sink import LocalSink
from transforms.bigquery.rows import (assignment_row, change_row, dead_letter_row, rejected_row_dead_letter,
                                      validate_row)
from transforms.bigquery.tables import TABLES, Table, TableSpec, additional_bq_parameters, beam_schema
from transforms.contracts import outcomes
from transforms.contracts.outcomes import DeadLetter, ErrorCode

_LOG = logging.getLogger(__name__)


class WriteTag(str, enum.Enum):
    """Outputs of `ValidateRowsFn`."""

    ROWS = "rows"
    REJECTED = "rejected"




class ValidateRowsFn(beam.DoFn):
    """Rows that match the schema go to ROWS; the rest become dead letters in REJECTED.

    With `to_row`, elements are first converted to rows by it, in this step: one step
    less for the runner's per-element work.
    """

    def __init__(self, spec: TableSpec, to_row: Callable[[Any], dict] | None = None):
        self._spec = spec
        self._to_row = to_row
        self._rejected = outcomes.dead_letter_counter(ErrorCode.ROW_REJECTED)

    def process(self, element: Any) -> Iterator[Any]:
        row = element if self._to_row is None else self._to_row(element)
        problems = validate_row(row, self._spec.schema)
        if problems:
            self._rejected.inc()
            yield beam.pvalue.TaggedOutput(WriteTag.REJECTED.value, rejected_row_dead_letter(row, problems, self._spec.table))
        else:
            yield row


class _FailedRowToDeadLetter(beam.DoFn):
    def __init__(self, spec: TableSpec):
        self._spec = spec
        self._rejected = outcomes.dead_letter_counter(ErrorCode.ROW_REJECTED)

    def process(self, failed: tuple) -> Iterator[DeadLetter]:
        _destination, row, errors = failed
        self._rejected.inc()
        yield rejected_row_dead_letter(row, [json.dumps(errors, default=str)[:1000]], self._spec.table)


class MergeStagingFn(beam.DoFn):
    """Production batch: waits for the staging load jobs, MERGEs, drops the staging table."""

    def __init__(self, spec: TableSpec, target: BigQueryTarget, staging_table_id: str):
        self._spec = spec
        self._target = target
        self._staging = staging_table_id

    def process(self, job_refs: list) -> Iterator[int]:
        client = self._target.client()
        try:
            # No jobs: nothing was written, there is no staging table to merge.
            for _dest, ref in job_refs:
                job_id = getattr(ref, "jobId", None) or ref["jobId"]
                location = getattr(ref, "location", None)
                client.get_job(job_id, project=getattr(ref, "projectId", None), location=location).result()
            if job_refs:
                from google.cloud import bigquery

                merge_staging(client, self._spec, self._target.table_id(self._spec.table), [self._staging],
                              retry=bigquery.DEFAULT_RETRY)
            yield len(job_refs)
        finally:
            client.close()


class WriteTable(beam.PTransform):
    """Validates rows of one table and writes them to the target.

    Input: row dicts, or elements that `to_row` turns into row dicts (the table's
    conversion function). Output: the dead letters of rows that failed validation or
    that BigQuery refused.
    """

    def __init__(self, table: Table, target: BigQueryTarget, to_row: Callable[[Any], dict] | None = None):
        super().__init__()
        self._spec = TABLES[table]
        self._target = target
        self._to_row = to_row

    def expand(self, rows: beam.PCollection[dict]) -> beam.PCollection[DeadLetter]:
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
        return (checked[WriteTag.REJECTED.value], refused) | "Rejected" >> beam.Flatten()


class _ProductionWrite(beam.PTransform):
    def __init__(self, spec: TableSpec, target: BigQueryTarget):
        super().__init__()
        self._spec = spec
        self._target = target

    def expand(self, rows: beam.PCollection[dict]) -> beam.PCollection[DeadLetter]:
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
            return result.failed_rows_with_errors | "FailedRows" >> beam.ParDo(_FailedRowToDeadLetter(spec))
        if spec.merge_key is None:
            rows | "FileLoads" >> WriteToBigQuery(
                target.beam_table(spec.table),
                method=WriteToBigQuery.Method.FILE_LOADS,
                write_disposition=BigQueryDisposition.WRITE_APPEND,
                **common,
            )
        else:
            staging = f"{spec.name}__{target.staging_suffix}"
            result = rows | "FileLoads" >> WriteToBigQuery(
                target.beam_table(staging),
                method=WriteToBigQuery.Method.FILE_LOADS,
                write_disposition=BigQueryDisposition.WRITE_TRUNCATE,
                **dict(common, create_disposition=BigQueryDisposition.CREATE_IF_NEEDED),
            )
            _ = (
                (result.destination_load_jobid_pairs, result.destination_copy_jobid_pairs)
                | "StagedJobs" >> beam.Flatten()
                | "AllJobs" >> beam.combiners.ToList()
                | "Merge" >> beam.ParDo(MergeStagingFn(spec, target, target.table_id(staging)))
            )
        # Load jobs fail as a whole rather than per row; rows are validated beforehand.
        return rows | "NoFailedRows" >> beam.FlatMap(lambda _row: ())


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
    """Writes `DeadLetter`s to `dead_letters`.

    Returns:
        Dead letters whose own row was refused (counted as ``dead_letter.row_rejected``
        and logged; there is no further table to put them in).
    """

    def __init__(self, target: BigQueryTarget, run_id: str | None = None):
        super().__init__()
        self._target = target
        self._run_id = run_id

    def expand(self, dead_letters: beam.PCollection[DeadLetter]) -> beam.PCollection[DeadLetter]:
        refused = dead_letters | "WriteDeadLetterRows" >> WriteTable(
            Table.DEAD_LETTERS, self._target, to_row=functools.partial(dead_letter_row, run_id=self._run_id))
        return refused | "LogRefused" >> beam.Map(_log_refused_dead_letter)


def _log_refused_dead_letter(dl: DeadLetter) -> DeadLetter:
    _LOG.error("A dead letter could not be written: %s", dl.error_detail)
    return dl
