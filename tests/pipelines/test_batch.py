"""The batch job end to end into the local warehouse: every known user scored as of every
date asked for, dead letters queryable with the summary's counts, reruns idempotent and
authoritative."""

import collections
import datetime as dt
import json

import numpy as np
import pytest

from models import DEFAULT_MODEL_DIR, moments
from models.artifact import load_artifact, load_card
from pipelines import batch
from transforms.bigquery import admin as bq_admin
from devtools import generate
from transforms.contracts.feature_spec import FEATURE_VERSION, MODEL_FEATURES
from tests.support.expected import DAY, END, expected_scorings
from tests.support.psi import counts_by_comparison, psi_of_shares
from transforms.ingest.privacy import DEMO_ID_KEY, pseudonymise


@pytest.fixture(scope="module")
def events_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("e2e") / "events.jsonl"
    generate.generate_events(str(path), users=40, days=8, end=END, seed=11, fmt="jsonl", corrupt_rate=0.05)
    return path


HISTORY_DAYS = 3


def run_job(events_file, warehouse, dataset, run_id):
    return batch.run(["--input", str(events_file), "--demo_key", "--run_id", run_id, "--history_days",
                      str(HISTORY_DAYS), "--bq_endpoint", warehouse.endpoint, "--bq_project", warehouse.project,
                      "--bq_dataset", dataset])


def table_rows(warehouse, dataset, table, order):
    sql = f"SELECT * FROM `{warehouse.project}.{dataset}.{table}` ORDER BY {order}"
    return [dict(row.items()) for row in warehouse.client.query(sql).result()]


def test_batch_end_to_end(events_file, warehouse, unique_dataset):
    first = run_job(events_file, warehouse, unique_dataset, "run-1")
    first.check()
    rows = table_rows(warehouse, unique_dataset, "segment_assignments", "row_key")

    # Every known user and scoring date, once, from the shipped model; silent users too.
    assigned = {(row["user_key"], row["score_date"]) for row in rows}
    assert len(assigned) == len(rows)
    assert assigned == expected_scorings(events_file, HISTORY_DAYS)
    assert first.extra["assignments"] == len(rows)
    card = load_card(DEFAULT_MODEL_DIR)
    names = {segment["segment_id"]: segment["name"] for segment in card["segments"]}
    assert all(names[row["segment_id"]] == row["segment_name"] for row in rows)
    assert {row["model_version"] for row in rows} == {card["model_version"]}
    assert {row["feature_version"] for row in rows} == {FEATURE_VERSION}
    assert all(row["is_final"] and row["scoring"] == "daily" for row in rows)
    assert all(row["as_of"] == dt.datetime.combine(row["score_date"] + DAY, dt.time(), dt.timezone.utc)
               for row in rows)
    # Recency grows by a day a day for a user who did not buy in between.
    by_user = collections.defaultdict(list)
    for row in sorted(rows, key=lambda r: r["score_date"]):
        by_user[row["user_key"]].append(row)
    for history in by_user.values():
        for before, after in zip(history, history[1:]):
            if after["profile"]["last_purchase"] == before["profile"]["last_purchase"] and after["profile"][
                    "last_purchase"] is not None:
                assert after["features"]["recency_days"] - before["features"]["recency_days"] == pytest.approx(1.0)

    # Segment changes: "entered" at each user's first scored date of the run, then one per
    # consecutive pair of dates whose segment or named RFM segment differs (read off the rows).
    expected_changes = set()
    for user, history in by_user.items():
        expected_changes.add((user, history[0]["score_date"], "entered"))
        for before, after in zip(history, history[1:]):
            if before["segment_id"] != after["segment_id"]:
                expected_changes.add((user, after["score_date"], "segment"))
            elif before["moment"] != after["moment"]:
                expected_changes.add((user, after["score_date"], "moment"))
            elif before["rfm"]["rfm_segment"] != after["rfm"]["rfm_segment"]:
                expected_changes.add((user, after["score_date"], "rfm"))
    changes = table_rows(warehouse, unique_dataset, "segment_changes", "change_key")
    assert {(c["user_key"], c["score_date"], c["kind"]) for c in changes} == expected_changes
    assert len(changes) == len(expected_changes)
    # Every row has the moment of the shipped model's card, and every change both moments.
    assert all(row["moment"] in moments.MOMENTS and row["moment_reason"] for row in rows)
    moment_of_row = {(row["user_key"], row["score_date"]): row["moment"] for row in rows}
    assert all(c["to_moment"] == moment_of_row[(c["user_key"], c["score_date"])] for c in changes)
    assert any(c["kind"] == "moment" for c in changes)

    # The job made the analyst views while it ran.
    assert "views_error" not in first.extra
    names = {t.table_id for t in warehouse.client.list_tables(f"{warehouse.project}.{unique_dataset}")}
    assert set(bq_admin.VIEWS) <= names

    # Dead letters: the table holds what the summary counted, per code.
    letters = warehouse.client.query(
        f"SELECT error_code, COUNT(*) AS n FROM `{warehouse.project}.{unique_dataset}.dead_letters` "
        "WHERE run_id = 'run-1' GROUP BY error_code").result()
    in_table = {row["error_code"]: row["n"] for row in letters}
    in_summary = {code: n for code, n in first.dead_lettered.items() if n}
    assert in_table == in_summary and sum(in_summary.values()) > 0

    # The audit row reconciles the same way.
    (audit,) = warehouse.client.query(
        f"SELECT * FROM `{warehouse.project}.{unique_dataset}.run_audit` WHERE run_id = 'run-1'").result()
    assert (audit["read"], audit["valid"], audit["duplicates"], audit["reconciled"]) == (
        first.read, first.valid, first.duplicates, True)
    # ... and records the drift of every user's features as of the run's as-of time against
    # the card's training bins, PSI worked out by hand from the rows in the table.
    latest = max(row["score_date"] for row in rows)
    current = [row["features"] for row in rows if row["score_date"] == latest]
    bins = card["distribution"]["features"]
    expected = {name: psi_of_shares(bins[name]["proportions"],
                                    counts_by_comparison([f[name] for f in current], bins[name]["edges"]))
                for name in MODEL_FEATURES}
    top = sorted(expected.items(), key=lambda kv: (-kv[1], kv[0]))[:5]
    assert audit["drift_rows"] == len(current)
    assert audit["drift_max_psi"] == pytest.approx(top[0][1])
    assert [d["feature"] for d in audit["drift"]] == [name for name, _ in top]
    assert [d["psi"] for d in audit["drift"]] == pytest.approx([value for _, value in top])

    # A rerun over the same input and model leaves the same rows, assigned_at and detected_at included.
    run_job(events_file, warehouse, unique_dataset, "run-2").check()
    assert table_rows(warehouse, unique_dataset, "segment_assignments", "row_key") == rows
    assert table_rows(warehouse, unique_dataset, "segment_changes", "change_key") == changes


def test_default_model_loads_and_assigns():
    model = load_artifact(DEFAULT_MODEL_DIR)
    card = load_card(DEFAULT_MODEL_DIR)
    centroids = np.array([[segment["centroid"][name] for name in MODEL_FEATURES] for segment in card["segments"]])
    assigned = model.assign(centroids)
    # A segment's own centroid (in original units) is nearest to that segment.
    assert list(assigned.segment_id) == [segment["segment_id"] for segment in card["segments"]]


def _line(event_id, user, day, kind="page_view", **properties):
    stamp = (dt.datetime.combine(END - 3 * DAY, dt.time(12), dt.timezone.utc) + day * DAY).isoformat()
    return json.dumps({"event_id": event_id, "user_id": user, "event_type": kind, "timestamp": stamp,
                       "consent": {"analytics": True, "personalization": True},
                       "properties": properties}).encode()


def test_a_rerun_over_corrected_input_replaces_the_days_it_recomputed(tmp_path, warehouse, unique_dataset):
    original = [_line("a1", "ann", 0), _line("a2", "ann", 1, "purchase", value=30.0), _line("b1", "ben", 0),
                _line("b2", "ben", 1)]
    corrected = [line for line in original if b'"a2"' not in line]  # ann's purchase was a test order
    path = tmp_path / "events.jsonl"
    path.write_bytes(b"\n".join(original) + b"\n")
    args = ["--input", str(path), "--demo_key", "--as_of", str(END), "--bq_endpoint", warehouse.endpoint,
            "--bq_project", warehouse.project, "--bq_dataset", unique_dataset]
    batch.run(args + ["--run_id", "first"]).check()
    before = {row["user_key"]: row for row in table_rows(warehouse, unique_dataset, "segment_assignments", "row_key")}
    path.write_bytes(b"\n".join(corrected) + b"\n")
    batch.run(args + ["--run_id", "corrected"]).check()
    after = {row["user_key"]: row for row in table_rows(warehouse, unique_dataset, "segment_assignments", "row_key")}
    ann, ben = pseudonymise(DEMO_ID_KEY, "ann"), pseudonymise(DEMO_ID_KEY, "ben")
    assert set(after) == set(before) == {ann, ben}
    assert (before[ann]["features"]["orders"], after[ann]["features"]["orders"]) == (1.0, 0.0)
    assert after[ann]["event_count"] == 1 and after[ann]["assigned_at"] > before[ann]["assigned_at"]
    assert after[ben] == before[ben]  # unchanged content: not rewritten, assigned_at included
