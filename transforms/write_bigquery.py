"""Writing segment assignments, dead letters and run audits to BigQuery.

Two paths share the schemas, row conversion, validation and MERGE statement of
`transforms.bigquery_tables`:

* **Production** (``BigQueryTarget.endpoint is None``): Beam's ``WriteToBigQuery``.

  - Batch: ``FILE_LOADS`` into a per-run staging table (``WRITE_TRUNCATE``), then one
    ``MERGE`` into ``segment_assignments`` on ``row_key``. Load jobs are free, atomic per
    table and need no streaming buffer; the MERGE makes reruns idempotent.
  - Streaming: ``STREAMING_INSERTS`` with ``WRITE_APPEND``. Beam's Python
    ``STORAGE_WRITE_API`` is a cross-language transform: building the pipeline needs a
    Java expansion service jar fetched from Maven, which breaks the offline
    ``DataflowRunner --dry_run`` build and adds a JVM to the launcher. Streaming inserts
    are pure Python, give per-row errors (``failed_rows_with_errors``, routed to the
    dead letters) and best-effort de-duplication by insert id. Rows of successive
    panes of one window share a ``row_key``; the views pick the most final one.
  - Tables are created if needed from the schema constants, with partitioning and
    clustering passed as ``additional_bq_parameters`` (``pipelines.bq_admin.setup``
    creates them ahead of time in the normal flow).

* **Local** (``BigQueryTarget.endpoint`` set, e.g. ``http://127.0.0.1:9050``): Beam's
  BigQuery IO hard-codes googleapis.com, so a thin sink on google-cloud-bigquery
  loads batches of rows as newline-delimited JSON (the rows' own JSON form, the file
  format of Beam's FILE_LOADS) with resumable uploads.
  - Batch: like production, rows are staged (one staging table per load, since the
    emulator copies a table on every change) and all staging tables are MERGEd on
    ``row_key`` in one statement after the last load, then dropped.
  - Streaming: each batch is staged in a table of its own and MERGEd as it lands.
  - Append-only tables (dead letters, audit) are loaded directly with ``WRITE_APPEND``.

Idempotent reruns: ``row_key = sha256(user_key, window_start, window_end,
model_version)``. The MERGE inserts unseen keys and replaces an existing row only when
the new one is more final (later pane, or same pane with more events), so writing the
same assignments again changes nothing, ``assigned_at`` included.

Every row is validated against its schema first; a row that fails (or that BigQuery
refuses) becomes a ``DeadLetter`` (``ErrorCode.ROW_REJECTED``, ``Stage.WRITE``, the row
as JSON) in the composite's output, for the caller to write to ``dead_letters``.

Usage::

    target = BigQueryTarget(project="my-proj", dataset="segments")              # Dataflow
    target = BigQueryTarget.local("http://127.0.0.1:9050", "segments-local", "segments")
    rejected = assignments | "WriteAssignments" >> WriteAssignments(target, run_id=run_id)
    (parse_dead_letters, rejected) | beam.Flatten() | "WriteDeadLetters" >> WriteDeadLetters(target, run_id)
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import enum
import functools
import io
import json
import logging
import time
import uuid
from typing import Any, Callable, Iterator, Mapping, Sequence

import apache_beam as beam
import orjson
from apache_beam.transforms import window
from apache_beam.io.gcp.bigquery import BigQueryDisposition, WriteToBigQuery
from apache_beam.io.gcp.bigquery_tools import RetryStrategy

from transforms import outcomes
from transforms.bigquery_tables import (
    TABLES,
    Table,
    TableSpec,
    additional_bq_parameters,
    assignment_row,
    audit_row,
    beam_schema,
    dead_letter_row,
    rejected_row_dead_letter,
    schema_fields,
    validate_row,
)
from transforms.outcomes import DeadLetter, ErrorCode

_LOG = logging.getLogger(__name__)


class WriteTag(str, enum.Enum):
    """Outputs of the row-validation and local load steps."""

    ROWS = "rows"
    REJECTED = "rejected"
    STAGED = "staged"  # local bounded sink: (staging table, rows), for the final MERGE


@dataclasses.dataclass(frozen=True)
class BigQueryTarget:
    """Where rows go.

    Attributes:
        project: GCP project (or the local warehouse's project id).
        dataset: dataset holding the tables.
        endpoint: REST endpoint of a local BigQuery-API server; None = real BigQuery.
        streaming: True for unbounded input (production: STREAMING_INSERTS).
        create_disposition: production only; CREATE_IF_NEEDED (default) or CREATE_NEVER.
        batch_size: local sink: rows per load job (at most).
        staging_suffix: production batch: staging table suffix, unique per run.
    """

    project: str
    dataset: str
    endpoint: str | None = None
    streaming: bool = False
    create_disposition: str = BigQueryDisposition.CREATE_IF_NEEDED
    # A load job has a fixed cost, and in streaming each load is MERGEd, which reads the
    # whole table: fewer, larger loads (20k rows are ~60 MB in memory) keep runs linear.
    batch_size: int = 20_000
    staging_suffix: str = "staging"

    @classmethod
    def local(cls, endpoint: str, project: str, dataset: str, **kwargs: Any) -> "BigQueryTarget":
        return cls(project=project, dataset=dataset, endpoint=endpoint, **kwargs)

    @property
    def is_local(self) -> bool:
        return self.endpoint is not None

    def table_id(self, table: Table | str) -> str:
        """``project.dataset.table`` (google-cloud-bigquery form)."""
        name = table.value if isinstance(table, Table) else table
        return f"{self.project}.{self.dataset}.{name}"

    def beam_table(self, table: Table | str) -> str:
        """``project:dataset.table`` (Beam form)."""
        name = table.value if isinstance(table, Table) else table
        return f"{self.project}:{self.dataset}.{name}"

    def client(self):
        """A google-cloud-bigquery client for this target."""
        if self.is_local:
            from pipelines.warehouse import client_for

            return client_for(self.endpoint, self.project)
        from google.cloud import bigquery

        return bigquery.Client(project=self.project)


# ----------------------------------------------------------------------------- shared SQL


def pane_rank_sql(column: str) -> str:
    """How final a pane is: late 2, on_time/unknown 1, early 0 (same rule as the views)."""
    return (
        f"CASE LOWER({column}) WHEN 'late' THEN 2 WHEN 'on_time' THEN 1 "
        f"WHEN 'unknown' THEN 1 ELSE 0 END"
    )


def merge_sql(spec: TableSpec, target_table: str, staging_tables: Sequence[str]) -> str:
    """MERGE staged rows (one staging table or several) into the target on the spec's merge key.

    Unseen keys are inserted. A key already present is replaced only by a more final
    row (higher pane rank, or equal rank and more events), so re-merging the same rows
    is a no-op. Within the staged rows the most final row per key wins.
    """
    if spec.merge_key != "row_key":
        raise ValueError(f"{spec.name} has no MERGE rule")
    staged = "\n  UNION ALL\n".join(f"  SELECT * FROM `{table}`" for table in staging_tables)
    cols = [f["name"] for f in spec.schema]
    rank_s, rank_t = pane_rank_sql("s.pane"), pane_rank_sql("t.pane")
    return (
        f"MERGE `{target_table}` AS t\n"
        f"USING (\n"
        f"  SELECT * FROM (\n{staged}\n  )\n"
        f"  WHERE TRUE\n"
        f"  QUALIFY ROW_NUMBER() OVER (\n"
        f"    PARTITION BY row_key\n"
        f"    ORDER BY {pane_rank_sql('pane')} DESC, event_count DESC, assigned_at DESC) = 1\n"
        f") AS s\n"
        f"ON t.row_key = s.row_key\n"
        f"WHEN MATCHED AND ({rank_s} > {rank_t}\n"
        f"  OR ({rank_s} = {rank_t} AND s.event_count > t.event_count)) THEN\n"
        f"  UPDATE SET {', '.join(f'{c} = s.{c}' for c in cols if c != 'row_key')}\n"
        f"WHEN NOT MATCHED THEN\n"
        f"  INSERT ({', '.join(cols)})\n"
        f"  VALUES ({', '.join('s.' + c for c in cols)})"
    )


# ----------------------------------------------------------------------------- loading (local + audit)


def _short_retry():
    from google.cloud import bigquery

    # The emulator answers a bad value with HTTP 500; do not retry that for 10 minutes.
    return bigquery.DEFAULT_RETRY.with_deadline(60)


def ndjson_bytes(rows: Sequence[Mapping[str, Any]]) -> bytes:
    """Validated rows as newline-delimited JSON, the file format of Beam's FILE_LOADS.

    The rows are already in BigQuery's JSON form (TIMESTAMP as canonical text), so this
    is the same payload production loads; floats are written in shortest round-trip form.
    Every line ends with a newline.
    """
    # Written as they are made: joining a list of 20k separate ~1 KB lines cost about
    # five times as much here, most of it in allocating memory for lines kept alive.
    out = io.BytesIO()
    write, dumps = out.write, orjson.dumps
    for row in rows:
        write(dumps(row))
        write(b"\n")
    return out.getvalue()


def _load(client, spec: TableSpec, table_id: str, rows: Sequence[Mapping[str, Any]], disposition: str) -> None:
    from google.cloud import bigquery

    config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
        schema=schema_fields(spec),
        create_disposition=bigquery.CreateDisposition.CREATE_IF_NEEDED,
        write_disposition=disposition,
    )
    payload = io.BytesIO(ndjson_bytes(rows))
    client.load_table_from_file(payload, table_id, job_config=config).result(retry=_short_retry())


def merge_staging(client, spec: TableSpec, table_id: str, staging_ids: Sequence[str], retry=None) -> None:
    """MERGEs staging tables into `table_id` in one statement (see `merge_sql`), then drops them.

    `retry`: the query's retry policy; by default a 60-second deadline (`_short_retry`),
    for the local emulator.
    """
    client.query(merge_sql(spec, table_id, staging_ids), retry=retry or _short_retry()).result()
    for staging_id in staging_ids:
        client.delete_table(staging_id, not_found_ok=True)


def stage_rows(client, spec: TableSpec, table_id: str, rows: Sequence[Mapping[str, Any]]) -> str:
    """Loads validated rows into a new staging table next to `table_id`; returns its id.

    One table per load, not one growing table: the local emulator copies a table after
    every change (time travel), so appending to one staging table costs quadratic time.
    """
    from google.cloud import bigquery

    staging_id = f"{table_id}__staging_{uuid.uuid4().hex[:12]}"
    try:
        _load(client, spec, staging_id, rows, bigquery.WriteDisposition.WRITE_TRUNCATE)
    except Exception:
        client.delete_table(staging_id, not_found_ok=True)
        raise
    return staging_id


def load_rows(client, spec: TableSpec, table_id: str, rows: Sequence[Mapping[str, Any]]) -> int:
    """Loads validated rows into `table_id` now (MERGE on the spec's key, else append).

    A newline-delimited JSON file and a resumable upload (``load_table_from_file``
    without ``size``: the local emulator refuses multipart uploads). Works against real
    BigQuery too.

    Returns:
        The number of rows loaded.
    """
    from google.cloud import bigquery

    if not rows:
        return 0
    if spec.merge_key is None:
        _load(client, spec, table_id, rows, bigquery.WriteDisposition.WRITE_APPEND)
        return len(rows)
    staging_id = stage_rows(client, spec, table_id, rows)
    try:
        merge_staging(client, spec, table_id, [staging_id])
    except Exception:
        client.delete_table(staging_id, not_found_ok=True)
        raise
    return len(rows)


def write_audit(client, project: str, dataset: str, row: Mapping[str, Any]) -> None:
    """Appends one `run_audit` row (made by `audit_row`) after validating it.

    Raises:
        ValueError: when the row does not match the schema.
    """
    spec = TABLES[Table.RUN_AUDIT]
    problems = validate_row(row, spec.schema)
    if problems:
        raise ValueError(f"run_audit row rejected: {problems}")
    load_rows(client, spec, f"{project}.{dataset}.{spec.name}", [row])


# ----------------------------------------------------------------------------- Beam pieces


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


class LoadBatchFn(beam.DoFn):
    """Local sink: loads one batch of validated rows; a failed load dead-letters its rows.

    With `merge_later`, a batch for a table with a merge key is only staged, and its
    (staging table, row count) goes to the STAGED output for `MergeStagedRowsFn`, which
    MERGEs every staged batch at once after the last one.

    A load runs on a background thread while the next batch is being built: the
    warehouse works on one core while the pipeline works on the other. At most one load
    is in flight (two batches held); the last one is waited for at the end of the bundle.
    """

    def __init__(self, spec: TableSpec, target: BigQueryTarget, merge_later: bool = False):
        self._spec = spec
        self._target = target
        self._merge_later = merge_later and spec.merge_key is not None
        self._loaded = outcomes.counter(f"bigquery.{spec.name}.loaded")
        self._rejected = outcomes.dead_letter_counter(ErrorCode.ROW_REJECTED)

    def setup(self) -> None:
        self._client = self._target.client()
        self._loader = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="bq-load")

    def start_bundle(self) -> None:
        self._in_flight: tuple[concurrent.futures.Future, list] | None = None

    def process(self, batch: list[Mapping[str, Any]]) -> Iterator[Any]:
        previous, self._in_flight = self._in_flight, (self._loader.submit(self._load, batch), batch)
        if previous is not None:
            yield from self._settle(*previous)

    def finish_bundle(self) -> Iterator[Any]:
        if self._in_flight is not None:
            in_flight, self._in_flight = self._in_flight, None
            for out in self._settle(*in_flight):
                if isinstance(out, beam.pvalue.TaggedOutput):
                    yield beam.pvalue.TaggedOutput(out.tag, window.GlobalWindows.windowed_value(out.value))
                else:
                    yield window.GlobalWindows.windowed_value(out)

    def _load(self, batch: list[Mapping[str, Any]]) -> tuple[str | None, int]:
        """(staging table or None, rows); on the loader thread, so it counts nothing
        (Beam's metrics belong to the bundle's thread)."""
        table_id = self._target.table_id(self._spec.table)
        if self._merge_later:
            return stage_rows(self._client, self._spec, table_id, batch), len(batch)
        return None, load_rows(self._client, self._spec, table_id, batch)

    def _settle(self, load: concurrent.futures.Future, batch: list[Mapping[str, Any]]) -> Iterator[Any]:
        from google.api_core import exceptions

        try:
            staging_id, rows = load.result()
        except (exceptions.GoogleAPICallError, exceptions.RetryError, ValueError) as exc:
            _LOG.error("Load into %s failed for %d rows: %s", self._spec.name, len(batch), exc)
            for row in batch:
                self._rejected.inc()
                yield rejected_row_dead_letter(row, [f"load failed: {exc}"[:1000]], self._spec.table)
            return
        if staging_id is None:
            self._loaded.inc(rows)
        else:
            yield beam.pvalue.TaggedOutput(WriteTag.STAGED.value, (staging_id, rows))

    def teardown(self) -> None:
        loader = getattr(self, "_loader", None)
        if loader is not None:
            loader.shutdown(wait=True)
        client = getattr(self, "_client", None)
        if client is not None:
            client.close()


class MergeStagedRowsFn(beam.DoFn):
    """Local bounded sink: one MERGE of every staged batch, once the last one is loaded.

    A MERGE reads the whole target table, so one per run instead of one per batch keeps
    a large run linear. If the MERGE fails, the job fails and the staging tables are kept
    (their names are in the error), so nothing loaded is lost.
    """

    def __init__(self, spec: TableSpec, target: BigQueryTarget):
        self._spec = spec
        self._target = target
        self._loaded = outcomes.counter(f"bigquery.{spec.name}.loaded")

    def process(self, staged: list[tuple[str, int]]) -> Iterator[int]:
        if not staged:
            return
        staging_ids = sorted(table for table, _ in staged)
        client = self._target.client()
        try:
            merge_staging(client, self._spec, self._target.table_id(self._spec.table), staging_ids)
        except Exception as exc:
            raise RuntimeError(f"MERGE into {self._spec.name} failed; the staged rows are kept in "
                               f"{', '.join(staging_ids)}: {exc}") from exc
        finally:
            client.close()
        rows = sum(n for _, n in staged)
        self._loaded.inc(rows)
        yield rows


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
        # Rows carry their window bounds as columns; batching across windows turns a
        # user's 30 overlapping windows into one load instead of 30.
        if not rows.windowing.is_default():  # bounded runs are in the global window already
            rows = rows | "AcrossWindows" >> beam.WindowInto(window.GlobalWindows())
        checked = (rows
                   | "Validate" >> beam.ParDo(ValidateRowsFn(self._spec, self._to_row)).with_outputs(
            WriteTag.REJECTED.value, main=WriteTag.ROWS.value))
        valid = checked[WriteTag.ROWS.value]
        if self._target.is_local:
            # Bounded input: every batch is staged, all are MERGEd once at the end (as on
            # the production path). Streaming: each batch is MERGEd as it lands.
            merge_later = not self._target.streaming and self._spec.merge_key is not None
            loaded = (
                valid
                # Fixed-size batches (the tail flushes at the end of each bundle): every
                # batch costs a load job, so small adaptive batches are slow.
                | "Batch" >> beam.BatchElements(min_batch_size=self._target.batch_size,
                                                max_batch_size=self._target.batch_size)
                | "Load" >> beam.ParDo(LoadBatchFn(self._spec, self._target, merge_later)).with_outputs(
                    WriteTag.STAGED.value, main=WriteTag.REJECTED.value)
            )
            refused = loaded[WriteTag.REJECTED.value]
            if merge_later:
                _ = (loaded[WriteTag.STAGED.value]
                     | "AllStaged" >> beam.combiners.ToList()
                     | "Merge" >> beam.ParDo(MergeStagedRowsFn(self._spec, self._target)))
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


__all__ = [
    "BigQueryTarget",
    "LoadBatchFn",
    "MergeStagedRowsFn",
    "MergeStagingFn",
    "ValidateRowsFn",
    "WriteAssignments",
    "WriteDeadLetters",
    "WriteTable",
    "WriteTag",
    "assignment_row_now",
    "audit_row",
    "load_rows",
    "merge_sql",
    "merge_staging",
    "ndjson_bytes",
    "pane_rank_sql",
    "stage_rows",
    "write_audit",
]
