"""The batch job end to end into the local warehouse: every user and window assigned,
dead letters queryable with the summary's counts, and reruns idempotent."""


import numpy as np
import pytest

from models import DEFAULT_MODEL_DIR
from models.artifact import load_artifact, load_card
from pipelines import batch
from transforms.bigquery import admin as bq_admin
from devtools import generate
from transforms.contracts.feature_spec import FEATURE_VERSION, MODEL_FEATURES
from tests.support.expected import DAY, END, expected_windows


@pytest.fixture(scope="module")
def events_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("e2e") / "events.jsonl"
    generate.generate_events(str(path), users=40, days=8, end=END, seed=11, fmt="jsonl", corrupt_rate=0.05)
    return path


def run_job(events_file, warehouse, dataset, run_id):
    return batch.run(["--input", str(events_file), "--demo_key", "--run_id", run_id,
                      "--bq_endpoint", warehouse.endpoint, "--bq_project", warehouse.project, "--bq_dataset", dataset])


def table_rows(warehouse, dataset, table, order):
    sql = f"SELECT * FROM `{warehouse.project}.{dataset}.{table}` ORDER BY {order}"
    return [dict(row.items()) for row in warehouse.client.query(sql).result()]


def test_batch_end_to_end(events_file, warehouse, unique_dataset):
    first = run_job(events_file, warehouse, unique_dataset, "run-1")
    first.check()
    rows = table_rows(warehouse, unique_dataset, "segment_assignments", "row_key")

    # Every user and window, once, from the shipped model.
    assigned = {(row["user_key"], row["window_end"]) for row in rows}
    assert len(assigned) == len(rows)
    assert assigned == expected_windows(events_file)
    assert first.extra["assignments"] == len(rows)
    card = load_card(DEFAULT_MODEL_DIR)
    names = {segment["segment_id"]: segment["name"] for segment in card["segments"]}
    assert all(names[row["segment_id"]] == row["segment_name"] for row in rows)
    assert {row["model_version"] for row in rows} == {card["model_version"]}
    assert {row["feature_version"] for row in rows} == {FEATURE_VERSION}
    assert all(row["window_end"] - row["window_start"] == 30 * DAY for row in rows)

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

    # A rerun over the same input and model leaves the same rows, assigned_at included.
    run_job(events_file, warehouse, unique_dataset, "run-2").check()
    assert table_rows(warehouse, unique_dataset, "segment_assignments", "row_key") == rows


def test_default_model_loads_and_assigns():
    model = load_artifact(DEFAULT_MODEL_DIR)
    card = load_card(DEFAULT_MODEL_DIR)
    centroids = np.array([[segment["centroid"][name] for name in MODEL_FEATURES] for segment in card["segments"]])
    assigned = model.assign(centroids)
    # A segment's own centroid (in original units) is nearest to that segment.
    assert list(assigned.segment_id) == [segment["segment_id"] for segment in card["segments"]]
