"""The local sink: rows loaded into a local BigQuery-API server with google-cloud-bigquery.

Beam's BigQuery IO hard-codes googleapis.com, so for the local warehouse rows are batched
and each batch is loaded as newline-delimited JSON (the rows' own JSON form, the file
format of Beam's FILE_LOADS) with resumable uploads:

* bounded input: like production, every batch is staged (one staging table per load,
  since the emulator copies a table on every change) and all staging tables are MERGEd on
  the merge key in one statement after the last load, then dropped;
* unbounded input: rows are buffered in Beam state (one key per table) and loaded every
  ``flush_every`` of processing time, on a background thread: each load is staged in a
  table of its own and MERGEd as it lands (append-only tables are appended). The local
  DirectRunner runs every step on one thread, so a load waited for in the step (as the
  bounded path does at the end of each bundle) would stop the whole job for the
  warehouse's round trip (benchmarks/RESULTS_latency.md). A load's outcome is collected
  by the next timer firing, which re-arms itself while a load is in flight, so a failed
  load's rows always come out refused;
* append-only tables (dead letters, audit) are loaded directly with ``WRITE_APPEND``.

A load that fails after its retries refuses exactly its batch: its rows come out as
`Refused` (counted ``load_failed``), for `transforms.bigquery.write.WriteTable` to turn
into dead letters or keep in the fallback folder. Once a load has failed because the
warehouse did not answer, each later batch first asks it once, briefly
(`check_reachable`), so a dead warehouse costs seconds per batch, not minutes.
"""

from __future__ import annotations

import concurrent.futures
import datetime as dt
import enum
import logging
import threading
import uuid
from typing import Any, Iterator, Mapping, NamedTuple

import apache_beam as beam
from apache_beam.coders import BooleanCoder, PickleCoder
from apache_beam.options.pipeline_options import StandardOptions
from apache_beam.transforms import userstate, window
from apache_beam.transforms.timeutil import TimeDomain
from apache_beam.utils.timestamp import Duration, Timestamp

from transforms.bigquery.client import BigQueryTarget
from transforms.bigquery.loads import (WarehouseUnreachable, check_reachable, keep_staging, load_rows, merge_staging,
                                       stage_rows, write_errors)
from transforms.bigquery.tables import TableSpec
from transforms.contracts.outcomes import WriteCount, write_counter
from transforms.features.streaming_profiles import aligned

_LOG = logging.getLogger(__name__)


class Refused(NamedTuple):
    """A row the warehouse did not take, and why."""

    row: dict
    reason: str


class SinkTag(str, enum.Enum):
    """Outputs of `LoadBatchFn`."""

    REFUSED = "refused"  # `Refused` rows of the loads that failed
    STAGED = "staged"  # bounded input: (staging table, rows), for the final MERGE


def _unreachable(error: BaseException) -> bool:
    """Whether a failed call means the warehouse did not answer (rather than said no)."""
    import requests
    from google.api_core import exceptions

    return isinstance(error, (WarehouseUnreachable, requests.exceptions.ConnectionError,
                              requests.exceptions.Timeout, exceptions.RetryError, exceptions.ServiceUnavailable,
                              ConnectionError, TimeoutError))


class LoadBatchFn(beam.DoFn):
    """Local sink: loads one batch of validated rows; a failed load refuses its rows.

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
        self._loaded = write_counter(spec.name, WriteCount.LOADED)
        self._failed = write_counter(spec.name, WriteCount.LOAD_FAILED)

    def setup(self) -> None:
        self._client = self._target.client()
        self._loader = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="bq-load")
        self._warehouse_down = False

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
        target = self._target
        if self._warehouse_down:  # ask once, briefly, before another long upload
            check_reachable(self._client, target.project, target.dataset, deadline_s=5.0)
            self._warehouse_down = False
        table_id = target.table_id(self._spec.table)
        try:
            if self._merge_later:
                return stage_rows(self._client, self._spec, table_id, batch, target.staging_suffix,
                                  target.staging_owner()), len(batch)
            return None, load_rows(self._client, self._spec, table_id, batch, target.staging_suffix,
                                   target.staging_owner())
        except BaseException as error:
            self._warehouse_down = _unreachable(error)
            raise

    def _settle(self, load: concurrent.futures.Future, batch: list[Mapping[str, Any]]) -> Iterator[Any]:
        try:
            staging_id, rows = load.result()
        except write_errors() as exc:
            reason = f"load failed: {exc}"[:1000]
            _LOG.error("Load into %s failed for %d rows: %s", self._spec.name, len(batch), reason.splitlines()[0])
            self._failed.inc(len(batch))
            for row in batch:
                yield beam.pvalue.TaggedOutput(SinkTag.REFUSED.value, Refused(dict(row), reason))
            return
        if staging_id is None:
            self._loaded.inc(rows)
        else:
            yield (staging_id, rows)

    def teardown(self) -> None:
        loader = getattr(self, "_loader", None)
        if loader is not None:
            loader.shutdown(wait=True)
        client = getattr(self, "_client", None)
        if client is not None:
            client.close()


class _Loader:
    """A table's loads in flight (local streaming sink): a client and one loading thread, per process."""

    def __init__(self, spec: TableSpec, target: BigQueryTarget):
        self._spec = spec
        self._target = target
        self._client = target.client()
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"bq-{spec.name}")
        self._in_flight: list[tuple[concurrent.futures.Future, list]] = []

    def submit(self, rows: list) -> None:
        table_id = self._target.table_id(self._spec.table)
        load = self._pool.submit(load_rows, self._client, self._spec, table_id, rows, self._target.staging_suffix,
                                 self._target.staging_owner())
        self._in_flight.append((load, rows))

    def pending(self) -> bool:
        return bool(self._in_flight)

    def finished(self) -> list[tuple[concurrent.futures.Future, list]]:
        done = [(f, rows) for f, rows in self._in_flight if f.done()]
        self._in_flight = [(f, rows) for f, rows in self._in_flight if not f.done()]
        return done


_LOADERS: dict[str, _Loader] = {}
_LOADERS_LOCK = threading.Lock()


def wait_for_loads(timeout_s: float = 60.0) -> bool:
    """Waits for the local streaming sink's loads still in flight in this process (after a
    job was cancelled, before reading the warehouse); False if some did not finish in time."""
    with _LOADERS_LOCK:
        futures = [f for loader in _LOADERS.values() for f, _ in loader._in_flight]
    done, not_done = concurrent.futures.wait(futures, timeout=timeout_s)
    return not not_done


class BufferedLoadFn(beam.DoFn):
    """Local streaming sink: ``(key, row)`` -> rows loaded every `flush_every`, off the job's thread.

    Rows wait in a bag; a processing-time timer (armed by the first row after a flush)
    submits them as one load to the table's `_Loader` and emits, as `Refused`, the rows of
    the loads that finished failing since the last firing. While a load is in flight the
    timer is armed again, so every load's outcome is collected.
    """

    ROWS = userstate.BagStateSpec("rows", PickleCoder())
    ARMED = userstate.ReadModifyWriteStateSpec("armed", BooleanCoder())
    FLUSH = userstate.TimerSpec("flush", TimeDomain.REAL_TIME)

    def __init__(self, spec: TableSpec, target: BigQueryTarget, flush_every: dt.timedelta):
        self._spec = spec
        self._target = target
        self._every_s = flush_every.total_seconds()
        self._id = uuid.uuid4().hex  # the loader of this step, shared by its bundles in this process

    def setup(self) -> None:
        self._loaded = write_counter(self._spec.name, WriteCount.LOADED)
        self._failed = write_counter(self._spec.name, WriteCount.LOAD_FAILED)

    def _loader(self) -> _Loader:
        with _LOADERS_LOCK:
            loader = _LOADERS.get(self._id)
            if loader is None:
                loader = _LOADERS[self._id] = _Loader(self._spec, self._target)
            return loader

    def process(self, element: tuple[Any, Mapping[str, Any]], rows=beam.DoFn.StateParam(ROWS),
                armed=beam.DoFn.StateParam(ARMED), flush=beam.DoFn.TimerParam(FLUSH)) -> Iterator[Any]:
        rows.add(element[1])
        if not armed.read():
            # On whole seconds, with the profiles' flushes (`streaming_profiles.aligned`).
            flush.set(aligned(Timestamp.now() + Duration(seconds=self._every_s)))
            armed.write(True)
        return iter(())

    @userstate.on_timer(FLUSH)
    def on_flush(self, rows=beam.DoFn.StateParam(ROWS), armed=beam.DoFn.StateParam(ARMED),
                 flush=beam.DoFn.TimerParam(FLUSH)) -> Iterator[Any]:
        loader = self._loader()
        armed.clear()
        batch = list(rows.read())
        rows.clear()
        if batch:
            loader.submit(batch)
        for load, loaded_rows in loader.finished():
            try:
                self._loaded.inc(load.result())
            except write_errors() as exc:
                reason = f"load failed: {exc}"[:1000]
                _LOG.error("Load into %s failed for %d rows: %s", self._spec.name, len(loaded_rows),
                           reason.splitlines()[0])
                self._failed.inc(len(loaded_rows))
                for row in loaded_rows:
                    yield Refused(dict(row), reason)
        if loader.pending():
            flush.set(aligned(Timestamp.now() + Duration(seconds=min(self._every_s, 0.5))))
            armed.write(True)


class MergeStagedRowsFn(beam.DoFn):
    """Local bounded sink: one MERGE of every staged batch, once the last one is loaded.

    A MERGE reads the whole target table, so one per run instead of one per batch keeps
    a large run linear. If the MERGE fails, the job fails and the staging tables are kept
    (their names are in the error, and they are marked kept so that no sweep drops them),
    so nothing loaded is lost.
    """

    def __init__(self, spec: TableSpec, target: BigQueryTarget):
        self._spec = spec
        self._target = target
        self._loaded = write_counter(spec.name, WriteCount.LOADED)

    def process(self, staged: list[tuple[str, int]]) -> Iterator[int]:
        if not staged:
            return
        staging_ids = sorted(table for table, _ in staged)
        client = self._target.client()
        try:
            merge_staging(client, self._spec, self._target.table_id(self._spec.table), staging_ids)
        except Exception as exc:
            message = (f"MERGE into {self._spec.name} failed; the staged rows are kept in "
                       f"{', '.join(staging_ids)}: {exc}")
            keep_staging(client, staging_ids, message)
            raise RuntimeError(message) from exc
        finally:
            client.close()
        rows = sum(n for _, n in staged)
        self._loaded.inc(rows)
        yield rows


class LocalSink(beam.PTransform):
    """Validated rows of one table -> loaded into the local warehouse; returns the `Refused` rows.

    Args:
        spec: the table.
        target: a local `BigQueryTarget`.
    """

    def __init__(self, spec: TableSpec, target: BigQueryTarget, flush_every: dt.timedelta = dt.timedelta(seconds=1)):
        super().__init__()
        self._spec = spec
        self._target = target
        self._flush_every = flush_every

    def expand(self, rows: beam.PCollection[dict]) -> beam.PCollection[Refused]:
        options = rows.pipeline.options
        unbounded = not rows.is_bounded or bool(options and options.view_as(StandardOptions).streaming)
        if self._target.streaming and unbounded:
            # Each load MERGEd as it lands, `flush_every` apart, off the job's thread.
            return (rows
                    | "OneKey" >> beam.Map(lambda row: (0, row)).with_output_types(tuple[int, dict])
                    | "Load" >> beam.ParDo(BufferedLoadFn(self._spec, self._target, self._flush_every)))
        # Bounded input: every batch is staged, all are MERGEd once at the end (as on the
        # production path); with a streaming target, each batch is MERGEd as it lands.
        merge_later = not self._target.streaming and self._spec.merge_key is not None
        loaded = (
            rows
            # Fixed-size batches (the tail flushes at the end of each bundle): every
            # batch costs a load job, so small adaptive batches are slow.
            | "Batch" >> beam.BatchElements(min_batch_size=self._target.batch_size,
                                            max_batch_size=self._target.batch_size)
            | "Load" >> beam.ParDo(LoadBatchFn(self._spec, self._target, merge_later)).with_outputs(
                SinkTag.REFUSED.value, main=SinkTag.STAGED.value)
        )
        if merge_later:
            _ = (loaded[SinkTag.STAGED.value]
                 | "AllStaged" >> beam.combiners.ToList()
                 | "Merge" >> beam.ParDo(MergeStagedRowsFn(self._spec, self._target)))
        return loaded[SinkTag.REFUSED.value]
