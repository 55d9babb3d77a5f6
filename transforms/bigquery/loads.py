"""Load jobs through google-cloud-bigquery: the local sink's writes, and the driver's audit row.

Rows are loaded as newline-delimited JSON (the file format Beam's FILE_LOADS writes) with
resumable uploads, into a staging table and MERGEd (tables with a merge key) or appended.
Works against the local warehouse and real BigQuery alike.

Staging tables are named ``<table>__<staging suffix>_<random>``; a batch run's suffix
names the run (``staging_<run token>``), and each staging table's description records
the run and the process that made it (`StagingOwner`). `sweep_staging` removes the
staging tables of runs that stopped without cleaning up (killed, or interrupted before
their MERGE), and of one run on demand (Ctrl-C).

Every call here fails within about a minute when the warehouse does not answer: uploads
retry twice, jobs are awaited for at most `JOB_DEADLINE_S`, and `check_reachable` asks
once with a short deadline (the client's defaults retry for ten minutes).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import io
import json
import logging
import os
import socket
import threading
import uuid
from typing import Any, Iterable, Mapping, Optional, Sequence

import orjson

from transforms.bigquery.merge import merge_sql
from transforms.bigquery.rows import validate_row
from transforms.bigquery.tables import TABLES, Table, TableSpec, schema_fields
from transforms.contracts.outcomes import first_line

_LOG = logging.getLogger(__name__)

JOB_DEADLINE_S = 60.0
UPLOAD_RETRIES = 2
# (connect, read) seconds per HTTP request of an upload.
UPLOAD_TIMEOUT = (10.0, 120.0)
STAGING_MARK = "__staging"
# A staging table whose maker cannot be asked (another machine, or no record) is a
# leftover once it is this old: no batch run takes a day to go from load to MERGE.
STAGING_MAX_AGE = dt.timedelta(hours=24)


# Set by a driver that is stopping (Ctrl-C) on the local runner, whose loads run in the
# driver's process: no staging table is made (or kept) after it. A job on remote workers
# is cancelled through its runner instead.
STOPPING = threading.Event()


class Stopping(RuntimeError):
    """The process is stopping: a load was not started, or its staging table was dropped."""


class WarehouseUnreachable(ConnectionError):
    """The warehouse did not answer (one line, for the console)."""


def _short_retry(deadline_s: float = JOB_DEADLINE_S):
    from google.cloud import bigquery

    # The emulator answers a bad value with HTTP 500; do not retry that for 10 minutes.
    return bigquery.DEFAULT_RETRY.with_deadline(deadline_s)


def write_errors() -> tuple[type, ...]:
    """The exceptions a load or query raises when the warehouse refuses it or cannot be reached."""
    import requests
    from google.api_core import exceptions
    from google.auth import exceptions as auth_exceptions

    return (exceptions.GoogleAPIError, exceptions.RetryError, requests.exceptions.RequestException,
            auth_exceptions.GoogleAuthError, ConnectionError, TimeoutError, ValueError)


def check_reachable(client, project: str, dataset: str, deadline_s: float = 10.0) -> None:
    """Asks the warehouse for the dataset once, with a short deadline.

    A missing dataset is fine (the job creates it); no answer is not.

    Raises:
      WarehouseUnreachable: no answer within about `deadline_s` seconds.
    """
    from google.api_core.exceptions import NotFound

    try:
        client.get_dataset(f"{project}.{dataset}", retry=_short_retry(deadline_s), timeout=min(10.0, deadline_s))
    except NotFound:
        return
    except write_errors() as error:
        where = getattr(getattr(client, "_connection", None), "API_BASE_URL", None) or "BigQuery"
        raise WarehouseUnreachable(
            f"cannot reach the warehouse at {where} (project {project}): {first_line(error, 300)}") from None


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


def _load(client, spec: TableSpec, table_id: str, rows: Sequence[Mapping[str, Any]], disposition: str,
          create: bool = True) -> None:
    from google.cloud import bigquery

    config = bigquery.LoadJobConfig(
        source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON,
        schema=schema_fields(spec),
        # A staging table made with its owner must not come back, ownerless, after a sweep dropped it.
        create_disposition=(bigquery.CreateDisposition.CREATE_IF_NEEDED if create
                            else bigquery.CreateDisposition.CREATE_NEVER),
        write_disposition=disposition,
    )
    payload = io.BytesIO(ndjson_bytes(rows))
    job = client.load_table_from_file(payload, table_id, job_config=config, num_retries=UPLOAD_RETRIES,
                                      timeout=UPLOAD_TIMEOUT)
    job.result(retry=_short_retry(), timeout=JOB_DEADLINE_S)


def merge_staging(client, spec: TableSpec, table_id: str, staging_ids: Sequence[str], retry=None) -> None:
    """MERGEs staging tables into `table_id` in one statement (see `merge_sql`), then drops them.

    `retry`: the query's retry policy; by default a 60-second deadline (`_short_retry`),
    for the local emulator.
    """
    client.query(merge_sql(spec, table_id, staging_ids), retry=retry or _short_retry()).result()
    for staging_id in staging_ids:
        client.delete_table(staging_id, not_found_ok=True, retry=_short_retry())


# ----------------------------------------------------------------------------- staging tables


@dataclasses.dataclass(frozen=True)
class StagingOwner:
    """Who made a staging table: the run and the process, kept in the table's description."""

    run_id: str
    host: str
    pid: int
    kept: bool = False  # a failed MERGE keeps its staged rows for a person: never swept

    @classmethod
    def here(cls, run_id: str) -> "StagingOwner":
        return cls(run_id, socket.gethostname(), os.getpid())

    def description(self) -> str:
        return json.dumps({"segments_staging": dataclasses.asdict(self)}, sort_keys=True)

    @classmethod
    def parse(cls, description: Optional[str]) -> Optional["StagingOwner"]:
        try:
            fields = json.loads(description or "")["segments_staging"]
            return cls(str(fields["run_id"]), str(fields["host"]), int(fields["pid"]), bool(fields.get("kept")))
        except (ValueError, KeyError, TypeError):
            return None

    def alive(self) -> bool:
        """Whether the process that made the table still runs (unknown off this host: assumed so)."""
        if self.host != socket.gethostname():
            return True
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        try:  # a zombie has finished
            with open(f"/proc/{self.pid}/stat") as handle:
                return handle.read().split(") ", 1)[1][:1] != "Z"
        except (OSError, IndexError):
            return True


def staging_table_id(table_id: str, suffix: str = "staging") -> str:
    """A new staging table next to `table_id`: ``<table>__<suffix>_<random>``."""
    return f"{table_id}__{suffix}_{uuid.uuid4().hex[:12]}"


def stage_rows(client, spec: TableSpec, table_id: str, rows: Sequence[Mapping[str, Any]],
               suffix: str = "staging", owner: Optional[StagingOwner] = None) -> str:
    """Loads validated rows into a new staging table next to `table_id`; returns its id.

    One table per load, not one growing table: the local emulator copies a table after
    every change (time travel), so appending to one staging table costs quadratic time.
    With an `owner`, the table is made first with the owner in its description, so that
    `sweep_staging` can tell a live run's table from a leftover.
    """
    from google.cloud import bigquery

    staging_id = staging_table_id(table_id, suffix)
    if STOPPING.is_set():
        raise Stopping(f"not staging {len(rows)} rows: the run is stopping")
    try:
        if owner is not None:
            table = bigquery.Table(staging_id, schema=schema_fields(spec))
            table.description = owner.description()
            client.create_table(table, retry=_short_retry(), timeout=UPLOAD_TIMEOUT[1])
            if STOPPING.is_set():  # stopped while the table was being made: do not leave it
                raise Stopping(f"not staging {len(rows)} rows: the run is stopping")
        _load(client, spec, staging_id, rows, bigquery.WriteDisposition.WRITE_TRUNCATE, create=owner is None)
        if STOPPING.is_set():
            raise Stopping(f"staged {len(rows)} rows as the run stopped: dropped")
    except BaseException:
        _drop_quietly(client, staging_id)
        raise
    return staging_id


def _drop_quietly(client, table_id: str) -> None:
    try:
        client.delete_table(table_id, not_found_ok=True, retry=_short_retry(10), timeout=10)
    except Exception as error:  # noqa: BLE001 - the caller reports the first failure, and a sweep the rest
        _LOG.warning("could not drop %s: %s", table_id, first_line(error, 300))


def keep_staging(client, staging_ids: Iterable[str], reason: str) -> None:
    """Marks staging tables as kept (a failed MERGE's rows): `sweep_staging` leaves them alone."""
    for staging_id in staging_ids:
        try:
            table = client.get_table(staging_id, retry=_short_retry(10))
            owner = StagingOwner.parse(table.description) or StagingOwner("unknown", "", 0)
            table.description = dataclasses.replace(owner, kept=True).description() + f"\n{reason}"[:1000]
            client.update_table(table, ["description"], retry=_short_retry(10))
        except Exception as error:  # noqa: BLE001 - the tables stay either way; this only labels them
            _LOG.warning("could not mark %s as kept: %s", staging_id, first_line(error, 300))


@dataclasses.dataclass
class Swept:
    """What `sweep_staging` removed: staging tables and their rows, per run id."""

    tables: dict[str, list[str]] = dataclasses.field(default_factory=dict)
    rows: dict[str, int] = dataclasses.field(default_factory=dict)

    def add(self, run_id: str, table_id: str, rows: int) -> None:
        self.tables.setdefault(run_id, []).append(table_id)
        self.rows[run_id] = self.rows.get(run_id, 0) + rows

    @property
    def count(self) -> int:
        return sum(map(len, self.tables.values()))


def sweep_staging(client, project: str, dataset: str, *, run_id: Optional[str] = None,
                  now: Optional[dt.datetime] = None, max_age: dt.timedelta = STAGING_MAX_AGE) -> Swept:
    """Drops leftover staging tables of `dataset` (never ones marked kept).

    With `run_id`: every staging table of that run (a run cleaning up after itself).
    Without: the tables of runs whose process has ended on this host, and any staging
    table older than `max_age` whose maker cannot be asked.
    Unowned tables (made without an owner) are reported under run id ``unknown``.
    """
    from google.api_core.exceptions import NotFound

    now = now or dt.datetime.now(dt.timezone.utc)
    swept = Swept()
    for item in client.list_tables(f"{project}.{dataset}", retry=_short_retry(20), timeout=10):
        if STAGING_MARK not in item.table_id:
            continue
        try:
            table = client.get_table(item.reference, retry=_short_retry(20), timeout=10)
        except NotFound:  # dropped since the listing (by its own run, as it stopped)
            continue
        owner = StagingOwner.parse(table.description)
        if owner is not None and owner.kept:
            continue
        if run_id is not None:
            doomed = owner is not None and owner.run_id == run_id
        elif owner is not None and owner.host == socket.gethostname():
            doomed = not owner.alive()
        else:
            doomed = table.created is not None and now - table.created > max_age
        if doomed:
            client.delete_table(table.reference, not_found_ok=True, retry=_short_retry(20), timeout=10)
            swept.add(owner.run_id if owner else "unknown", f"{project}.{dataset}.{item.table_id}",
                      int(table.num_rows or 0))
    return swept


# ----------------------------------------------------------------------------- loads


def load_rows(client, spec: TableSpec, table_id: str, rows: Sequence[Mapping[str, Any]],
              suffix: str = "staging", owner: Optional[StagingOwner] = None) -> int:
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
    staging_id = stage_rows(client, spec, table_id, rows, suffix, owner)
    try:
        merge_staging(client, spec, table_id, [staging_id])
    except BaseException:
        _drop_quietly(client, staging_id)
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
