"""Erasure: delete users' rows from every table, keep them out of later runs, and record it.

`erase_users` (the `segments erase` command), for raw user ids:

1. appends the ids to the suppression list first (`transforms.ingest.privacy`), so that
   no run started from now on brings them back;
2. deletes, in every table with a ``user_key`` column (segment assignments, and any
   table added later that stores users), the rows of their pseudonyms;
3. deletes their dead letters, found by the payload's user id: a JSON payload's
   ``user_id`` (raw events) or ``user_key`` (rows derived after pseudonymisation); a
   payload that is not JSON (truncated, not UTF-8, a damaged Avro block) is read here
   and deleted when it names them (`transforms.ingest.privacy.UserIdFinder`);
4. appends one ``erasure_audit`` row: the pseudonyms and the counts, never a raw id.

The same statements run on the local warehouse and on BigQuery (google-cloud-bigquery).
On BigQuery, rows still in a streaming buffer (inserted in the last half hour or so by
the streaming job) cannot be deleted by DML yet: the statement fails and says so; run
the erasure again later (it is idempotent).
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import uuid
from typing import Sequence, Union

from transforms.bigquery.loads import load_rows
from transforms.bigquery.rows import format_timestamp, validate_row
from transforms.bigquery.tables import TABLES, Table, TableSpec
from transforms.ingest.privacy import IdKeyRef, UserIdFinder, append_to_suppression_list, pseudonymise

# Payloads compared in one DELETE statement (query parameters stay well under 10 MB).
_PAYLOADS_PER_DELETE = 200


@dataclasses.dataclass
class Erasure:
    """What `erase_users` did."""

    erasure_id: str
    users: int
    user_keys: list[str]
    deleted: dict[str, int]  # table -> rows deleted
    suppression_list: str
    suppression_added: int

    def audit_row(self, erased_at_us: int) -> dict:
        return {
            "erasure_id": self.erasure_id,
            "erased_at": format_timestamp(erased_at_us),
            "users": self.users,
            "user_keys": list(self.user_keys),
            "deleted": [{"table_name": table, "row_count": rows} for table, rows in sorted(self.deleted.items())],
            "suppression_list": self.suppression_list,
            "suppression_added": self.suppression_added,
        }


def user_tables() -> list[TableSpec]:
    """The tables that store rows per user: those with a top-level ``user_key`` column."""
    return [spec for spec in TABLES.values() if any(f["name"] == "user_key" for f in spec.schema)]


def _param_query(client, sql: str, **arrays: Sequence[str]):
    from google.cloud import bigquery

    config = bigquery.QueryJobConfig(query_parameters=[
        bigquery.ArrayQueryParameter(name, "STRING", list(values)) for name, values in arrays.items()])
    job = client.query(sql, job_config=config)
    return job, job.result()


def _delete_dead_letters(client, table_id: str, user_ids: Sequence[str], user_keys: Sequence[str]) -> int:
    json_sql = ("SAFE.JSON_VALUE(raw_payload, '$.user_id') IN UNNEST(@ids) "
                "OR SAFE.JSON_VALUE(raw_payload, '$.user_key') IN UNNEST(@keys)")
    job, _ = _param_query(client, f"DELETE FROM `{table_id}` WHERE payload_encoding = 'utf8' AND ({json_sql})",
                          ids=user_ids, keys=user_keys)
    deleted = int(job.num_dml_affected_rows or 0)
    # What JSON functions cannot read (not JSON, truncated, base64) is read here.
    _, rows = _param_query(
        client,
        f"SELECT DISTINCT raw_payload, payload_encoding FROM `{table_id}` WHERE payload_encoding != 'utf8' OR ("
        f"SAFE.JSON_VALUE(raw_payload, '$.user_id') IS NULL AND SAFE.JSON_VALUE(raw_payload, '$.user_key') IS NULL)")
    finder = UserIdFinder([*user_ids, *user_keys])
    doomed = [row["raw_payload"] for row in rows
              if (finder.names(base64.b64decode(row["raw_payload"]), binary=True) if row["payload_encoding"] == "base64"
                  else finder.names(row["raw_payload"]))]
    for start in range(0, len(doomed), _PAYLOADS_PER_DELETE):
        job, _ = _param_query(client, f"DELETE FROM `{table_id}` WHERE raw_payload IN UNNEST(@payloads)",
                              payloads=doomed[start:start + _PAYLOADS_PER_DELETE])
        deleted += int(job.num_dml_affected_rows or 0)
    return deleted


def erase_users(client, project: str, dataset: str, user_ids: Sequence[str], key: Union[bytes, IdKeyRef],
                suppression_list: str, erasure_id: str | None = None,
                now_us: int | None = None) -> Erasure:
    """Erases the users (see the module docstring) and returns what was done.

    Args:
      client: a google-cloud-bigquery client (local warehouse or BigQuery).
      project, dataset: where the tables are.
      user_ids: raw user ids.
      key: the pseudonymisation key the jobs use (or where it is).
      suppression_list: the list the jobs read (local path or gs://); created if missing.
      erasure_id: names the erasure in ``erasure_audit``; default ``erase-<UTC time>-<random>``.
    """
    now_us = now_us if now_us is not None else int(dt.datetime.now(dt.timezone.utc).timestamp() * 1_000_000)
    ids = list(dict.fromkeys(user_ids))
    keys = [pseudonymise(key, user_id) for user_id in ids]
    erasure_id = erasure_id or f"erase-{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:6]}"
    added = append_to_suppression_list(suppression_list, ids)
    deleted = {}
    for spec in user_tables():
        job, _ = _param_query(client, f"DELETE FROM `{project}.{dataset}.{spec.name}` WHERE user_key IN UNNEST(@keys)",
                              keys=keys)
        deleted[spec.name] = int(job.num_dml_affected_rows or 0)
    deleted[Table.DEAD_LETTERS.value] = _delete_dead_letters(
        client, f"{project}.{dataset}.{Table.DEAD_LETTERS.value}", ids, keys)
    erasure = Erasure(erasure_id, len(ids), keys, deleted, suppression_list, added)
    spec = TABLES[Table.ERASURE_AUDIT]
    row = erasure.audit_row(now_us)
    problems = validate_row(row, spec.schema)
    if problems:
        raise ValueError(f"erasure_audit row rejected: {problems}")
    load_rows(client, spec, f"{project}.{dataset}.{spec.name}", [row])
    return erasure
