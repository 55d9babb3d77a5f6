"""Profile snapshots: every user's `Profile` as of a midnight, in Avro files, to start a streaming job from.

A streaming job keeps each user's profile in Beam state; a new job (a first launch, or a
change Dataflow cannot update in place) would start with none and score every returning
customer as new. The batch job therefore writes, with ``--snapshot_dir``, every user's
profile as of its ``--as_of`` (the state the streaming job would hold had it read the same
events), and a streaming job started with the same ``--snapshot_dir`` reads the latest
one of its feature version and seeds each user's state with it before applying any of
their events (`transforms.features.streaming_profiles`).

Layout (a local folder or ``gs://``)::

    <snapshot_dir>/<feature_version>/as_of=<YYYY-MM-DD>/profiles-SSSSS-of-NNNNN.avro

One Avro record per user (`SNAPSHOT_SCHEMA`, deflate-compressed): the pseudonymous
``user_key``, the feature version, ``as_of_us`` and the profile state as JSON (`encode` /
`decode`: plain numbers and strings, never a pickle, so reading a snapshot runs no code).
A profile holds at most about 93 day activities, so a record is a few kilobytes however
long the user's history. The state format is versioned with the feature version: a job of
another feature version refuses the snapshot (`decode`), and must be started from a batch
run of its own version.

Snapshots hold personal data (pseudonymous, but per user): `erase_users` rewrites every
snapshot file without the erased users (`segments erase` calls it), and a streaming job
drops the seeds of the users on the suppression list it reads (`ReadSeeds`), whose events
its privacy step already filters, so no state is kept for them.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Iterable, Optional

import apache_beam as beam
import fastavro
import orjson
from apache_beam.io import fileio
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems
from apache_beam.io.fileio import EmptyMatchTreatment

from transforms.contracts.feature_spec import FEATURE_VERSION
from transforms.contracts.outcomes import counter
from transforms.features.activity import US_PER_DAY, Activity, SessionSummary
from transforms.features.profile import Profile

STATE_FORMAT = 1  # bump when the JSON state layout changes
SNAPSHOT_SCHEMA: dict = {
    "type": "record",
    "name": "ProfileSnapshot",
    "namespace": "segments",
    "doc": "One user's profile state as of a midnight (transforms/features/snapshots.py).",
    "fields": [
        {"name": "user_key", "type": "string", "doc": "pseudonymous user key"},
        {"name": "feature_version", "type": "string"},
        {"name": "state_format", "type": "int"},
        {"name": "as_of_us", "type": {"type": "long", "logicalType": "timestamp-micros"},
         "doc": "the profile read every event before this time"},
        {"name": "state", "type": "bytes", "doc": "the Profile as JSON (snapshots.encode)"},
    ],
}
_PARSED_SCHEMA = fastavro.parse_schema(SNAPSHOT_SCHEMA)
_AS_OF_DIR = re.compile(r"as_of=(\d{4}-\d{2}-\d{2})/?$")
FILE_PREFIX = "profiles"
# Seeds share the streaming step's input with packed events: a pickle never starts with these bytes.
SEED_MARK = b"profile-seed:"
SEEDS_SUPPRESSED = "snapshot_seeds_suppressed"  # counter: seeds of users on the suppression list


class SnapshotMismatch(ValueError):
    """A snapshot of another feature version or state format than this code reads."""


# -- the state as plain data ----------------------------------------------------------------


def _activity(a: Activity) -> list:
    return list(a.__getstate__())


def _from_activity(values: list) -> Activity:
    activity = Activity()
    if len(values) != len(Activity.__slots__):
        raise SnapshotMismatch(f"an activity of {len(values)} fields, expected {len(Activity.__slots__)}")
    activity.__setstate__(tuple(values))
    return activity


def encode(profile: Profile) -> bytes:
    """A profile as JSON bytes (day numbers and ids as they are; no code, no pickle)."""
    return orjson.dumps({
        "days": [[day, _activity(a)] for day, a in sorted(profile.days.items())],
        "settled": _activity(profile.settled),
        "settled_before": profile.settled_before,
        "seen": profile.seen,
        "orders": profile.orders,
        "sessions": {sid: [list(s) for s in summaries] for sid, summaries in profile.sessions.items()},
        "watermark_day": profile.watermark_day,
    })


def decode(state: bytes) -> Profile:
    """The inverse of `encode`."""
    plain = orjson.loads(state)
    profile = Profile()
    profile.days = {int(day): _from_activity(values) for day, values in plain["days"]}
    profile.settled = _from_activity(plain["settled"])
    profile.settled_before = plain["settled_before"]
    profile.seen = dict(plain["seen"])
    profile.orders = dict(plain["orders"])
    profile.sessions = {sid: [SessionSummary(*s) for s in summaries] for sid, summaries in plain["sessions"].items()}
    profile.watermark_day = plain["watermark_day"]
    return profile


def snapshot_record(user_key: str, profile: Profile, as_of_us: int) -> dict:
    """The Avro record of one user's profile as of `as_of_us`."""
    return {"user_key": user_key, "feature_version": FEATURE_VERSION, "state_format": STATE_FORMAT,
            "as_of_us": as_of_us, "state": encode(profile)}


def check_version(record: dict) -> None:
    """`SnapshotMismatch` unless `record` is of this code's feature version and state format."""
    if record["feature_version"] != FEATURE_VERSION or record["state_format"] != STATE_FORMAT:
        raise SnapshotMismatch(f"snapshot of feature version {record['feature_version']} (state format "
                               f"{record['state_format']}); this job reads {FEATURE_VERSION} ({STATE_FORMAT})")


def profile_of(record: dict) -> tuple[str, Profile]:
    """``(user_key, profile)`` of a snapshot record; `SnapshotMismatch` for another version."""
    check_version(record)
    return record["user_key"], decode(record["state"])


def _as_of_us(record: dict) -> int:
    value = record["as_of_us"]
    if isinstance(value, dt.datetime):  # fastavro returns timestamp-micros as an aware datetime
        return (value - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(microseconds=1)
    return int(value)


# -- where snapshots live --------------------------------------------------------------------


def snapshot_prefix(snapshot_dir: str, as_of_us: int) -> str:
    """The file prefix of the snapshot as of `as_of_us` (a midnight) under `snapshot_dir`."""
    day = dt.date(1970, 1, 1) + dt.timedelta(days=as_of_us // US_PER_DAY)
    return FileSystems.join(snapshot_dir, FEATURE_VERSION, f"as_of={day.isoformat()}", FILE_PREFIX)


def latest_snapshot(snapshot_dir: str) -> Optional[tuple[str, int]]:
    """``(file pattern, as_of_us)`` of the latest snapshot of this feature version, or None."""
    pattern = FileSystems.join(snapshot_dir, FEATURE_VERSION, "as_of=*", FILE_PREFIX + "-*.avro")
    found: dict[str, str] = {}
    for match in FileSystems.match([pattern])[0].metadata_list:
        folder = match.path.rsplit("/", 1)[0]
        hit = _AS_OF_DIR.search(folder)
        if hit:
            found[hit.group(1)] = folder
    if not found:
        return None
    day = max(found)
    as_of_us = (dt.date.fromisoformat(day) - dt.date(1970, 1, 1)).days * US_PER_DAY
    return FileSystems.join(found[day], FILE_PREFIX + "-*.avro"), as_of_us


def snapshot_files(snapshot_dir: str) -> list[str]:
    """Every snapshot file under `snapshot_dir`, of any feature version."""
    pattern = FileSystems.join(snapshot_dir, "*", "as_of=*", FILE_PREFIX + "-*.avro")
    return sorted(m.path for m in FileSystems.match([pattern])[0].metadata_list)


# -- in pipelines -----------------------------------------------------------------------------


class WriteProfileSnapshot(beam.PTransform):
    """``(user_key, Profile)`` as of `as_of_us` -> Avro files under `snapshot_dir` (see the module docstring).

    Args:
        snapshot_dir: a local folder or ``gs://`` prefix.
        as_of_us: the midnight the profiles are as of (known when the graph is built).
    """

    def __init__(self, snapshot_dir: str, as_of_us: int):
        super().__init__()
        self._prefix = snapshot_prefix(snapshot_dir, as_of_us)
        self._as_of_us = as_of_us

    def expand(self, profiles: beam.PCollection[tuple[str, Profile]]):
        as_of_us = self._as_of_us
        return (
            profiles
            | "ToRecords" >> beam.MapTuple(lambda user, profile: snapshot_record(user, profile, as_of_us))
            | "WriteAvro" >> beam.io.WriteToAvro(self._prefix, SNAPSHOT_SCHEMA, file_name_suffix=".avro",
                                                 codec="deflate")
        )


class _DropSuppressedFn(beam.DoFn):
    """Drops the seeds of users on the suppression list (erased after the snapshot was written)."""

    def __init__(self, key, suppression_list: str):
        self._key = key
        self._suppression_list = suppression_list

    def setup(self):
        from transforms.ingest.privacy import pseudonymise, read_suppression_list

        self._erased = frozenset(pseudonymise(self._key, user_id)
                                 for user_id in read_suppression_list(self._suppression_list))
        self._dropped = counter(SEEDS_SUPPRESSED)

    def process(self, seed: tuple[str, bytes]) -> Iterable[tuple[str, bytes]]:
        if seed[0] in self._erased:
            self._dropped.inc()
            return
        yield seed


class ReadSeeds(beam.PTransform):
    """Avro snapshot files -> ``(user_key, SEED_MARK + state)``: the seeds of a streaming job
    (`streaming_profiles.UpdateProfileFn` decodes them), refusing another feature version.

    Args:
        pattern: the snapshot's files (`latest_snapshot`).
        key: the pseudonymisation key (or where it is), with
        suppression_list: users whose seeds are dropped (the job's ``--suppression_list``).
    """

    def __init__(self, pattern: str, key=None, suppression_list: Optional[str] = None):
        super().__init__()
        self._pattern = pattern
        self._suppressed = None if not suppression_list else _DropSuppressedFn(key, suppression_list)

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection[tuple[str, bytes]]:
        def seed(record: dict) -> tuple[str, bytes]:
            check_version(record)
            return record["user_key"], SEED_MARK + record["state"]

        # Beam's file matching and fastavro, file by file, rather than `ReadFromAvro`: its
        # splittable read cannot run in the local runner's streaming mode, which the local
        # job uses; a record at a time either way.
        seeds = (
            pbegin
            | "MatchSnapshot" >> fileio.MatchFiles(self._pattern, empty_match_treatment=EmptyMatchTreatment.DISALLOW)
            | "OpenFiles" >> fileio.ReadMatches()
            | "ReadRecords" >> beam.FlatMap(_records)
            | "ToSeeds" >> beam.Map(seed).with_output_types(tuple[str, bytes])
        )
        if self._suppressed is not None:
            seeds = seeds | "DropSuppressed" >> beam.ParDo(self._suppressed).with_output_types(tuple[str, bytes])
        return seeds


def _records(readable: fileio.ReadableFile) -> Iterable[dict]:
    # Avro compresses its own blocks: the file itself is read as it is.
    with readable.open("application/octet-stream", CompressionTypes.UNCOMPRESSED) as f:
        yield from fastavro.reader(f)


# -- erasure -----------------------------------------------------------------------------------


def erase_users(snapshot_dir: str, user_keys: Iterable[str]) -> int:
    """Rewrites every snapshot file under `snapshot_dir` without `user_keys`; returns how many records went."""
    erased = frozenset(user_keys)
    removed = 0
    for path in snapshot_files(snapshot_dir):
        with FileSystems.open(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            reader = fastavro.reader(f)
            codec = reader.codec
            records = list(reader)
        kept = [r for r in records if r["user_key"] not in erased]
        if len(kept) == len(records):
            continue
        removed += len(records) - len(kept)
        for record in kept:
            record["as_of_us"] = _as_of_us(record)
        with FileSystems.create(path, compression_type=CompressionTypes.UNCOMPRESSED) as f:
            fastavro.writer(f, _PARSED_SCHEMA, kept, codec=codec)
    return removed
