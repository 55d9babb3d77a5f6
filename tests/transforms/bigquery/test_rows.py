"""Schemas, row conversion and row validation (no warehouse needed)."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
import math
import random

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from tests.support.assignments import (
    DAY_US, MODEL_A, MODEL_B, T0, assignment, closing, during, expected_content_sha256, expected_row_key, features,
)
from transforms.bigquery import rows as bq_rows
from transforms.bigquery import tables as bt
from transforms.bigquery.loads import ndjson_bytes
from transforms.bigquery.merge import merge_sql
from transforms.bigquery.write import ValidateRowsFn, WriteTag
from transforms.contracts.feature_spec import MODEL_FEATURES, PROFILE_FACTS
from transforms.contracts.outcomes import DeadLetter, ErrorCode, Stage

SA = bt.TABLES[bt.Table.SEGMENT_ASSIGNMENTS]


def _fields(schema):
    return {f["name"]: f for f in schema}


# ----------------------------------------------------------------------------- schemas


def test_features_record_is_the_model_input_contract():
    features_field = _fields(bt.SEGMENT_ASSIGNMENTS_SCHEMA)["features"]
    assert features_field["type"] == "RECORD"
    assert tuple(f["name"] for f in features_field["fields"]) == MODEL_FEATURES
    assert {(f["type"], f["mode"]) for f in features_field["fields"]} == {("FLOAT64", "NULLABLE")}


def test_profile_record_is_the_profile_facts_with_times_as_timestamps():
    profile_field = _fields(bt.SEGMENT_ASSIGNMENTS_SCHEMA)["profile"]
    assert (profile_field["type"], profile_field["mode"]) == ("RECORD", "NULLABLE")
    expected = [(name[:-3], "TIMESTAMP") if name.endswith("_us") else (name, kind)
                for name, kind in PROFILE_FACTS.items()]
    assert [(f["name"], f["type"]) for f in profile_field["fields"]] == expected
    assert ("first_seen", "TIMESTAMP") in expected and ("purchase_days", "INT64") in expected  # both kinds covered


@pytest.mark.parametrize(
    "schema, required",
    [
        (
            bt.SEGMENT_ASSIGNMENTS_SCHEMA,
            {"row_key", "user_key", "score_date", "as_of", "is_final", "scoring", "segment_id", "segment_name",
             "feature_version", "model_version", "event_count", "content_sha256", "assigned_at"},
        ),
        (
            bt.DEAD_LETTERS_SCHEMA,
            {"raw_payload", "payload_encoding", "error_code", "source", "stage", "processing_time"},
        ),
        (bt.RUN_AUDIT_SCHEMA, {"run_id"}),
    ],
)
def test_required_columns(schema, required):
    assert {f["name"] for f in schema if f["mode"] == "REQUIRED"} == required


def test_assignment_column_types():
    fields = _fields(bt.SEGMENT_ASSIGNMENTS_SCHEMA)
    types = {name: f["type"] for name, f in fields.items()}
    assert (types["score_date"], types["as_of"], types["is_final"], types["scoring"]) == (
        "DATE", "TIMESTAMP", "BOOL", "STRING")
    assert [(f["name"], f["type"]) for f in fields["rfm"]["fields"]] == [
        ("r", "INT64"), ("f", "INT64"), ("m", "INT64"), ("rfm_segment", "STRING")]
    # Prospects have no BG/NBD scores: the columns must accept NULL.
    assert {fields[c]["mode"] for c in ("p_alive", "expected_purchases_30d", "p_purchase_30d", "p_purchase_90d",
                                                      "churn_risk")} == {"NULLABLE"}


def test_run_audit_repeated_records():
    fields = _fields(bt.RUN_AUDIT_SCHEMA)
    assert fields["filtered"]["mode"] == "REPEATED"
    assert [f["name"] for f in fields["filtered"]["fields"]] == ["reason", "count"]
    assert [f["name"] for f in fields["dead_lettered"]["fields"]] == ["code", "count"]


def test_layout_parameters():
    assert bt.additional_bq_parameters(SA) == {
        "timePartitioning": {"type": "DAY", "field": "score_date"},
        "clustering": {"fields": ["segment_id", "user_key"]},
    }
    # Dead letters hold raw ids: partitions expire after 30 days (30 * 86,400,000 ms).
    assert bt.additional_bq_parameters(bt.TABLES[bt.Table.DEAD_LETTERS]) == {
        "timePartitioning": {"type": "DAY", "field": "processing_time", "expirationMs": "2592000000"}
    }
    assert bt.additional_bq_parameters(bt.TABLES[bt.Table.RUN_AUDIT]) == {}


def test_beam_and_client_schemas_mirror_the_constant():
    assert [f["name"] for f in bt.beam_schema(SA)["fields"]] == [f["name"] for f in SA.schema]
    fields = bt.schema_fields(SA)
    assert [(f.name, f.mode, f.field_type) for f in fields] == [(f["name"], f["mode"], f["type"]) for f in SA.schema]


def test_ndjson_payload_is_one_exact_json_line_per_row():
    row = bq_rows.assignment_row(assignment("u1", during(0, 10), 3), assigned_at_us=1_700_000_000_123_456)
    prospect = bq_rows.assignment_row(assignment("u2", closing(0), 1, prospect=True), assigned_at_us=0)
    awkward = dict(row, distance=0.1 + 0.2, margin=1e-300, rfm=None, features=None, profile=None,
                   segment_name="é\n\"x\"")
    payload = ndjson_bytes([row, prospect, awkward])
    assert payload.endswith(b"\n")
    lines = payload[:-1].split(b"\n")
    assert len(lines) == 3
    assert [json.loads(line) for line in lines] == [row, prospect, awkward]
    assert json.loads(lines[2])["distance"] == 0.30000000000000004  # shortest round-trip form, not rounded
    assert json.loads(lines[0])["assigned_at"] == "2023-11-14 22:13:20.123456 UTC"
    assert (json.loads(lines[0])["score_date"], json.loads(lines[0])["is_final"]) == ("2024-01-01", False)
    assert json.loads(lines[1])["p_alive"] is None and b'"p_alive":null' in lines[1]


# ----------------------------------------------------------------------------- conversion


@pytest.mark.parametrize(
    "micros, text",
    [
        (0, "1970-01-01 00:00:00.000000 UTC"),
        (1_700_000_000_123_456, "2023-11-14 22:13:20.123456 UTC"),
        (-1, "1969-12-31 23:59:59.999999 UTC"),
    ],
)
def test_timestamp_text(micros, text):
    assert bq_rows.format_timestamp(micros) == text
    assert bq_rows.timestamp_to_micros(text) == micros


def test_timestamp_text_matches_calendar_arithmetic_across_seconds_and_days():
    epoch = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    rng = random.Random(7)
    samples = [rng.randrange(-2**40, 2**52) for _ in range(2000)]
    samples += [86_400_000_000 * d + o for d in (0, 19_000, 20_000) for o in (-1, 0, 1, 999_999, 1_000_000)]
    for micros in samples:
        text = (epoch + dt.timedelta(microseconds=micros)).strftime("%Y-%m-%d %H:%M:%S.%f UTC")
        assert bq_rows.format_timestamp(micros) == text
        assert bq_rows.timestamp_to_micros(text) == micros


@pytest.mark.parametrize("text", [
    "2023-11-14 22:13+01.000000 UTC", "2023-11-14 22:13:20.12345x UTC", "2023-11-14 22:13:20,123456 UTC",
    "2023-11-14T22:13:20.123456 UTC", "2023-11-14 22:13:20.123456 GMT", "2023-11-14 22:13:20.123456",
    "2023-02-30 00:00:00.000000 UTC",
])
def test_timestamp_text_rejects_other_forms(text):
    with pytest.raises(ValueError):
        bq_rows.timestamp_to_micros(text)


def test_assignment_row():
    a = assignment("u1", during(0, 10.5), 3, events=12, moment="cart_abandoned_1d",
                   moment_reason="last day: 1 cart session(s) without a purchase, no order")  # 2024-01-01 10:30 UTC
    row = bq_rows.assignment_row(a, assigned_at_us=during(0, 12))
    expected = {
        "row_key": expected_row_key("u1", "2024-01-01", MODEL_A),
        "user_key": "u1",
        "score_date": "2024-01-01",
        "as_of": "2024-01-01 10:30:00.000000 UTC",
        "is_final": False,
        "scoring": "event",
        "segment_id": 3,
        "segment_name": "segment-3",
        "distance": 0.375,
        "margin": 0.5,
        "rfm": {"r": 4, "f": 2, "m": 3, "rfm_segment": "Loyal"},
        "p_alive": 0.75,
        "expected_purchases_30d": 1.25,
        "p_purchase_30d": 0.375,
        "p_purchase_90d": 0.75,
        "churn_risk": 0.25,
        "features": {name: 1.5 + i for i, name in enumerate(MODEL_FEATURES)},
        "profile": {
            "first_seen": "2023-12-22 10:30:00.000000 UTC",
            "last_event": "2024-01-01 09:30:00.000000 UTC",
            "first_purchase": "2023-12-23 10:30:00.000000 UTC",
            "last_purchase": "2023-12-30 10:30:00.000000 UTC",
            "purchase_days": 3,
            "unpriced_lines": 0,
            "top_category_30d": "shoes",
            "funnel_stage_30d": "purchase",
            "reporting_currency": "EUR",
        },
        "feature_version": "v2",
        "model_version": MODEL_A,
        "event_count": 12,
        "moment": "cart_abandoned_1d",
        "moment_reason": "last day: 1 cart session(s) without a purchase, no order",
        "assigned_at": "2024-01-01 12:00:00.000000 UTC",
    }
    expected["content_sha256"] = expected_content_sha256(expected)
    assert row == expected
    assert set(row) == {f["name"] for f in bt.SEGMENT_ASSIGNMENTS_SCHEMA}
    assert bq_rows.validate_row(row, bt.SEGMENT_ASSIGNMENTS_SCHEMA) == []


@pytest.mark.parametrize(
    "as_of_us, day, final",
    [
        (T0, "2023-12-31", True),  # a midnight closes the day before it
        (T0 + 1, "2024-01-01", False),
        (during(0, 10), "2024-01-01", False),  # intraday: the same day, not final
        (T0 + DAY_US - 1, "2024-01-01", False),
        (closing(0), "2024-01-01", True),
        (T0 + 60 * DAY_US, "2024-02-29", True),  # 2024-03-01 00:00 closes the leap day
        (0, "1969-12-31", True),
        (1, "1970-01-01", False),
        (-1, "1969-12-31", False),
    ],
)
def test_score_date_and_is_final(as_of_us, day, final):
    row = bq_rows.assignment_row(assignment("u1", as_of_us, 1), 0)
    assert (row["score_date"], row["is_final"]) == (day, final)
    assert row["row_key"] == expected_row_key("u1", day, MODEL_A)
    assert bq_rows.validate_row(row, bt.SEGMENT_ASSIGNMENTS_SCHEMA) == []


def test_row_key_is_per_user_day_and_model():
    def key(user="u1", as_of=during(0, 9), **overrides):
        return bq_rows.assignment_row(assignment(user, as_of, 1, **overrides), 0)["row_key"]

    day0 = expected_row_key("u1", "2024-01-01", MODEL_A)
    # Every scoring of 2024-01-01 (events during it, the midnight that closes it) shares a row.
    assert {key(), key(as_of=during(0, 23.5), segment_id=4, event_count=40), key(as_of=closing(0))} == {day0}
    assert key(as_of=during(1, 0.5)) == expected_row_key("u1", "2024-01-02", MODEL_A)
    assert key(model=MODEL_B) == expected_row_key("u1", "2024-01-01", MODEL_B)
    assert key(user="u2") == expected_row_key("u2", "2024-01-01", MODEL_A)
    assert len({day0, key(as_of=during(1, 0.5)), key(model=MODEL_B), key(user="u2")}) == 4


def test_content_sha256_is_over_the_content_columns_only():
    a = assignment("u1", during(0, 10), 3)
    first, later = bq_rows.assignment_row(a, 1), bq_rows.assignment_row(a, 2 * DAY_US)
    assert first["content_sha256"] == expected_content_sha256(first)
    assert later["assigned_at"] != first["assigned_at"] and later["content_sha256"] == first["content_sha256"]
    reordered = dict(a, features=dict(reversed(list(a["features"].items()))))
    assert bq_rows.assignment_row(reordered, 1)["content_sha256"] == first["content_sha256"]


_BASE = assignment("u1", during(0, 10), 3)


@pytest.mark.parametrize(
    "column, value",
    [
        ("segment_id", 4),
        ("segment_name", "renamed"),
        ("distance", 0.5),
        ("margin", 0.25),
        ("rfm", {"r": 5, "f": 2, "m": 3, "rfm_segment": "Loyal"}),
        ("p_alive", 0.5),
        ("expected_purchases_30d", None),
        ("p_purchase_30d", 0.5),
        ("p_purchase_90d", 0.5),
        ("churn_risk", 0.5),
        ("features", features(0.625, recency_days=2.0)),
        ("profile", dict(_BASE["profile"], top_category_30d="bags")),
        ("profile", dict(_BASE["profile"], last_event_us=during(0, 9.5))),
        ("feature_version", "v3"),
        ("event_count", 6),
        ("scoring", "daily"),
        ("as_of_us", during(0, 11)),  # same day, same row_key, a later scoring
    ],
)
def test_content_sha256_changes_with_every_content_column(column, value):
    first, changed = bq_rows.assignment_row(_BASE, 0), bq_rows.assignment_row(dict(_BASE, **{column: value}), 0)
    assert changed["row_key"] == first["row_key"]
    assert changed["content_sha256"] != first["content_sha256"]
    assert changed["content_sha256"] == expected_content_sha256(changed)


def test_prospect_row():
    row = bq_rows.assignment_row(assignment("p1", closing(0), 1, prospect=True), 0)
    assert (row["p_alive"], row["expected_purchases_30d"], row["churn_risk"]) == (None, None, None)
    assert (row["p_purchase_30d"], row["p_purchase_90d"]) == (None, None)
    assert row["rfm"] == {"r": 0, "f": 0, "m": 0, "rfm_segment": "Prospect"}
    assert (row["profile"]["first_purchase"], row["profile"]["last_purchase"]) == (None, None)
    assert row["profile"]["first_seen"] == "2023-12-23 00:00:00.000000 UTC"
    assert bq_rows.validate_row(row, bt.SEGMENT_ASSIGNMENTS_SCHEMA) == []


def test_numpy_scalars_become_python_values():
    np = pytest.importorskip("numpy")
    plain = assignment("u1", during(0, 10), 2, events=7)
    a = dict(
        plain,
        as_of_us=np.int64(plain["as_of_us"]),
        segment_id=np.int64(2),
        distance=np.float64(plain["distance"]),
        p_alive=np.float32(0.75),  # exactly representable: the same value once converted
        event_count=np.int32(7),
        rfm={k: np.int64(v) if k != "rfm_segment" else v for k, v in plain["rfm"].items()},
        features={k: np.float64(v) for k, v in plain["features"].items()},
        profile=dict(plain["profile"], purchase_days=np.int64(3),
                     first_seen_us=np.int64(plain["profile"]["first_seen_us"])),
    )
    row = bq_rows.assignment_row(a, 0)
    assert type(row["segment_id"]) is int and type(row["distance"]) is float and type(row["event_count"]) is int
    assert type(row["p_alive"]) is float and type(row["rfm"]["r"]) is int
    assert {type(v) for v in row["features"].values()} == {float}
    assert type(row["profile"]["purchase_days"]) is int
    assert (row["as_of"], row["score_date"], row["is_final"]) == ("2024-01-01 10:00:00.000000 UTC", "2024-01-01", False)
    assert row["profile"]["first_seen"] == "2023-12-22 10:00:00.000000 UTC"
    assert row["content_sha256"] == expected_content_sha256(row)
    assert row == bq_rows.assignment_row(plain, 0)  # numpy in, the same row out
    assert bq_rows.validate_row(row, bt.SEGMENT_ASSIGNMENTS_SCHEMA) == []


def test_dead_letter_row():
    dl = DeadLetter("{bad", "utf8", "invalid_json", "Expecting value", "gs://in/x.jsonl", "parse", 86_400_000_000)
    row = bq_rows.dead_letter_row(dl, "run-1")
    assert row == {
        "raw_payload": "{bad",
        "payload_encoding": "utf8",
        "error_code": "invalid_json",
        "error_detail": "Expecting value",
        "source": "gs://in/x.jsonl",
        "stage": "parse",
        "processing_time": "1970-01-02 00:00:00.000000 UTC",
        "run_id": "run-1",
        "payload_bytes": 4,
        "payload_sha256": hashlib.sha256(b"{bad").hexdigest(),
        "payload_truncated": False,
    }
    assert bq_rows.validate_row(row, bt.DEAD_LETTERS_SCHEMA) == []


def test_an_oversized_utf8_payload_is_stored_truncated_with_its_size_and_digest():
    # 1,000 three-byte characters: 3,000 bytes; a 1,000-byte limit keeps 333 whole characters.
    payload = "€" * 1000
    dl = DeadLetter(payload, "utf8", "oversized", "too big", "in.jsonl:1", "parse", 0)
    row = bq_rows.dead_letter_row(dl, "run-1", max_payload_bytes=1000)
    assert row["raw_payload"] == "€" * 333
    assert (row["payload_bytes"], row["payload_truncated"]) == (3000, True)
    assert row["payload_sha256"] == hashlib.sha256(payload.encode()).hexdigest()
    assert bq_rows.validate_row(row, bt.DEAD_LETTERS_SCHEMA) == []


def test_an_oversized_binary_payload_keeps_its_first_bytes_in_base64():
    raw = bytes(range(256)) * 8  # 2,048 bytes, not UTF-8
    dl = DeadLetter(base64.b64encode(raw).decode(), "base64", "invalid_json", "not UTF-8", "in.jsonl:2", "parse", 0)
    row = bq_rows.dead_letter_row(dl, None, max_payload_bytes=1024)
    assert base64.b64decode(row["raw_payload"]) == raw[:1024]
    assert (row["payload_bytes"], row["payload_truncated"], row["payload_encoding"]) == (2048, True, "base64")
    assert row["payload_sha256"] == hashlib.sha256(raw).hexdigest()


def test_a_payload_at_the_limit_is_kept_whole():
    dl = DeadLetter("x" * 1024, "utf8", "oversized", "", "s", "parse", 0)
    row = bq_rows.dead_letter_row(dl, None, max_payload_bytes=1024)
    assert (row["raw_payload"], row["payload_truncated"]) == ("x" * 1024, False)


def test_audit_row():
    summary = {
        "read": 10, "valid": 6, "duplicates": 1,
        "filtered": {"no_consent": 2}, "dead_lettered": {"invalid_json": 1, "bad_type": 0},
        "reconciled": True, "assignments": 4,
    }
    row = bq_rows.audit_row(summary, run_id="r1", mode="batch", input="in.jsonl", started_at_us=0,
                            finished_at_us=1_000_000, model_version="m-1")
    assert row["filtered"] == [{"reason": "no_consent", "count": 2}]
    assert row["dead_lettered"] == [{"code": "bad_type", "count": 0}, {"code": "invalid_json", "count": 1}]
    assert row["finished_at"] == "1970-01-01 00:00:01.000000 UTC"
    assert (row["read"], row["valid"], row["duplicates"], row["assignments"], row["reconciled"]) == (10, 6, 1, 4, True)
    assert (row["status"], row["writes"], row["fallback"]) == (None, [], None)
    assert bq_rows.validate_row(row, bt.RUN_AUDIT_SCHEMA) == []


def test_audit_row_records_the_writes_and_the_status():
    row = bq_rows.audit_row({}, run_id="r2", mode="batch", status="failed", detail="x" * 2000,
                            writes={"segment_assignments": {"produced": 5, "written": 3, "dead_lettered": 2},
                                    "dead_letters": {"produced": 4, "written": 0, "kept_in_fallback": 4}},
                            fallback="/tmp/fb/r2")
    assert row["writes"] == [
        {"table_name": "dead_letters", "produced": 4, "written": 0, "dead_lettered": 0, "kept_in_fallback": 4},
        {"table_name": "segment_assignments", "produced": 5, "written": 3, "dead_lettered": 2, "kept_in_fallback": 0}]
    assert (row["status"], len(row["detail"]), row["fallback"]) == ("failed", 1000, "/tmp/fb/r2")
    assert bq_rows.validate_row(row, bt.RUN_AUDIT_SCHEMA) == []


# ----------------------------------------------------------------------------- validation


def _valid_row():
    return bq_rows.assignment_row(assignment("u1", during(0, 10), 3), 0)


_DELETE = object()


def _with(path, value):
    row = _valid_row()
    *parents, last = path.split(".")
    target = row
    for p in parents:
        target = target[p]
    if value is _DELETE:
        del target[last]
    else:
        target[last] = value
    return row


@pytest.mark.parametrize(
    "path, value, expected",
    [
        ("user_key", _DELETE, "user_key: missing REQUIRED field"),
        ("segment_id", None, "segment_id: missing REQUIRED field"),
        ("colour", "red", "colour: unknown field"),
        ("features.not_a_feature", 1.0, "features.not_a_feature: unknown field"),
        ("profile.first_seen_us", 1, "profile.first_seen_us: unknown field"),
        ("segment_id", "3", "segment_id: expected INT64"),
        ("event_count", True, "event_count: expected INT64"),
        ("event_count", 2**63, "event_count: INT64 out of range"),
        ("segment_name", 7, "segment_name: expected STRING"),
        ("distance", "0.1", "distance: expected FLOAT64"),
        ("distance", float("nan"), "distance: FLOAT64 must be finite"),
        ("features.recency_days", float("inf"), "features.recency_days: FLOAT64 must be finite"),
        ("rfm.r", 1.5, "rfm.r: expected INT64"),
        ("rfm", "champions", "rfm: expected an object"),
        ("is_final", "true", "is_final: expected BOOL"),
        ("is_final", 1, "is_final: expected BOOL"),
        ("as_of", 1_700_000_000, "as_of: expected TIMESTAMP"),
        ("as_of", "2023-11-14T22:13:20Z", "as_of: TIMESTAMP not in"),
        ("profile.last_event", "2024-01-01", "profile.last_event: TIMESTAMP not in"),
        ("profile.purchase_days", 1.5, "profile.purchase_days: expected INT64"),
        ("score_date", None, "score_date: missing REQUIRED field"),
        ("score_date", "2024/01/01", "score_date: DATE not in 'YYYY-MM-DD' form"),
        ("score_date", "2024-1-1", "score_date: DATE not in 'YYYY-MM-DD' form"),
        ("score_date", "2024-01-01 00:00:00", "score_date: DATE not in 'YYYY-MM-DD' form"),
        ("score_date", 20240101, "score_date: DATE not in 'YYYY-MM-DD' form"),
        ("score_date", dt.date(2024, 1, 1), "score_date: DATE not in 'YYYY-MM-DD' form"),
        ("score_date", "2023-02-29", "score_date: DATE not in 'YYYY-MM-DD' form"),  # not a leap year
        ("score_date", "2024-13-01", "score_date: DATE not in 'YYYY-MM-DD' form"),
        ("score_date", "2024-04-31", "score_date: DATE not in 'YYYY-MM-DD' form"),
    ],
)
def test_validate_row_reports_each_problem(path, value, expected):
    problems = bq_rows.validate_row(_with(path, value), bt.SEGMENT_ASSIGNMENTS_SCHEMA)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected)


@pytest.mark.parametrize("day", ["2024-02-29", "1970-01-01", "0001-01-01", "9999-12-31"])
def test_validate_row_accepts_valid_dates(day):
    assert bq_rows.validate_row(_with("score_date", day), bt.SEGMENT_ASSIGNMENTS_SCHEMA) == []


@pytest.mark.parametrize(
    "value, expected",
    [
        ({"reason": "x", "count": 1}, "filtered: expected a list (REPEATED)"),
        ([None], "filtered[0]: NULL element"),
        ([{"reason": "x", "count": "1"}], "filtered[0].count: expected INT64"),
    ],
)
def test_validate_repeated(value, expected):
    row = bq_rows.audit_row({}, run_id="r", mode="batch")
    row["filtered"] = value
    problems = bq_rows.validate_row(row, bt.RUN_AUDIT_SCHEMA)
    assert len(problems) == 1 and problems[0].startswith(expected), problems


def test_validate_non_object():
    assert bq_rows.validate_row([1, 2], bt.RUN_AUDIT_SCHEMA) == ["row: expected an object, got list"]


def test_rejected_row_dead_letter():
    row = _with("segment_id", None)
    dl = bq_rows.rejected_row_dead_letter(row, ["segment_id: missing REQUIRED field"], bt.Table.SEGMENT_ASSIGNMENTS)
    assert (dl.error_code, dl.stage, dl.source) == (ErrorCode.ROW_REJECTED.value, Stage.WRITE.value,
                                                    "bigquery:segment_assignments")
    assert json.loads(dl.raw_payload) == row
    assert dl.error_detail == "segment_id: missing REQUIRED field"


def test_validate_rows_fn_routes_invalid_rows_to_refused():
    good = _valid_row()
    bad = _with("event_count", math.nan)
    bad_day = _with("score_date", "2024-02-30")
    with TestPipeline() as p:
        out = (
            p
            | beam.Create([good, bad, bad_day])
            | beam.ParDo(ValidateRowsFn(SA)).with_outputs(WriteTag.REJECTED.value, main=WriteTag.ROWS.value)
        )
        assert_that(out[WriteTag.ROWS.value] | "Keys" >> beam.Map(lambda r: r["row_key"]),
                    equal_to([good["row_key"]]), label="Valid")
        assert_that(
            out[WriteTag.REJECTED.value] | "Reasons" >> beam.Map(lambda r: (r.row["row_key"], r.reason)),
            equal_to([(bad["row_key"], "event_count: expected INT64, got float nan"),
                      (bad_day["row_key"], "score_date: DATE not in 'YYYY-MM-DD' form: '2024-02-30'")]),
            label="Rejected",
        )


def test_validate_rows_fn_converts_assignments_first():
    # A missing as_of leaves the row without its day and time: both reported, the row not written.
    fn = ValidateRowsFn(SA, to_row=lambda a: bq_rows.assignment_row(a, 0))
    good = assignment("u1", closing(0), 1)
    (row,) = list(fn.process(good))
    assert (row["score_date"], row["is_final"]) == ("2024-01-01", True)
    (rejected,) = list(fn.process(dict(good, as_of_us=None)))
    assert rejected.tag == WriteTag.REJECTED.value
    assert rejected.value.reason == "score_date: missing REQUIRED field; as_of: missing REQUIRED field"


def test_merge_sql_names_every_column_explicitly():
    sql = merge_sql(SA, "p.d.t", ["p.d.s"])
    assert "INSERT ROW" not in sql
    for f in SA.schema:
        assert f"s.{f['name']}" in sql
    with pytest.raises(ValueError):
        merge_sql(bt.TABLES[bt.Table.DEAD_LETTERS], "p.d.t", ["p.d.s"])


# ----------------------------------------------------------------------------- production wiring


def _bigquery_writes(pipeline):
    from apache_beam.io.gcp.bigquery import WriteToBigQuery
    from apache_beam.pipeline import PipelineVisitor

    found = {}

    class Visitor(PipelineVisitor):
        def enter_composite_transform(self, node):
            if isinstance(node.transform, WriteToBigQuery):
                found[node.full_label] = node.transform

    pipeline.visit(Visitor())
    return found


@pytest.mark.parametrize("streaming", [False, True])
def test_production_write_configuration(streaming):
    from apache_beam.io.gcp.bigquery import BigQueryDisposition, WriteToBigQuery

    from transforms.bigquery.client import BigQueryTarget
    from transforms.bigquery.write import WriteAssignments, WriteDeadLetters

    target = BigQueryTarget(project="segments-proj", dataset="segments", streaming=streaming, staging_suffix="run42")
    p = beam.Pipeline()
    rejected = p | beam.Create([assignment("u1", closing(0), 1)]) | "WriteAssignments" >> WriteAssignments(target)
    rejected | "WriteDeadLetters" >> WriteDeadLetters(target, run_id="run42")
    writes = _bigquery_writes(p)
    by_table = {w.table_reference.tableId: w for w in writes.values()}
    dead = by_table["dead_letters"]
    assert dead.schema == bt.beam_schema(bt.TABLES[bt.Table.DEAD_LETTERS])
    assert dead.additional_bq_parameters == {"timePartitioning": {"type": "DAY", "field": "processing_time",
                                                                  "expirationMs": "2592000000"}}
    assert dead.write_disposition == BigQueryDisposition.WRITE_APPEND
    if streaming:
        assert set(by_table) == {"segment_assignments", "dead_letters"}
        assert {w.method for w in writes.values()} == {WriteToBigQuery.Method.STREAMING_INSERTS}
        assert by_table["segment_assignments"].write_disposition == BigQueryDisposition.WRITE_APPEND
    else:
        assert set(by_table) == {"segment_assignments__run42", "dead_letters"}
        assert {w.method for w in writes.values()} == {WriteToBigQuery.Method.FILE_LOADS}
        staging = by_table["segment_assignments__run42"]
        assert staging.write_disposition == BigQueryDisposition.WRITE_TRUNCATE
        assert staging.create_disposition == BigQueryDisposition.CREATE_IF_NEEDED
        assert staging.schema == bt.beam_schema(SA)
        assert staging.additional_bq_parameters == {
            "timePartitioning": {"type": "DAY", "field": "score_date"},
            "clustering": {"fields": ["segment_id", "user_key"]},
        }
