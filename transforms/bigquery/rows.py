"""Rows of the warehouse tables: conversion from pipeline values, and validation.

Row representation (one per table, shared by the production and the local paths):
plain ``dict`` of JSON-compatible Python values; TIMESTAMP columns are strings in
BigQuery's canonical form ``"YYYY-MM-DD HH:MM:SS.ffffff UTC"`` (accepted by load jobs,
streaming inserts and the local sink's newline-delimited JSON loads); DATE columns are
``"YYYY-MM-DD"``; RECORD columns are nested dicts; REPEATED columns are lists.
"""

from __future__ import annotations

import base64
import datetime as dt
import functools
import hashlib
import json
import math
from collections import abc
from typing import Any, Mapping, Optional, Sequence

import orjson

from transforms.bigquery.tables import Field, NULLABLE, REPEATED, REQUIRED, Table
from transforms.contracts.outcomes import DeadLetter, ErrorCode, Stage


# Every written row walks its schema: the fields as tuples, computed once per schema object.
_PLANS: dict[int, tuple[Sequence[Field], frozenset, tuple]] = {}


def _plan(schema: Sequence[Field]) -> tuple[frozenset, tuple]:
    """(field names, ((name, type, mode, subfields), ...)) of a schema, cached."""
    entry = _PLANS.get(id(schema))
    if entry is None or entry[0] is not schema:
        fields = tuple((f["name"], f["type"], f.get("mode", NULLABLE), f.get("fields")) for f in schema)
        # The entry holds the schema, so its id cannot be reused by another object.
        entry = _PLANS[id(schema)] = (schema, frozenset(f[0] for f in fields), fields)
    return entry[1], entry[2]


# ----------------------------------------------------------------------------- timestamps

_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_TS_FORMAT = "%Y-%m-%d %H:%M:%S.%f UTC"


def format_timestamp(micros: int) -> str:
    """UTC microseconds since the epoch as BigQuery's canonical TIMESTAMP text."""
    seconds, fraction = divmod(int(micros), 1_000_000)
    return f"{_second_text(seconds)}.{fraction:06d} UTC"


def timestamp_to_micros(text: str) -> int:
    """The inverse of `format_timestamp`. Raises ValueError on any other format."""
    if (len(text) != 30 or text[10] != " " or text[13] != ":" or text[16] != ":" or text[19] != "."
            or not text.endswith(" UTC") or not text[20:26].isdigit()):
        raise ValueError(f"{text!r} does not match {_TS_FORMAT!r}")
    return _second_of(text[:19]) * 1_000_000 + int(text[20:26])


# A written row has three timestamps and most share their second with the rows around
# them (window bounds are day boundaries; assigned_at is the write's clock), so the
# calendar arithmetic is done once per distinct second.
@functools.lru_cache(maxsize=4096)
def _second_text(seconds: int) -> str:
    return (_EPOCH + dt.timedelta(seconds=seconds)).strftime("%Y-%m-%d %H:%M:%S")


@functools.lru_cache(maxsize=4096)
def _second_of(text: str) -> int:
    # fromisoformat, not strptime: far cheaper per row; the caller has checked the shape.
    delta = dt.datetime.fromisoformat(text).replace(tzinfo=dt.timezone.utc) - _EPOCH
    return delta.days * 86_400 + delta.seconds


# ----------------------------------------------------------------------------- row conversion


_BUILTIN_SCALARS = frozenset({float, int, str, bool, type(None)})


def _plain(value: Any) -> Any:
    """numpy scalars to Python scalars; anything else unchanged."""
    if type(value) in _BUILTIN_SCALARS:  # the common case, ~30 times per row
        return value
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy":
        return item()
    return value


def _plain_values(record: Any) -> Any:
    """A nested record's values through `_plain` (anything but a mapping unchanged)."""
    if not isinstance(record, abc.Mapping):
        return record
    if type(record) is dict and _BUILTIN_SCALARS.issuperset(map(type, record.values())):
        # Already plain (the model stage's features and RFM): shared, not copied. A row's
        # features are most of its size, and allocating them again was the larger cost.
        return record
    # Inlined test: a call per value was a fifth of the row's cost.
    return {k: v if type(v) in _BUILTIN_SCALARS else _plain(v) for k, v in record.items()}


def _ts(micros: Any) -> Any:
    micros = _plain(micros)
    if isinstance(micros, int) and not isinstance(micros, bool):
        return format_timestamp(micros)
    return micros  # left for validate_row to reject


def date_text(day_number: int) -> str:
    """A UTC day number (days since the epoch) as BigQuery's DATE text, ``YYYY-MM-DD``."""
    return _second_text(int(day_number) * 86_400)[:10]


def score_date(as_of_us: int) -> str:
    """The UTC day a scoring as of `as_of_us` describes: the day of its last included microsecond.

    A scoring as of a midnight closes the day before it.
    """
    return date_text((int(as_of_us) - 1) // 86_400_000_000)


def row_key(user_key: Any, day: Any, model_version: Any) -> str:
    """Deterministic identity of an assignment row: one per user, score date and model version."""
    text = "\x1f".join(str(_plain(v)) for v in (user_key, day, model_version))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _profile_values(profile: Any) -> Any:
    """The profile facts with `_us` times as TIMESTAMP text under their names without the suffix."""
    if not isinstance(profile, abc.Mapping):
        return profile
    return {(name[:-3] if name.endswith("_us") else name): (_ts(v) if name.endswith("_us") and v is not None
                                                            else _plain(v))
            for name, v in profile.items()}


def assignment_row(assignment: Mapping[str, Any], assigned_at_us: int) -> dict:
    """A model-stage assignment dict as a `segment_assignments` row.

    Conversion is faithful: missing keys become NULL and unknown feature names are
    carried through, for `validate_row` to report, never fixed silently. Keys of the
    assignment that are not columns are not copied.

    Args:
        assignment: user_key, as_of_us, scoring, segment_id, segment_name, distance, margin,
            rfm {r, f, m, rfm_segment}, p_alive, expected_purchases_30d, p_purchase_30d,
            p_purchase_90d, churn_risk,
            features {name: float}, profile {fact: value}, feature_version, model_version,
            event_count (`models.handler.to_assignment`).
        assigned_at_us: processing time of the write, UTC microseconds.

    Returns:
        The row, with `row_key`, `score_date`, `is_final`, `content_sha256` and `assigned_at` added.
    """
    a = assignment
    as_of = _plain(a.get("as_of_us"))
    valid_time = isinstance(as_of, int) and not isinstance(as_of, bool)
    day = score_date(as_of) if valid_time else None
    row = {
        "row_key": row_key(a.get("user_key"), day, a.get("model_version")),
        "user_key": a.get("user_key"),
        "score_date": day,
        "as_of": _ts(as_of),
        "is_final": valid_time and as_of % 86_400_000_000 == 0,
        "scoring": a.get("scoring"),
        "segment_id": _plain(a.get("segment_id")),
        "segment_name": a.get("segment_name"),
        "distance": _plain(a.get("distance")),
        "margin": _plain(a.get("margin")),
        "rfm": _plain_values(a.get("rfm")),
        "p_alive": _plain(a.get("p_alive")),
        "expected_purchases_30d": _plain(a.get("expected_purchases_30d")),
        "p_purchase_30d": _plain(a.get("p_purchase_30d")),
        "p_purchase_90d": _plain(a.get("p_purchase_90d")),
        "churn_risk": _plain(a.get("churn_risk")),
        "features": _plain_values(a.get("features")),
        "profile": _profile_values(a.get("profile")),
        "feature_version": a.get("feature_version"),
        "model_version": a.get("model_version"),
        "event_count": _plain(a.get("event_count")),
        "moment": a.get("moment"),
        "moment_reason": a.get("moment_reason"),
    }
    row["content_sha256"] = content_sha256(row)
    row["assigned_at"] = format_timestamp(assigned_at_us)
    return row


_NOT_CONTENT = frozenset({"row_key", "change_key", "content_sha256", "assigned_at", "detected_at"})


def content_sha256(row: Mapping[str, Any]) -> str:
    """The digest of a row's content: every column but the key, `content_sha256` and the processing time."""
    content = {k: v for k, v in row.items() if k not in _NOT_CONTENT}
    return hashlib.sha256(orjson.dumps(content, option=orjson.OPT_SORT_KEYS, default=repr)).hexdigest()


def change_row(change: Mapping[str, Any], detected_at_us: int) -> dict:
    """A change record (`transforms.changes.change_of`) as a `segment_changes` row.

    Faithful like `assignment_row`: missing keys become NULL for `validate_row` to report.
    The same row is the JSON body of the change's Pub/Sub message.
    """
    c = change
    as_of = _plain(c.get("as_of_us"))
    valid_time = isinstance(as_of, int) and not isinstance(as_of, bool)
    previous = _plain(c.get("previous_as_of_us"))
    row = {
        "change_key": c.get("change_key"),
        "user_key": c.get("user_key"),
        "kind": c.get("kind"),
        "score_date": score_date(as_of) if valid_time else None,
        "as_of": _ts(as_of),
        "previous_as_of": None if previous is None else _ts(previous),
        "scoring": c.get("scoring"),
        "model_version": c.get("model_version"),
        "from_segment_id": _plain(c.get("from_segment_id")),
        "from_segment_name": c.get("from_segment_name"),
        "to_segment_id": _plain(c.get("to_segment_id")),
        "to_segment_name": c.get("to_segment_name"),
        "from_rfm_segment": c.get("from_rfm_segment"),
        "to_rfm_segment": c.get("to_rfm_segment"),
        "from_moment": c.get("from_moment"),
        "to_moment": c.get("to_moment"),
        "moment_reason": c.get("moment_reason"),
        "scores": _plain_values(c.get("scores")),
        "drivers": [_plain_values(d) for d in c.get("drivers") or ()],
        "event_count": _plain(c.get("event_count")),
    }
    row["content_sha256"] = content_sha256(row)
    row["detected_at"] = format_timestamp(detected_at_us)
    return row


DEFAULT_MAX_PAYLOAD_BYTES = 1024 * 1024


def payload_bytes(dl: DeadLetter) -> bytes:
    """The payload of a dead letter as it was received (undoing the base64 of non-UTF-8 bytes)."""
    if dl.payload_encoding == "base64":
        return base64.b64decode(dl.raw_payload)
    return dl.raw_payload.encode("utf-8", "surrogatepass")


def dead_letter_row(dl: DeadLetter, run_id: str | None, max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> dict:
    """A `DeadLetter` as a `dead_letters` row.

    Every row records the payload's size and SHA-256. A payload longer than
    `max_payload_bytes` is stored truncated to its first bytes (whole UTF-8 characters;
    base64 of the first bytes when it is not UTF-8), with ``payload_truncated``: one
    huge record must not make its whole load fail, and the digest still identifies it.
    """
    data = payload_bytes(dl)
    payload, truncated = dl.raw_payload, len(data) > max_payload_bytes
    if truncated:
        head = data[:max_payload_bytes]
        payload = (base64.b64encode(head).decode("ascii") if dl.payload_encoding == "base64"
                   else head.decode("utf-8", "ignore"))
    return {
        "raw_payload": payload,
        "payload_encoding": dl.payload_encoding,
        "error_code": dl.error_code,
        "error_detail": dl.error_detail,
        "source": dl.source,
        "stage": dl.stage,
        "processing_time": _ts(dl.processing_time_us),
        "run_id": run_id,
        "payload_bytes": len(data),
        "payload_sha256": hashlib.sha256(data).hexdigest(),
        "payload_truncated": truncated,
    }


def audit_row(
    summary: Mapping[str, Any],
    *,
    run_id: str,
    mode: str,
    input: str | None = None,
    started_at_us: int | None = None,
    finished_at_us: int | None = None,
    model_version: str | None = None,
    status: str | None = None,
    detail: str | None = None,
    writes: Mapping[str, Mapping[str, int]] | None = None,
    fallback: str | None = None,
    drift: Mapping[str, Any] | None = None,
) -> dict:
    """A run summary as a `run_audit` row.

    Args:
        summary: counts: read, valid, duplicates, filtered {reason: n},
            dead_lettered {code: n}, assignments, and reconciled (bool).
        run_id: the run (or streaming interval) identifier.
        mode: "batch" or "streaming".
        input: what was read (path or subscription).
        started_at_us / finished_at_us: wall clock, UTC microseconds.
        model_version: the model that assigned the segments.
        status: succeeded, failed, interrupted or killed (batch runs).
        detail: one line on what went wrong.
        writes: per table {produced, written, dead_lettered, kept_in_fallback}.
        fallback: where refused rows were kept.
        drift: the drift fields (`models.drift.DriftMonitor.audit_fields`): drift_rows,
            drift_max_psi, drift [{feature, psi}]; None leaves them NULL.
    """
    def counts(key: str, name: str) -> list[dict]:
        items = summary.get(key) or {}
        return [{name: str(k), "count": int(_plain(v))} for k, v in sorted(dict(items).items())]

    def opt_int(key: str) -> int | None:
        v = summary.get(key)
        return None if v is None else int(_plain(v))

    return {
        "run_id": run_id,
        "started_at": None if started_at_us is None else format_timestamp(started_at_us),
        "finished_at": None if finished_at_us is None else format_timestamp(finished_at_us),
        "mode": mode,
        "input": input,
        "read": opt_int("read"),
        "valid": opt_int("valid"),
        "duplicates": opt_int("duplicates"),
        "filtered": counts("filtered", "reason"),
        "dead_lettered": counts("dead_lettered", "code"),
        "reconciled": None if summary.get("reconciled") is None else bool(summary.get("reconciled")),
        "assignments": opt_int("assignments"),
        "model_version": model_version,
        "status": status,
        "detail": None if detail is None else detail[:1000],
        "writes": [{"table_name": table, **{k: int(_plain(counts.get(k, 0))) for k in _WRITE_COUNTS}}
                   for table, counts in sorted((writes or {}).items())],
        "fallback": fallback,
        "drift_rows": None if drift is None else drift.get("drift_rows"),
        "drift_max_psi": None if drift is None else drift.get("drift_max_psi"),
        "drift": [] if drift is None else [{"feature": str(d["feature"]), "psi": float(d["psi"])}
                                           for d in drift.get("drift") or []],
    }


_WRITE_COUNTS = ("produced", "written", "dead_lettered", "kept_in_fallback")


# ----------------------------------------------------------------------------- validation

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def validate_row(row: Any, schema: Sequence[Field], _prefix: str = "") -> list[str]:
    """Every way `row` breaks `schema`; empty when the row is safe to write.

    Guards against what the local emulator would do silently (store a missing
    REQUIRED as NULL, drop an unknown field) or badly (HTTP 500 retried for
    minutes on a bad value), and against what real BigQuery would reject.

    Problems reported: missing REQUIRED field, unknown field, wrong type
    (including bool where a number is expected and out-of-range INT64),
    NaN or infinite FLOAT64, unparseable TIMESTAMP, non-list REPEATED.
    """
    # abc, not typing.Mapping: the typing alias's isinstance costs more, per row and record.
    if type(row) is not dict and not isinstance(row, abc.Mapping):
        return [f"{_prefix.rstrip('.') or 'row'}: expected an object, got {type(row).__name__}"]
    problems: list[str] = []
    known, fields = _plan(schema)
    if not known.issuperset(row):
        problems.extend(f"{_prefix}{name}: unknown field" for name in row if name not in known)
    for name, type_, mode, subfields in fields:
        value = row.get(name)
        if value is None:
            if mode == REQUIRED:
                problems.append(f"{_prefix}{name}: missing REQUIRED field")
            continue
        # Fast path for the common valid scalars (most of an assignment row's fields).
        kind = type(value)
        if (kind is float and type_ == "FLOAT64" and math.isfinite(value)) or (
                kind is str and type_ == "STRING") or (
                kind is int and type_ == "INT64" and _INT64_MIN <= value <= _INT64_MAX):
            continue
        path = _prefix + name
        if mode == REPEATED:
            if not isinstance(value, (list, tuple)):
                problems.append(f"{path}: expected a list (REPEATED), got {type(value).__name__}")
                continue
            for i, item in enumerate(value):
                if item is None:
                    problems.append(f"{path}[{i}]: NULL element in REPEATED field")
                else:
                    problems.extend(_check_value(item, type_, subfields, f"{path}[{i}]"))
        else:
            problems.extend(_check_value(value, type_, subfields, path))
    return problems


def _check_value(value: Any, type_: str, subfields: Optional[Sequence[Field]], path: str) -> list[str]:
    if type_ == "RECORD":
        return validate_row(value, subfields, path + ".")
    if type_ == "STRING":
        ok = isinstance(value, str)
    elif type_ == "INT64":
        if isinstance(value, int) and not isinstance(value, bool):
            if not _INT64_MIN <= value <= _INT64_MAX:
                return [f"{path}: INT64 out of range: {value}"]
            return []
        ok = False
    elif type_ == "FLOAT64":
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                return [f"{path}: FLOAT64 must be finite, got {value!r}"]
            return []
        ok = False
    elif type_ == "BOOL":
        ok = isinstance(value, bool)
    elif type_ == "DATE":
        if isinstance(value, str) and len(value) == 10 and value[4] == "-" and value[7] == "-":
            try:
                dt.date.fromisoformat(value)
                return []
            except ValueError:
                pass
        return [f"{path}: DATE not in 'YYYY-MM-DD' form: {value!r}"[:300]]
    elif type_ == "TIMESTAMP":
        if not isinstance(value, str):
            ok = False
        else:
            try:
                timestamp_to_micros(value)
                return []
            except ValueError:
                return [f"{path}: TIMESTAMP not in 'YYYY-MM-DD HH:MM:SS.ffffff UTC' form: {value!r}"]
    else:  # a type this module never declares
        return [f"{path}: unsupported schema type {type_}"]
    return [] if ok else [f"{path}: expected {type_}, got {type(value).__name__} {value!r}"[:300]]


def rejected_row_dead_letter(row: Mapping[str, Any], problems: Sequence[str], table: Table | str) -> DeadLetter:
    """A row the schema (or BigQuery) refused, as a dead letter carrying the row as JSON."""
    name = table.value if isinstance(table, Table) else str(table)
    payload = json.dumps(row, sort_keys=True, default=repr)
    return DeadLetter.of(payload, ErrorCode.ROW_REJECTED, "; ".join(problems), f"bigquery:{name}", Stage.WRITE)
