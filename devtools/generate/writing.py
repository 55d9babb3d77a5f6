"""Writing the events (JSON lines or Avro), the hold-out file and the truth; `generate` runs it all.

Files. Without `--holdout_days` every event goes to `--out`. With `--holdout_days N`
the simulation covers `--days + N` days ending at `--end`; events before the
calibration end (`--end` minus N days, 00:00 UTC) go to `--out`, the others to the
hold-out file (`--holdout_out`, default `<out stem>.holdout<suffix>`). The split is
by each event's own time, so a session that spans the calibration end is split too.
Corrupt records and duplicates (`--corrupt-rate`) go to the calibration file only;
the hold-out file holds valid, distinct events.

Avro: `properties.order_id` is written only if the schema
(`transforms/contracts/schemas/event_v1.avsc`) has the field, so it appears once the
contract adds it; JSON lines always carry it.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import gc
import hashlib
import pathlib
from typing import Any, Iterator, Optional

import fastavro
import fastavro.write
import orjson

from devtools.generate.archetypes import ARCHETYPE_NAMES, DAY_MS
from devtools.generate.cli import today_utc
from devtools.generate.corruption import _Corruptor
from devtools.generate.population import sample_population
from devtools.generate.simulation import end_ms, simulator
from devtools.generate.truth import params_path, truth_params, write_params, write_truth
from transforms.contracts.events import load_avro_schema

# Properties the simulation writes that the contract may not have yet.
_NEW_PROPERTIES: tuple[str, ...] = ("order_id",)


@dataclasses.dataclass(frozen=True)
class GenerationStats:
    """What `generate` wrote.

    Attributes:
      users: users simulated.
      events: valid, distinct events written to `output` (the calibration file).
      corrupt: invalid records written (sum of `corrupt_by_code`).
      duplicates: exact re-emissions of an earlier valid record.
      records: all records written to `output` (`events + corrupt + duplicates`).
      corrupt_by_code: invalid records per `ErrorCode` value.
      archetype_counts: users per archetype.
      output: the (calibration) file written.
      format: "jsonl" or "avro".
      start: first day of the simulated period (UTC, inclusive).
      end: end of the simulated period (UTC, exclusive).
      truth: the truth CSV written, if any.
      calibration_end: end of the calibration period (UTC, exclusive): `end` minus
        `holdout_days`.
      holdout_days: days after the calibration end written to `holdout_output`.
      holdout_output: the hold-out file written, if any.
      holdout_events: valid events written to `holdout_output` (all of its records).
      params: the truth parameters JSON written, if any.
      failed_checkouts: orders an `--incident` turned into failed checkouts (both files).
    """

    users: int
    events: int
    corrupt: int
    duplicates: int
    records: int
    corrupt_by_code: dict[str, int]
    archetype_counts: dict[str, int]
    output: str
    format: str
    start: dt.date
    end: dt.date
    truth: Optional[str] = None
    calibration_end: Optional[dt.date] = None
    holdout_days: int = 0
    holdout_output: Optional[str] = None
    holdout_events: int = 0
    params: Optional[str] = None
    failed_checkouts: int = 0


def _resolve_format(args: argparse.Namespace) -> str:
    fmt = getattr(args, "format", None)
    if fmt:
        return fmt
    return "avro" if str(args.out).lower().endswith(".avro") else "jsonl"


def default_holdout_path(out: pathlib.Path) -> pathlib.Path:
    """`<out stem>.holdout<suffix>`, e.g. events.jsonl -> events.holdout.jsonl."""
    out = pathlib.Path(out)
    return out.with_name(f"{out.stem}.holdout{out.suffix}")


def _sync_marker(seed: int, label: str = "") -> bytes:
    return hashlib.sha256(f"segments-generate:{seed}{label}".encode()).digest()[:16]


# Lines joined per write. Small on purpose: each `orjson.dumps` result keeps its
# ~4 KiB output buffer for as long as it lives, whatever the line's length.
_CHUNK_LINES = 4096


class _JsonLinesSink:
    """Writes valid events as JSON lines, each followed by the corruptor's bad records (if any)."""

    def __init__(self, path: pathlib.Path, corruptor: Optional[_Corruptor]):
        self.handle = open(path, "wb", buffering=1 << 20)
        self.corruptor = corruptor
        self.chunk: list[bytes] = []
        self.events = 0
        self.bad = 0

    def write(self, ts: int, event: dict) -> None:
        chunk = self.chunk
        line = orjson.dumps(event)
        chunk.append(line)
        self.events += 1
        corruptor = self.corruptor
        if corruptor is not None:
            corruptor.remember(line)
            count = corruptor.next_count()
            if count:
                for bad in corruptor.make(count, event, ts):
                    chunk.append(bad if isinstance(bad, bytes) else orjson.dumps(bad))
                self.bad += count
        if len(chunk) >= _CHUNK_LINES:
            self.handle.write(b"\n".join(chunk) + b"\n")
            chunk.clear()

    def close(self) -> None:
        if self.chunk:
            self.handle.write(b"\n".join(self.chunk) + b"\n")
            self.chunk.clear()
        self.handle.close()


class _AvroSink:
    """Writes valid events as Avro records (event contract v1 schema), with the corruptor's bad records."""

    def __init__(self, path: pathlib.Path, corruptor: Optional[_Corruptor], sync_marker: bytes):
        schema = load_avro_schema()
        self.handle = open(path, "wb", buffering=1 << 20)
        # A sync marker derived from the seed keeps the file byte-reproducible.
        self.writer = fastavro.write.Writer(self.handle, fastavro.parse_schema(schema), codec="deflate",
                                            sync_marker=sync_marker)
        self.unknown = tuple(name for name in _NEW_PROPERTIES if name not in _avro_property_names(schema))
        self.corruptor = corruptor
        self.events = 0
        self.bad = 0

    def _record(self, record: Any) -> Any:
        props = record.get("properties") if isinstance(record, dict) else None
        if self.unknown and isinstance(props, dict) and any(name in props for name in self.unknown):
            record = dict(record, properties={k: v for k, v in props.items() if k not in self.unknown})
        return record

    def write(self, ts: int, event: dict) -> None:
        record = self._record(event)
        self.writer.write(record)
        self.events += 1
        corruptor = self.corruptor
        if corruptor is not None:
            corruptor.remember(record)
            count = corruptor.next_count()
            if count:
                for bad in corruptor.make(count, event, ts):
                    self.writer.write(self._record(bad))
                self.bad += count

    def close(self) -> None:
        self.writer.flush()
        self.handle.close()


def _avro_property_names(schema: dict) -> set[str]:
    """Field names of the `properties` record of the event schema."""
    for field in schema["fields"]:
        if field["name"] == "properties":
            for branch in field["type"]:
                if isinstance(branch, dict) and branch.get("type") == "record":
                    return {f["name"] for f in branch["fields"]}
    return set()


def _sink(fmt: str, path: pathlib.Path, corruptor: Optional[_Corruptor], seed: int, label: str):
    if fmt == "avro":
        return _AvroSink(path, corruptor, _sync_marker(seed, label))
    return _JsonLinesSink(path, corruptor)


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pauses the cyclic garbage collector: the simulation allocates millions of
    short-lived acyclic dicts, and generational scans of them cost a third of the run."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _as_date(value: dt.date) -> dt.date:
    return value.date() if isinstance(value, dt.datetime) else value


def generate(args: argparse.Namespace) -> GenerationStats:
    """Simulates the population and writes the events (and the hold-out file and the truth, if asked).

    Args:
      args: parsed flags of `add_arguments` (users, days, holdout_days, holdout_out,
        end, seed, format, out, corrupt_rate, truth); `end=None` means `today_utc()`.

    Returns:
      Counts of what was written. Prints nothing.

    Raises:
      ValueError: `holdout_out` without `holdout_days`, or the same path as `out`.
    """
    users, days, seed = args.users, args.days, args.seed
    holdout_days = getattr(args, "holdout_days", 0) or 0
    end = args.end or today_utc()
    rate = getattr(args, "corrupt_rate", 0.0) or 0.0
    fmt = _resolve_format(args)
    out = pathlib.Path(args.out)
    holdout_out = getattr(args, "holdout_out", None)
    if holdout_out is not None and not holdout_days:
        raise ValueError("--holdout_out needs --holdout_days (a positive number of days)")
    if holdout_days:
        holdout_out = pathlib.Path(holdout_out) if holdout_out is not None else default_holdout_path(out)
        if holdout_out.resolve() == out.resolve():
            raise ValueError(f"the hold-out file must differ from --out ({out})")
    total_days = days + holdout_days
    period_end_ms = end_ms(end)
    start_ms = period_end_ms - total_days * DAY_MS
    calibration_end_ms = period_end_ms - holdout_days * DAY_MS
    start = _as_date(end - dt.timedelta(days=total_days))

    population = sample_population(users, days, seed, holdout_days=holdout_days)
    archetype_counts = {name: 0 for name in ARCHETYPE_NAMES}
    for user in population:
        archetype_counts[user.archetype] += 1
    truth = getattr(args, "truth", None)
    incident = getattr(args, "incident", None)
    sim = simulator(population, total_days, end, seed, incident)
    params = None
    if truth is not None:
        write_truth(truth, population, start_ms=start_ms, calibration_end_ms=calibration_end_ms,
                    affected=sim.affected)
        params = params_path(truth)
        described = truth_params(start=start, end=_as_date(end), days=days, holdout_days=holdout_days,
                                 users=users, seed=seed, archetype_counts=archetype_counts)
        if incident is not None:
            described["incident"] = incident.as_params()
        write_params(params, described)

    out.parent.mkdir(parents=True, exist_ok=True)
    corruptor = _Corruptor(seed, rate, avro=fmt == "avro")
    calibration = _sink(fmt, out, corruptor, seed, "")
    holdout = None
    if holdout_out is not None:
        holdout_out.parent.mkdir(parents=True, exist_ok=True)
        holdout = _sink(fmt, holdout_out, None, seed, ":holdout")
    try:
        with _gc_paused():
            write_calibration = calibration.write
            for ts, event in sim.run():
                if ts < calibration_end_ms:
                    write_calibration(ts, event)
                else:
                    holdout.write(ts, event)
    finally:
        calibration.close()
        if holdout is not None:
            holdout.close()

    corrupt = sum(corruptor.by_code.values())
    return GenerationStats(
        users=users, events=calibration.events, corrupt=corrupt, duplicates=corruptor.duplicates,
        records=calibration.events + calibration.bad, corrupt_by_code=dict(corruptor.by_code),
        archetype_counts=archetype_counts, output=str(out), format=fmt, start=start, end=_as_date(end),
        truth=str(truth) if truth is not None else None,
        calibration_end=_as_date(end - dt.timedelta(days=holdout_days)), holdout_days=holdout_days,
        holdout_output=str(holdout_out) if holdout_out is not None else None,
        holdout_events=holdout.events if holdout is not None else 0,
        params=str(params) if params is not None else None, failed_checkouts=sim.failed_checkouts)


def generate_events(out, *, users: int, days: int, seed: int, end: Optional[dt.date] = None,
                    fmt: Optional[str] = None, corrupt_rate: float = 0.0, truth=None, holdout_days: int = 0,
                    holdout_out=None, incident=None) -> GenerationStats:
    """`generate` for callers without parsed flags (the demo, the benchmark, tests).

    `fmt=None` infers the format from `out` (avro for ".avro", else jsonl).
    """
    return generate(argparse.Namespace(users=users, days=days, end=end, seed=seed, format=fmt, out=out,
                                       corrupt_rate=corrupt_rate, truth=truth, holdout_days=holdout_days,
                                       holdout_out=holdout_out, incident=incident))
