"""The local warehouse lifecycle and the local sink, against a real bqemulator."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
import time

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from devtools import warehouse as wh
from tests.support.assignments import (
    DAY_US, HOUR_US, MODEL_A, T0, UTC, assignment, closing, during, expected_content_sha256, expected_row_key,
    features, utc,
)
from transforms.bigquery import admin as bq_admin
from transforms.bigquery import rows as bq_rows
from transforms.bigquery import tables as bt
from transforms.bigquery import loads as bq_loads
from transforms.bigquery import local_sink
from transforms.contracts.feature_spec import MODEL_FEATURES
from transforms.contracts.outcomes import DeadLetter
from transforms.bigquery.client import BigQueryTarget
from transforms.bigquery.write import WriteAssignments, WriteDeadLetters
from transforms.bigquery.loads import load_rows, write_audit

pytestmark = pytest.mark.integration


def read_assignments(warehouse, dataset):
    sql = (f"SELECT * FROM `{warehouse.project}.{dataset}.segment_assignments` "
           f"ORDER BY user_key, score_date, model_version")
    return [dict(r) for r in warehouse.client.query(sql).result()]


def run_write(target, assignments):
    with TestPipeline() as p:
        rejected = p | beam.Create(assignments) | WriteAssignments(target)
        assert_that(rejected, equal_to([]))


@pytest.fixture(scope="module")
def module_dataset(warehouse):
    name = "test_warehouse_sink"
    bq_admin.setup(warehouse.client, name)
    yield name
    warehouse.client.delete_dataset(f"{warehouse.project}.{name}", delete_contents=True, not_found_ok=True)


@pytest.fixture
def dataset(warehouse, module_dataset):
    """The module's dataset (set up once), emptied before each test."""
    for table in bt.Table:
        warehouse.client.query(f"DELETE FROM `{warehouse.project}.{module_dataset}.{table.value}` WHERE TRUE").result()
    return module_dataset


# ----------------------------------------------------------------------------- lifecycle


def test_fixture_warehouse_answers_queries(warehouse):
    rows = list(warehouse.client.query("SELECT 1 AS one").result())
    assert [r["one"] for r in rows] == [1]
    assert warehouse.endpoint.startswith("http://127.0.0.1:")
    assert wh.status(warehouse.data_dir)["state"] == "running"


def test_start_status_stop(tmp_path):
    data_dir = tmp_path / "wh"
    assert wh.status(data_dir)["state"] == "stopped"
    info = wh.start(data_dir, rest_port=wh.free_port(), grpc_port=wh.free_port())
    try:
        again = wh.start(data_dir)  # already running: reported, not restarted
        assert again["pid"] == info["pid"]
        status = wh.status(data_dir)
        assert (status["state"], status["endpoint"]) == ("running", info["endpoint"])
        assert (data_dir / wh.LOG_FILE).exists()
    finally:
        wh.stop(data_dir)
    assert wh.status(data_dir)["state"] == "stopped"
    assert not (data_dir / wh.STATE_FILE).exists()


def test_default_data_dir_is_in_the_project(monkeypatch, tmp_path):
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "sub").mkdir()
    monkeypatch.delenv("SEGMENTS_WAREHOUSE_DIR", raising=False)
    monkeypatch.chdir(tmp_path / "sub")
    assert wh.default_data_dir() == tmp_path.resolve() / ".work" / "warehouse"
    monkeypatch.setenv("SEGMENTS_WAREHOUSE_DIR", str(tmp_path / "elsewhere"))
    assert wh.default_data_dir() == tmp_path / "elsewhere"


# ----------------------------------------------------------------------------- setup


def test_setup_is_idempotent_and_keeps_the_layout(warehouse, module_dataset):
    again = bq_admin.setup(warehouse.client, module_dataset)  # the fixture ran it once already
    assert again["tables"] == ["segment_assignments", "dead_letters", "run_audit", "erasure_audit", "segment_changes",
                               "shadow_moves"]
    changes = warehouse.client.get_table(f"{warehouse.project}.{module_dataset}.segment_changes")
    assert (changes.time_partitioning.field, changes.clustering_fields) == ("score_date", ["user_key"])
    unique_dataset = module_dataset
    table = warehouse.client.get_table(f"{warehouse.project}.{unique_dataset}.segment_assignments")
    assert table.time_partitioning.field == "score_date"
    assert table.time_partitioning.type_ == "DAY"
    assert table.clustering_fields == ["segment_id", "user_key"]
    assert [(f.name, f.mode) for f in table.schema] == [(f["name"], f["mode"]) for f in bt.SEGMENT_ASSIGNMENTS_SCHEMA]
    assert {f.name: f.field_type for f in table.schema}["score_date"] == "DATE"
    names = {t.table_id for t in warehouse.client.list_tables(f"{warehouse.project}.{unique_dataset}")}
    assert names == {"segment_assignments", "dead_letters", "run_audit", "erasure_audit", "segment_changes",
                     "shadow_moves", *bq_admin.VIEWS}
    shadow = warehouse.client.get_table(f"{warehouse.project}.{unique_dataset}.shadow_moves")
    assert (shadow.time_partitioning.field, shadow.clustering_fields) == ("score_date", ["shadow_id", "moved"])
    letters = warehouse.client.get_table(f"{warehouse.project}.{unique_dataset}.dead_letters")
    assert letters.time_partitioning.expiration_ms == 30 * 86_400_000  # raw ids: 30 days by default


def test_setup_replaces_only_the_views_whose_statement_changed(warehouse, module_dataset):
    client, project = warehouse.client, warehouse.project
    view_id = f"{project}.{module_dataset}.segment_sizes_daily"

    def set_label(value):
        view = client.get_table(view_id)
        view.labels = {bq_admin.VIEW_DIGEST_LABEL: value}
        client.update_table(view, ["labels"])

    # A label from another statement: setup replaces the view and labels it with this one.
    set_label("an-older-statement")
    bq_admin.setup(client, module_dataset)
    statement = bq_admin.view_sql("segment_sizes_daily", project, module_dataset)
    assert client.get_table(view_id).labels[bq_admin.VIEW_DIGEST_LABEL] == hashlib.sha256(
        statement.encode()).hexdigest()[:63]

    # The current label: setup leaves the view alone, even one replaced by hand.
    current = client.get_table(view_id).labels[bq_admin.VIEW_DIGEST_LABEL]
    client.query(f"CREATE OR REPLACE VIEW `{view_id}` AS SELECT 1 AS one").result()
    set_label(current)
    bq_admin.setup(client, module_dataset)
    assert [dict(row.items()) for row in client.query(f"SELECT * FROM `{view_id}`").result()] == [{"one": 1}]

    # A missing view is made again. (DDL: the emulator's tables.delete fails on a view.)
    client.query(f"DROP VIEW `{view_id}`").result()
    bq_admin.setup(client, module_dataset)
    columns = [f.name for f in client.query(f"SELECT * FROM `{view_id}` LIMIT 0").result().schema]
    assert columns[:2] == ["day", "model_version"]


# ----------------------------------------------------------------------------- local sink


def _json_form(value):
    """A value read back from the warehouse in the rows' JSON form (DATE and TIMESTAMP as text)."""
    if isinstance(value, dict):
        return {k: _json_form(v) for k, v in value.items()}
    if isinstance(value, dt.datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f UTC")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def test_local_sink_writes_exact_values(warehouse, dataset):
    target = BigQueryTarget.local(warehouse.endpoint, warehouse.project, dataset)
    before = utc(time.time_ns() // 1000 - 1)
    run_write(target, [assignment("u1", during(0, 10.5), 2, moment="lapsing",
                                  moment_reason="silent 7.0 days, more than 2 x the usual gap of 3.0"),
                       assignment("p1", closing(0), 1, prospect=True)])
    after = utc(time.time_ns() // 1000 + 1)
    prospect, row = read_assignments(warehouse, dataset)
    assigned_at = row.pop("assigned_at")
    assert before <= assigned_at <= after and before <= prospect.pop("assigned_at") <= after
    expected = {
        "row_key": expected_row_key("u1", "2024-01-01", MODEL_A),
        "user_key": "u1",
        "score_date": dt.date(2024, 1, 1),
        "as_of": dt.datetime(2024, 1, 1, 10, 30, tzinfo=UTC),
        "is_final": False,
        "scoring": "event",
        "segment_id": 2,
        "segment_name": "segment-2",
        "distance": 0.25,
        "margin": 0.5,
        "rfm": {"r": 4, "f": 2, "m": 3, "rfm_segment": "Loyal"},
        "p_alive": 0.75,
        "expected_purchases_30d": 1.25,
        "p_purchase_30d": 0.375,
        "p_purchase_90d": 0.75,
        "churn_risk": 0.25,
        "features": {name: 0.625 + i for i, name in enumerate(MODEL_FEATURES)},
        "profile": {
            "first_seen": dt.datetime(2023, 12, 22, 10, 30, tzinfo=UTC),
            "last_event": dt.datetime(2024, 1, 1, 9, 30, tzinfo=UTC),
            "first_purchase": dt.datetime(2023, 12, 23, 10, 30, tzinfo=UTC),
            "last_purchase": dt.datetime(2023, 12, 30, 10, 30, tzinfo=UTC),
            "purchase_days": 3,
            "unpriced_lines": 0,
            "top_category_30d": "shoes",
            "funnel_stage_30d": "purchase",
            "reporting_currency": "EUR",
        },
        "feature_version": "v2",
        "model_version": MODEL_A,
        "event_count": 5,
        "moment": "lapsing",
        "moment_reason": "silent 7.0 days, more than 2 x the usual gap of 3.0",
    }
    expected["content_sha256"] = expected_content_sha256(_json_form(expected))
    assert row == expected

    # A prospect (no purchase: no BG/NBD scores, RFM 0) scored as of midnight: the day before, final.
    assert (prospect["score_date"], prospect["as_of"], prospect["is_final"], prospect["scoring"]) == (
        dt.date(2024, 1, 1), dt.datetime(2024, 1, 2, tzinfo=UTC), True, "daily")
    assert (prospect["p_alive"], prospect["expected_purchases_30d"], prospect["churn_risk"]) == (None, None, None)
    assert prospect["rfm"] == {"r": 0, "f": 0, "m": 0, "rfm_segment": "Prospect"}
    assert (prospect["profile"]["first_purchase"], prospect["profile"]["last_purchase"]) == (None, None)
    assert prospect["row_key"] == expected_row_key("p1", "2024-01-01", MODEL_A)
    assert prospect["content_sha256"] == expected_content_sha256(_json_form(prospect))


def test_microsecond_timestamps_and_dates_round_trip(warehouse, dataset):
    spec = bt.TABLES[bt.Table.SEGMENT_ASSIGNMENTS]
    rows = [bq_rows.assignment_row(assignment("u1", T0 + DAY_US - 1, 1), T0 + 123_457),  # the day's last microsecond
            bq_rows.assignment_row(assignment("u2", T0 + 60 * DAY_US, 1), T0)]  # the midnight closing 2024-02-29
    load_rows(warehouse.client, spec, f"{warehouse.project}.{dataset}.segment_assignments", rows)
    last_microsecond, leap_day = read_assignments(warehouse, dataset)
    assert last_microsecond["as_of"] == dt.datetime(2024, 1, 1, 23, 59, 59, 999999, tzinfo=UTC)
    assert (last_microsecond["score_date"], last_microsecond["is_final"]) == (dt.date(2024, 1, 1), False)
    assert last_microsecond["profile"]["last_event"] == dt.datetime(2024, 1, 1, 22, 59, 59, 999999, tzinfo=UTC)
    assert last_microsecond["assigned_at"] == dt.datetime(2024, 1, 1, 0, 0, 0, 123457, tzinfo=UTC)
    assert (leap_day["score_date"], leap_day["as_of"], leap_day["is_final"]) == (
        dt.date(2024, 2, 29), dt.datetime(2024, 3, 1, tzinfo=UTC), True)


def test_rerun_leaves_identical_contents(warehouse, dataset):
    target = BigQueryTarget.local(warehouse.endpoint, warehouse.project, dataset, batch_size=2)
    batch = [assignment("u1", closing(0), 1), assignment("u1", closing(1), 2), assignment("u2", closing(0), 1),
             assignment("u3", during(1, 5), 3, prospect=True)]
    run_write(target, batch)
    first = read_assignments(warehouse, dataset)
    run_write(target, batch)
    second = read_assignments(warehouse, dataset)
    assert [(r["user_key"], r["score_date"]) for r in first] == [
        ("u1", dt.date(2024, 1, 1)), ("u1", dt.date(2024, 1, 2)),
        ("u2", dt.date(2024, 1, 1)), ("u3", dt.date(2024, 1, 2))]
    assert second == first  # assigned_at included: the rerun's rows matched and changed nothing


def test_merge_rule(warehouse, dataset):
    """Per row (user, day, model): a later as_of replaces; an earlier one never does; the same as_of
    replaces only with different content (a corrected rerun); among staged rows the latest as_of wins."""
    spec = bt.TABLES[bt.Table.SEGMENT_ASSIGNMENTS]
    table_id = f"{warehouse.project}.{dataset}.segment_assignments"
    at1, at2 = closing(5), closing(5) + HOUR_US
    corrected_features = features(0.625, recency_days=99.0)

    def load(assignments, assigned_at_us):
        """Loads (one staging table, one MERGE); returns the table as tuples, and its rows."""
        load_rows(warehouse.client, spec, table_id, [bq_rows.assignment_row(a, assigned_at_us) for a in assignments])
        rows = read_assignments(warehouse, dataset)
        return [(r["user_key"], r["score_date"].day, r["as_of"], r["is_final"], r["segment_id"], r["event_count"],
                 r["assigned_at"]) for r in rows], rows

    first, first_rows = load([
        assignment("corrected", during(0, 12), 1),
        assignment("earlier", during(0, 15), 2),
        assignment("final", during(0, 18), 1),
        assignment("identical", during(0, 12), 1),
        assignment("next_day", during(0, 20), 1),
        # Three scorings of one day in one load: the latest as_of wins, not the most events.
        assignment("staged", during(0, 10), 1, events=9),
        assignment("staged", during(0, 16), 2, events=3),
        assignment("staged", during(0, 12), 3, events=12),
        assignment("update", during(0, 10), 1),
    ], at1)
    assert first == [
        ("corrected", 1, utc(during(0, 12)), False, 1, 5, utc(at1)),
        ("earlier", 1, utc(during(0, 15)), False, 2, 5, utc(at1)),
        ("final", 1, utc(during(0, 18)), False, 1, 5, utc(at1)),
        ("identical", 1, utc(during(0, 12)), False, 1, 5, utc(at1)),
        ("next_day", 1, utc(during(0, 20)), False, 1, 5, utc(at1)),
        ("staged", 1, utc(during(0, 16)), False, 2, 3, utc(at1)),
        ("update", 1, utc(during(0, 10)), False, 1, 5, utc(at1)),
    ]
    second, second_rows = load([
        assignment("corrected", during(0, 12), 1, feature_values=corrected_features),  # same as_of, new content
        assignment("earlier", during(0, 10), 1),  # earlier: never replaces
        assignment("final", closing(0), 3),  # the midnight closing the day: final
        assignment("identical", during(0, 12), 1),  # the same content again: nothing changes
        assignment("next_day", during(1, 1), 2),  # another day: a row of its own
        assignment("update", during(0, 15), 2),  # later the same day: replaces
    ], at2)
    assert second == [
        ("corrected", 1, utc(during(0, 12)), False, 1, 5, utc(at2)),
        ("earlier", 1, utc(during(0, 15)), False, 2, 5, utc(at1)),
        ("final", 1, utc(closing(0)), True, 3, 5, utc(at2)),
        ("identical", 1, utc(during(0, 12)), False, 1, 5, utc(at1)),
        ("next_day", 1, utc(during(0, 20)), False, 1, 5, utc(at1)),
        ("next_day", 2, utc(during(1, 1)), False, 2, 5, utc(at2)),
        ("staged", 1, utc(during(0, 16)), False, 2, 3, utc(at1)),
        ("update", 1, utc(during(0, 15)), False, 2, 5, utc(at2)),
    ]
    before = {r["user_key"]: r for r in first_rows}
    after = {(r["user_key"], r["score_date"].day): r for r in second_rows}
    assert after[("corrected", 1)]["features"] == corrected_features
    assert after[("corrected", 1)]["content_sha256"] != before["corrected"]["content_sha256"]
    assert after[("corrected", 1)]["content_sha256"] == expected_content_sha256(_json_form(after[("corrected", 1)]))
    assert after[("identical", 1)] == before["identical"]
    assert after[("final", 1)]["scoring"] == "daily"


def _watch_staging(monkeypatch) -> tuple[list, list]:
    """Records the staging table of every load and the tables of every MERGE."""
    loads, merges = [], []
    real_stage, real_merge = local_sink.stage_rows, local_sink.merge_staging
    # Bounded writes stage from the sink and MERGE at the end; streaming ones load_rows,
    # which stages and MERGEs each batch.
    for module in (local_sink, bq_loads):
        monkeypatch.setattr(module, "stage_rows", lambda *a: loads.append(real_stage(*a)) or loads[-1])
        monkeypatch.setattr(module, "merge_staging", lambda *a: merges.append(list(a[3])) or real_merge(*a))
    return loads, merges


def test_bounded_write_stages_every_batch_and_merges_once(warehouse, dataset, monkeypatch):
    loads, merges = _watch_staging(monkeypatch)
    target = BigQueryTarget.local(warehouse.endpoint, warehouse.project, dataset, batch_size=2)
    # Five rows, at most two per load; u1's 2024-01-01 comes twice, the later (closing) scoring must win.
    run_write(target, [assignment("u1", during(0, 10), 1, events=2), assignment("u2", closing(0), 1),
                       assignment("u3", closing(0), 2), assignment("u1", closing(0), 3, events=4),
                       assignment("u4", closing(1), 1)])
    assert len(loads) >= 3
    assert merges == [sorted(loads)]  # one MERGE, of every staged load
    rows = read_assignments(warehouse, dataset)
    assert [(r["user_key"], r["score_date"], r["segment_id"], r["is_final"]) for r in rows] == [
        ("u1", dt.date(2024, 1, 1), 3, True), ("u2", dt.date(2024, 1, 1), 1, True),
        ("u3", dt.date(2024, 1, 1), 2, True), ("u4", dt.date(2024, 1, 2), 1, True)]
    tables = {t.table_id for t in warehouse.client.list_tables(f"{warehouse.project}.{dataset}")}
    assert not [t for t in tables if "__staging" in t]


def test_streaming_write_merges_each_batch(warehouse, dataset, monkeypatch):
    loads, merges = _watch_staging(monkeypatch)
    target = BigQueryTarget.local(warehouse.endpoint, warehouse.project, dataset, batch_size=2, streaming=True)
    run_write(target, [assignment(f"u{i}", during(0, 10 + i), 1) for i in range(5)])
    assert len(loads) >= 3
    assert sorted(merges) == sorted([table] for table in loads)  # each load MERGEd on its own
    assert [r["user_key"] for r in read_assignments(warehouse, dataset)] == ["u0", "u1", "u2", "u3", "u4"]


def test_a_failed_final_merge_fails_the_job_and_keeps_the_staged_rows(warehouse, dataset, monkeypatch):
    def refuse(client, spec, table_id, staging_id):
        raise RuntimeError("emulator down")

    monkeypatch.setattr(local_sink, "merge_staging", refuse)
    target = BigQueryTarget.local(warehouse.endpoint, warehouse.project, dataset)
    with pytest.raises(Exception, match="staged rows are kept in") as failure:
        run_write(target, [assignment("u1", closing(0), 1), assignment("u2", closing(0), 1)])
    staging = re.search(r"kept in (\S+):", str(failure.value)).group(1)
    kept = list(warehouse.client.query(f"SELECT user_key, score_date FROM `{staging}` ORDER BY user_key").result())
    assert [(r["user_key"], r["score_date"]) for r in kept] == [
        ("u1", dt.date(2024, 1, 1)), ("u2", dt.date(2024, 1, 1))]
    assert read_assignments(warehouse, dataset) == []
    warehouse.client.delete_table(staging)


@pytest.mark.parametrize("streaming", [False, True], ids=["batch", "streaming"])
def test_a_failed_load_dead_letters_exactly_its_batch(warehouse, dataset, monkeypatch, streaming):
    from google.api_core import exceptions

    real_stage = local_sink.stage_rows
    batches = []

    def refuse_u3(client, spec, table_id, rows, *naming):
        batches.append([r["user_key"] for r in rows])
        if "u3" in batches[-1]:
            raise exceptions.BadRequest("no u3 today")
        return real_stage(client, spec, table_id, rows, *naming)

    monkeypatch.setattr(local_sink, "stage_rows", refuse_u3)
    monkeypatch.setattr(bq_loads, "stage_rows", refuse_u3)
    target = BigQueryTarget.local(warehouse.endpoint, warehouse.project, dataset, batch_size=2, streaming=streaming)
    with TestPipeline() as p:
        rejected = p | beam.Create([assignment(f"u{i}", closing(0), 1) for i in range(1, 6)]) | WriteAssignments(target)
        _ = rejected | WriteDeadLetters(target, run_id="run-9")
    (refused_batch,) = [b for b in batches if "u3" in b]
    assert sorted(u for b in batches for u in b) == ["u1", "u2", "u3", "u4", "u5"]
    assert max(map(len, batches)) <= 2
    stored = [r["user_key"] for r in read_assignments(warehouse, dataset)]
    assert stored == sorted({"u1", "u2", "u3", "u4", "u5"} - set(refused_batch))
    letters = warehouse.client.query(
        f"SELECT raw_payload, error_code, error_detail FROM `{warehouse.project}.{dataset}.dead_letters`").result()
    got = sorted(((json.loads(r["raw_payload"]), r["error_code"], r["error_detail"]) for r in letters),
                 key=lambda g: g[0]["user_key"])
    assert [(p["user_key"], code, detail) for p, code, detail in got] == [
        (user, "row_rejected", "load failed: 400 no u3 today") for user in sorted(refused_batch)]
    assert {(p["score_date"], p["as_of"]) for p, _, _ in got} == {("2024-01-01", "2024-01-02 00:00:00.000000 UTC")}


def test_invalid_assignments_become_dead_letters_not_rows(warehouse, dataset):
    target = BigQueryTarget.local(warehouse.endpoint, warehouse.project, dataset)
    bad = assignment("u9", closing(0), 1)
    bad["segment_name"] = None
    bad["features"]["not_a_feature"] = 1.0
    timeless = dict(assignment("u8", closing(0), 1), as_of_us=None)
    with TestPipeline() as p:
        rejected = p | beam.Create([assignment("u1", closing(0), 1), bad, timeless]) | WriteAssignments(target)
        assert_that(
            rejected | beam.Map(lambda d: (d.error_code, d.stage, d.error_detail)),
            equal_to([
                ("row_rejected", "write", "segment_name: missing REQUIRED field; features.not_a_feature: unknown field"),
                ("row_rejected", "write", "score_date: missing REQUIRED field; as_of: missing REQUIRED field"),
            ]),
        )
    assert [r["user_key"] for r in read_assignments(warehouse, dataset)] == ["u1"]


def test_dead_letters_and_audit_are_queryable(warehouse, dataset):
    target = BigQueryTarget.local(warehouse.endpoint, warehouse.project, dataset)
    dls = [
        DeadLetter("{oops", "utf8", "invalid_json", "Expecting value", "in.jsonl", "parse", T0),
        DeadLetter("/w==", "base64", "invalid_json", "not UTF-8", "in.jsonl", "parse", T0 + 1),
    ]
    with TestPipeline() as p:
        refused = p | beam.Create(dls) | WriteDeadLetters(target, run_id="run-7")
        assert_that(refused, equal_to([]))
    sql = (
        f"SELECT raw_payload, payload_encoding, error_code, stage, processing_time, run_id "
        f"FROM `{warehouse.project}.{dataset}.dead_letters` ORDER BY processing_time"
    )
    got = [tuple(r.values()) for r in warehouse.client.query(sql).result()]
    assert got == [
        ("{oops", "utf8", "invalid_json", "parse", dt.datetime(2024, 1, 1, tzinfo=UTC), "run-7"),
        ("/w==", "base64", "invalid_json", "parse", dt.datetime(2024, 1, 1, 0, 0, 0, 1, tzinfo=UTC), "run-7"),
    ]

    summary = {"read": 5, "valid": 3, "duplicates": 0, "filtered": {"no_consent": 0},
               "dead_lettered": {"invalid_json": 2}, "reconciled": True, "assignments": 3}
    write_audit(warehouse.client, warehouse.project, dataset,
                bq_rows.audit_row(summary, run_id="run-7", mode="batch", input="in.jsonl", model_version="m-1"))
    (audit,) = [dict(r) for r in warehouse.client.query(
        f"SELECT * FROM `{warehouse.project}.{dataset}.run_audit`").result()]
    assert audit["dead_lettered"] == [{"code": "invalid_json", "count": 2}]
    assert (audit["read"], audit["valid"], audit["reconciled"]) == (5, 3, True)


def test_start_refuses_a_port_another_server_holds(tmp_path):
    import socket

    from devtools import warehouse as wh

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        taken = holder.getsockname()[1]
        with pytest.raises(RuntimeError, match=f"port {taken} on 127.0.0.1 is already in use"):
            wh.start(tmp_path / "data", rest_port=taken, grpc_port=wh.free_port())


# ----------------------------------------------------------------------------- nothing lost


def test_an_oversized_dead_letter_is_stored_truncated_with_its_size_and_digest(warehouse, dataset):
    target = BigQueryTarget.local(warehouse.endpoint, warehouse.project, dataset, max_payload_bytes=2048)
    big = "{" + "x" * 300_000 + "}"  # 300,002 bytes
    with TestPipeline() as p:
        kept = p | beam.Create([DeadLetter(big, "utf8", "oversized", "too big", "in.jsonl:7", "parse", T0),
                                DeadLetter("{ok", "utf8", "invalid_json", "", "in.jsonl:8", "parse", T0)]) | (
            WriteDeadLetters(target, run_id="run-big"))
        assert_that(kept, equal_to([]))
    rows = {r["source"]: dict(r) for r in warehouse.client.query(
        f"SELECT * FROM `{warehouse.project}.{dataset}.dead_letters`").result()}
    assert rows["in.jsonl:7"]["raw_payload"] == big[:2048]
    assert (rows["in.jsonl:7"]["payload_bytes"], rows["in.jsonl:7"]["payload_truncated"]) == (300_002, True)
    assert rows["in.jsonl:7"]["payload_sha256"] == hashlib.sha256(big.encode()).hexdigest()
    assert (rows["in.jsonl:8"]["raw_payload"], rows["in.jsonl:8"]["payload_truncated"]) == ("{ok", False)


def test_dead_letters_the_warehouse_refuses_go_to_the_fallback_folder(warehouse, dataset, tmp_path, monkeypatch):
    from google.api_core import exceptions

    def refuse(*args, **kwargs):
        raise exceptions.BadRequest("no dead letters today")

    monkeypatch.setattr(bq_loads, "_load", refuse)
    target = BigQueryTarget.local(warehouse.endpoint, warehouse.project, dataset, fallback_dir=str(tmp_path / "fb"))
    letters = [DeadLetter(f"{{bad{i}", "utf8", "invalid_json", "", f"in.jsonl:{i}", "parse", T0) for i in range(5)]
    with TestPipeline() as p:
        kept = p | beam.Create(letters) | WriteDeadLetters(target, run_id="run-fb")
        assert_that(kept | beam.Map(lambda r: r.row["source"]), equal_to([f"in.jsonl:{i}" for i in range(5)]))
    lines = [json.loads(line) for name in sorted((tmp_path / "fb").iterdir()) for line in name.read_text().splitlines()]
    assert sorted(row["raw_payload"] for row in lines) == [f"{{bad{i}" for i in range(5)]
    assert {row["run_id"] for row in lines} == {"run-fb"}
    assert all(bq_rows.validate_row(row, bt.DEAD_LETTERS_SCHEMA) == [] for row in lines)  # loadable as they are


def test_without_a_fallback_folder_a_refused_dead_letter_fails_the_job(warehouse, dataset, monkeypatch):
    from google.api_core import exceptions

    monkeypatch.setattr(bq_loads, "_load", lambda *a, **k: (_ for _ in ()).throw(exceptions.BadRequest("no")))
    target = BigQueryTarget.local(warehouse.endpoint, warehouse.project, dataset)
    with pytest.raises(Exception, match="no fallback folder is configured"):
        with TestPipeline() as p:
            _ = p | beam.Create([DeadLetter("{x", "utf8", "invalid_json", "", "s", "parse", T0)]) | WriteDeadLetters(
                target)


def _ended_pid() -> int:
    import subprocess
    import sys

    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_sweep_drops_only_the_staging_tables_of_ended_runs(warehouse, dataset):
    import os
    import socket

    client, project = warehouse.client, warehouse.project
    spec = bt.TABLES[bt.Table.SEGMENT_ASSIGNMENTS]
    table_id = f"{project}.{dataset}.segment_assignments"
    host = socket.gethostname()
    row = [bq_rows.assignment_row(assignment("u1", 0, 1), T0)]
    owners = {
        "ended": bq_loads.StagingOwner("run-ended", host, _ended_pid()),
        "alive": bq_loads.StagingOwner("run-alive", host, os.getpid()),
        "kept": bq_loads.StagingOwner("run-kept", host, _ended_pid(), kept=True),
        "elsewhere": bq_loads.StagingOwner("run-elsewhere", "another-host", 1),
    }
    made = {name: bq_loads.stage_rows(client, spec, table_id, row, f"staging_{name}", owner)
            for name, owner in owners.items()}
    made["unowned"] = bq_loads.stage_rows(client, spec, table_id, row, "staging_unowned")

    swept = bq_loads.sweep_staging(client, project, dataset)
    assert swept.tables == {"run-ended": [made["ended"]]} and swept.rows == {"run-ended": 1}
    left = {t.table_id for t in client.list_tables(f"{project}.{dataset}")}
    assert {made[n].rsplit(".", 1)[1] for n in ("alive", "kept", "elsewhere", "unowned")} <= left

    # A day later the ones whose maker cannot be asked are leftovers too (never the kept one).
    import datetime as dt_

    later = dt_.datetime.now(dt_.timezone.utc) + dt_.timedelta(hours=25)
    swept = bq_loads.sweep_staging(client, project, dataset, now=later)
    assert set(swept.tables) == {"run-elsewhere", "unknown"}
    # A run cleans up its own, whatever its state.
    assert bq_loads.sweep_staging(client, project, dataset, run_id="run-alive").tables == {
        "run-alive": [made["alive"]]}
    client.delete_table(made["kept"])


def test_an_older_dead_letters_table_gets_the_new_columns(warehouse, unique_dataset):
    from google.cloud import bigquery

    client, project = warehouse.client, warehouse.project
    client.create_dataset(f"{project}.{unique_dataset}")
    old = [f for f in bt.DEAD_LETTERS_SCHEMA if not f["name"].startswith("payload_") or f["name"] == "payload_encoding"]
    client.create_table(bigquery.Table(f"{project}.{unique_dataset}.dead_letters",
                                       schema=[bigquery.SchemaField.from_api_repr(f) for f in old]))
    bq_admin.create_tables(client, unique_dataset, project=project)
    columns = [f.name for f in client.get_table(f"{project}.{unique_dataset}.dead_letters").schema]
    assert columns == [f["name"] for f in bt.DEAD_LETTERS_SCHEMA]
