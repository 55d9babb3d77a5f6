"""The fates a record can meet besides being segmented: dead letters and filters.

Every input record ends in exactly one of: segmented (counted as `valid`),
filtered (with a `FilterReason`), dead-lettered (with an `ErrorCode`), or
dropped as a duplicate of an earlier event (counted). The counter names here are
what the run summary reconciles (`pipelines.summary`).
"""

from __future__ import annotations

import base64
import enum
import time
from typing import NamedTuple

from apache_beam.metrics import Metrics

METRICS_NAMESPACE = "segments"


class ErrorCode(str, enum.Enum):
    """Why a record was dead-lettered."""

    INVALID_JSON = "invalid_json"
    NOT_AN_OBJECT = "not_an_object"
    MISSING_FIELD = "missing_field"
    BAD_TYPE = "bad_type"
    UNKNOWN_EVENT_TYPE = "unknown_event_type"
    BAD_TIMESTAMP = "bad_timestamp"
    TIMESTAMP_OUT_OF_RANGE = "timestamp_out_of_range"
    NEGATIVE_VALUE = "negative_value"
    VALUE_OUT_OF_RANGE = "value_out_of_range"  # a value, quantity or duration beyond the contract's finite range
    OVERSIZED = "oversized"
    INVALID_FIELD_VALUE = "invalid_field_value"
    CORRUPT_FILE = "corrupt_file"  # an unreadable stretch of an input file (a damaged or foreign Avro block)
    TOO_LATE = "too_late"  # later than the windows' allowed lateness
    INFERENCE_FAILED = "inference_failed"
    ROW_REJECTED = "row_rejected"  # a row the warehouse schema (or BigQuery) refused


# Codes about a derived row (a feature record or an output row), not an input event:
# reported apart, because the event behind such a row was already counted as valid.
ROW_LEVEL_CODES: frozenset[ErrorCode] = frozenset({ErrorCode.INFERENCE_FAILED, ErrorCode.ROW_REJECTED})
EVENT_LEVEL_CODES: tuple[ErrorCode, ...] = tuple(code for code in ErrorCode if code not in ROW_LEVEL_CODES)


class FilterReason(str, enum.Enum):
    """Why a valid event was deliberately kept out of segmentation."""

    NO_CONSENT = "no_consent"
    SUPPRESSED = "suppressed"


class Stage(str, enum.Enum):
    """Where in the pipeline a dead letter was produced."""

    PARSE = "parse"
    VALIDATE = "validate"
    WINDOW = "window"
    INFERENCE = "inference"
    WRITE = "write"


class DeadLetter(NamedTuple):
    """A record that could not be processed, kept so that a person can query it."""

    raw_payload: str  # UTF-8 text as received, or base64 when the bytes are not UTF-8
    payload_encoding: str  # "utf8" | "base64"
    error_code: str  # an ErrorCode value
    error_detail: str
    source: str
    stage: str  # a Stage value
    processing_time_us: int  # wall clock when it was dead-lettered, microseconds (UTC)

    @classmethod
    def of(cls, raw: bytes | str, code: ErrorCode, detail: str, source: str, stage: Stage) -> "DeadLetter":
        text, encoding = encode_payload(raw)
        return cls(text, encoding, code.value, detail, source, stage.value, time.time_ns() // 1000)


def encode_payload(raw: bytes | str) -> tuple[str, str]:
    """Keeps a payload byte-exact: UTF-8 text as is, anything else as base64."""
    if isinstance(raw, str):
        return raw, "utf8"
    try:
        return raw.decode("utf-8"), "utf8"
    except UnicodeDecodeError:
        return base64.b64encode(raw).decode("ascii"), "base64"


# Counter names: "read", "assignments", "dead_letter.<code>", "filtered.<reason>" (and the
# dedupe's "dedupe.in" / "dedupe.out", `transforms.ingest.dedupe`), and per warehouse
# table "bigquery.<table>.<WriteCount>".
READ = "read"
ASSIGNMENTS = "assignments"  # segment rows produced (per user and window), by the model handler
CHANGES = "segment_changes"  # change records emitted by the change detection (transforms.changes)
DEAD_LETTER_PREFIX = "dead_letter."
FILTERED_PREFIX = "filtered."
WRITE_PREFIX = "bigquery."


class WriteCount(str, enum.Enum):
    """What became of the rows handed to a warehouse table (counters `bigquery.<table>.<count>`).

    Every row handed over is loaded or refused: ``rows == loaded + rejected + load_failed``
    once the job has finished. A refused row becomes a dead letter (assignments and
    changes: ``dead_lettered``) or is kept in the fallback folder (dead letters and audit
    rows: ``fallback``).
    """

    ROWS = "rows"  # handed to the write
    LOADED = "loaded"  # in the table (local: loaded and MERGEd; production: the load jobs' output rows)
    REJECTED = "rejected"  # refused by the schema check before loading
    LOAD_FAILED = "load_failed"  # in a load that failed after its retries
    FALLBACK = "fallback"  # refused, and written to the fallback folder instead
    DEAD_LETTERED = "dead_lettered"  # refused, and turned into a row_rejected dead letter


def first_line(error: BaseException, limit: int = 500) -> str:
    """An error as one line: its message's first non-blank line (or its type), at most `limit` characters."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[0] if lines else type(error).__name__)[:limit]


def counter(name: str):
    return Metrics.counter(METRICS_NAMESPACE, name)


def dead_letter_counter(code: ErrorCode):
    return counter(DEAD_LETTER_PREFIX + code.value)


def filtered_counter(reason: FilterReason):
    return counter(FILTERED_PREFIX + reason.value)


def write_counter_name(table: str, count: WriteCount) -> str:
    return f"{WRITE_PREFIX}{table}.{count.value}"


def write_counter(table: str, count: WriteCount):
    return counter(write_counter_name(table, count))
