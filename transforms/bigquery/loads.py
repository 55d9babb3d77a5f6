"""Load jobs through google-cloud-bigquery: the local sink's writes, and the driver's audit row.

Rows are loaded as newline-delimited JSON (the file format Beam's FILE_LOADS writes) with
resumable uploads, into a staging table and MERGEd (tables with a merge key) or appended.
Works against the local warehouse and real BigQuery alike.
"""

from __future__ import annotations

import io
import uuid
from typing import Any, Mapping, Sequence

import orjson

from transforms.bigquery.merge import merge_sql
from transforms.bigquery.rows import validate_row
from transforms.bigquery.tables import TABLES, Table, TableSpec, schema_fields


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
