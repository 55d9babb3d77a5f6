"""Writing the events (JSON lines or Avro) and the truth file; `generate` puts it all together."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import gc
import hashlib
import pathlib
from typing import Iterator, Optional, Sequence

import fastavro
import fastavro.write
import orjson

from devtools.generate.archetypes import ARCHETYPE_NAMES
from devtools.generate.corruption import _Corruptor
from devtools.generate.population import UserProfile, sample_population
from devtools.generate.simulation import _iter_timed
from devtools.generate.cli import today_utc
from transforms.contracts.events import load_avro_schema

@dataclasses.dataclass(frozen=True)
class GenerationStats:
    """What `generate` wrote.

    Attributes:
      users: users simulated.
      events: valid, distinct events written.
      corrupt: invalid records written (sum of `corrupt_by_code`).
      duplicates: exact re-emissions of an earlier valid record.
      records: all records written (`events + corrupt + duplicates`).
      corrupt_by_code: invalid records per `ErrorCode` value.
      archetype_counts: users per archetype.
      output: the file written.
      format: "jsonl" or "avro".
      start: first day of the period (UTC, inclusive).
      end: end of the period (UTC, exclusive).
      truth: the truth CSV written, if any.
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



def _resolve_format(args: argparse.Namespace) -> str:
    fmt = getattr(args, "format", None)
    if fmt:
        return fmt
    return "avro" if str(args.out).lower().endswith(".avro") else "jsonl"


def _sync_marker(seed: int) -> bytes:
    return hashlib.sha256(f"segments-generate:{seed}".encode()).digest()[:16]


def write_truth(path: pathlib.Path, population: Sequence[UserProfile]) -> None:
    """Writes the `user_id,archetype` CSV."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write("user_id,archetype\n")
        handle.writelines(f"{user.user_id},{user.archetype}\n" for user in population)


# Lines joined per write. Small on purpose: each `orjson.dumps` result keeps its
# ~4 KiB output buffer for as long as it lives, whatever the line's length.
_CHUNK_LINES = 4096


def _write(population: list[UserProfile], days: int, end: dt.date, seed: int, rate: float, fmt: str,
           out: pathlib.Path) -> tuple[int, int, "_Corruptor"]:
    """Writes valid events interleaved with bad records; returns (events, records, corruptor)."""
    corruptor = _Corruptor(seed, rate, avro=fmt == "avro")
    remember, next_count = corruptor.remember, corruptor.next_count
    events = 0
    bad_records = 0
    if fmt == "avro":
        with open(out, "wb", buffering=1 << 20) as handle:
            # A sync marker derived from the seed keeps the file byte-reproducible.
            writer = fastavro.write.Writer(handle, fastavro.parse_schema(load_avro_schema()), codec="deflate",
                                           sync_marker=_sync_marker(seed))
            write = writer.write
            for ts, event in _iter_timed(population, days, end, seed):
                write(event)
                remember(event)
                events += 1
                count = next_count()
                if count:
                    for bad in corruptor.make(count, event, ts):
                        write(bad)
                    bad_records += count
            writer.flush()
    else:
        dumps = orjson.dumps
        chunk: list[bytes] = []
        append = chunk.append
        with open(out, "wb", buffering=1 << 20) as handle:
            for ts, event in _iter_timed(population, days, end, seed):
                line = dumps(event)
                append(line)
                remember(line)
                events += 1
                count = next_count()
                if count:
                    for bad in corruptor.make(count, event, ts):
                        append(bad if isinstance(bad, bytes) else dumps(bad))
                    bad_records += count
                    if len(chunk) >= _CHUNK_LINES:
                        handle.write(b"\n".join(chunk) + b"\n")
                        chunk.clear()
                elif len(chunk) >= _CHUNK_LINES:
                    handle.write(b"\n".join(chunk) + b"\n")
                    chunk.clear()
            if chunk:
                handle.write(b"\n".join(chunk) + b"\n")
    records = events + bad_records
    return events, records, corruptor


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


def generate(args: argparse.Namespace) -> GenerationStats:
    """Simulates the population and writes the events (and the truth CSV, if asked).

    Args:
      args: parsed flags of `add_arguments` (users, days, end, seed, format, out,
        corrupt_rate, truth); `end=None` means `today_utc()`.

    Returns:
      Counts of what was written. Prints nothing.
    """
    users, days, seed = args.users, args.days, args.seed
    end = args.end or today_utc()
    rate = getattr(args, "corrupt_rate", 0.0) or 0.0
    fmt = _resolve_format(args)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    population = sample_population(users, days, seed)
    archetype_counts = {name: 0 for name in ARCHETYPE_NAMES}
    for user in population:
        archetype_counts[user.archetype] += 1
    truth = getattr(args, "truth", None)
    if truth is not None:
        write_truth(truth, population)

    with _gc_paused():
        events, records, corruptor = _write(population, days, end, seed, rate, fmt, out)

    corrupt = sum(corruptor.by_code.values())
    return GenerationStats(
        users=users, events=events, corrupt=corrupt, duplicates=corruptor.duplicates, records=records,
        corrupt_by_code=dict(corruptor.by_code), archetype_counts=archetype_counts, output=str(out), format=fmt,
        start=end - dt.timedelta(days=days) if not isinstance(end, dt.datetime) else (end - dt.timedelta(days=days)).date(),
        end=end if not isinstance(end, dt.datetime) else end.date(), truth=str(truth) if truth is not None else None)


def generate_events(out, *, users: int, days: int, seed: int, end: Optional[dt.date] = None,
                    fmt: Optional[str] = None, corrupt_rate: float = 0.0, truth=None) -> GenerationStats:
    """`generate` for callers without parsed flags (the demo, the benchmark, tests)."""
    return generate(argparse.Namespace(users=users, days=days, end=end, seed=seed, format=fmt, out=out,
                                       corrupt_rate=corrupt_rate, truth=truth))
