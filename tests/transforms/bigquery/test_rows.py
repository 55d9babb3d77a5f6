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

from transforms.bigquery import rows as bq_rows
from transforms.bigquery import tables as bt
from transforms.contracts.feature_spec import MODEL_FEATURES
from transforms.contracts.outcomes import DeadLetter, ErrorCode, Stage
from transforms.bigquery.write import ValidateRowsFn, WriteTag
from transforms.bigquery.merge import merge_sql
from transforms.bigquery.loads import ndjson_bytes

SA = bt.TABLES[bt.Table.SEGMENT_ASSIGNMENTS]


def _fields(schema):
    return {f["name"]: f for f in schema}


def make_assignment(**overrides):
    a = {
        "user_key": "u1",
        "window_start_us": 1_700_000_000_000_000,
        "window_end_us": 1_700_086_400_000_001,
        "pane": "on_time",
        "segment_id": 3,
        "segment_name": "loyal",
        "distance": 0.25,
        "margin": 0.5,
        "rfm": {"r": 5, "f": 4, "m": 3, "rfm_segment": "champions"},
        "p_alive": 0.9,
        "expected_purchases_30d": 1.5,
        "churn_risk": 0.1,
        "features": {name: float(i) for i, name in enumerate(MODEL_FEATURES)},
        "feature_version": "v1",
        "model_version": "m-1",
        "event_count": 12,
    }
    a.update(overrides)
    return a


# ----------------------------------------------------------------------------- schemas


def test_features_record_is_the_model_input_contract():
    features = _fields(bt.SEGMENT_ASSIGNMENTS_SCHEMA)["features"]
    assert features["type"] == "RECORD"
    assert tuple(f["name"] for f in features["fields"]) == MODEL_FEATURES
    assert {(f["type"], f["mode"]) for f in features["fields"]} == {("FLOAT64", "NULLABLE")}


@pytest.mark.parametrize(
    "schema, required",
    [
        (
            bt.SEGMENT_ASSIGNMENTS_SCHEMA,
            {"row_key", "user_key", "window_start", "window_end", "pane", "segment_id", "segment_name",
             "feature_version", "model_version", "event_count", "assigned_at"},
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


def test_run_audit_repeated_records():
    fields = _fields(bt.RUN_AUDIT_SCHEMA)
    assert fields["filtered"]["mode"] == "REPEATED"
    assert [f["name"] for f in fields["filtered"]["fields"]] == ["reason", "count"]
    assert [f["name"] for f in fields["dead_lettered"]["fields"]] == ["code", "count"]


def test_layout_parameters():
    assert bt.additional_bq_parameters(SA) == {
        "timePartitioning": {"type": "DAY", "field": "window_end"},
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
    assert [(f.name, f.mode) for f in fields] == [(f["name"], f["mode"]) for f in SA.schema]


def test_ndjson_payload_is_one_exact_json_line_per_row():
    row = bq_rows.assignment_row(make_assignment(), assigned_at_us=1_700_000_000_123_456)
    awkward = dict(row, distance=0.1 + 0.2, margin=1e-300, rfm=None, features=None, segment_name="é\n\"x\"")
    payload = ndjson_bytes([row, awkward])
    assert payload.endswith(b"\n")
    lines = payload[:-1].split(b"\n")
    assert len(lines) == 2
    assert [json.loads(line) for line in lines] == [row, awkward]
    assert json.loads(lines[1])["distance"] == 0.30000000000000004  # shortest round-trip form, not rounded
    assert json.loads(lines[0])["assigned_at"] == "2023-11-14 22:13:20.123456 UTC"


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
    a = make_assignment()
    row = bq_rows.assignment_row(a, assigned_at_us=1_700_000_000_000_000)
    expected_key = hashlib.sha256("u1\x1f1700000000000000\x1f1700086400000001\x1fm-1".encode()).hexdigest()
    assert row["row_key"] == expected_key
    assert row["window_start"] == "2023-11-14 22:13:20.000000 UTC"
    assert row["window_end"] == "2023-11-15 22:13:20.000001 UTC"
    assert row["assigned_at"] == "2023-11-14 22:13:20.000000 UTC"
    assert row["features"] == a["features"]
    assert row["rfm"] == a["rfm"]
    assert set(row) == {f["name"] for f in bt.SEGMENT_ASSIGNMENTS_SCHEMA}
    assert bq_rows.validate_row(row, bt.SEGMENT_ASSIGNMENTS_SCHEMA) == []


def test_row_key_ignores_pane_and_processing_time_but_not_model():
    a = make_assignment()
    r1 = bq_rows.assignment_row(a, 1)
    r2 = bq_rows.assignment_row(dict(a, pane="late", event_count=99), 2)
    r3 = bq_rows.assignment_row(dict(a, model_version="m-2"), 1)
    assert r1["row_key"] == r2["row_key"] != r3["row_key"]


def test_numpy_scalars_become_python_values():
    np = pytest.importorskip("numpy")
    a = make_assignment(segment_id=np.int64(2), distance=np.float64(0.5), event_count=np.int32(7))
    row = bq_rows.assignment_row(a, 0)
    assert type(row["segment_id"]) is int and type(row["distance"]) is float and type(row["event_count"]) is int
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
    row = bq_rows.audit_row(summary, run_id="r1", mode="batch", input="in.jsonl", started_at_us=0, finished_at_us=1_000_000, model_version="m-1")
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
    return bq_rows.assignment_row(make_assignment(), 0)


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


_DELETE = object()


@pytest.mark.parametrize(
    "path, value, expected",
    [
        ("user_key", _DELETE, "user_key: missing REQUIRED field"),
        ("segment_id", None, "segment_id: missing REQUIRED field"),
        ("colour", "red", "colour: unknown field"),
        ("features.not_a_feature", 1.0, "features.not_a_feature: unknown field"),
        ("segment_id", "3", "segment_id: expected INT64"),
        ("event_count", True, "event_count: expected INT64"),
        ("event_count", 2**63, "event_count: INT64 out of range"),
        ("segment_name", 7, "segment_name: expected STRING"),
        ("distance", "0.1", "distance: expected FLOAT64"),
        ("distance", float("nan"), "distance: FLOAT64 must be finite"),
        ("features.recency_days", float("inf"), "features.recency_days: FLOAT64 must be finite"),
        ("rfm.r", 1.5, "rfm.r: expected INT64"),
        ("rfm", "champions", "rfm: expected an object"),
        ("window_end", 1_700_000_000, "window_end: expected TIMESTAMP"),
        ("window_end", "2023-11-14T22:13:20Z", "window_end: TIMESTAMP not in"),
    ],
)
def test_validate_row_reports_each_problem(path, value, expected):
    problems = bq_rows.validate_row(_with(path, value), bt.SEGMENT_ASSIGNMENTS_SCHEMA)
    assert len(problems) == 1, problems
    assert problems[0].startswith(expected)


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
    assert (dl.error_code, dl.stage, dl.source) == (ErrorCode.ROW_REJECTED.value, Stage.WRITE.value, "bigquery:segment_assignments")
    assert json.loads(dl.raw_payload) == row
    assert dl.error_detail == "segment_id: missing REQUIRED field"


def test_validate_rows_fn_routes_invalid_rows_to_refused():
    good = _valid_row()
    bad = _with("event_count", math.nan)
    with TestPipeline() as p:
        out = (
            p
            | beam.Create([good, bad])
            | beam.ParDo(ValidateRowsFn(SA)).with_outputs(WriteTag.REJECTED.value, main=WriteTag.ROWS.value)
        )
        assert_that(out[WriteTag.ROWS.value] | "Keys" >> beam.Map(lambda r: r["row_key"]), equal_to([good["row_key"]]), label="Valid")
        assert_that(
            out[WriteTag.REJECTED.value] | "Reasons" >> beam.Map(lambda r: (r.row["row_key"], r.reason)),
            equal_to([(bad["row_key"], "event_count: expected INT64, got float nan")]),
            label="Rejected",
        )


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
    rejected = p | beam.Create([make_assignment()]) | "WriteAssignments" >> WriteAssignments(target)
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
            "timePartitioning": {"type": "DAY", "field": "window_end"},
            "clustering": {"fields": ["segment_id", "user_key"]},
        }
