"""The batch job when the warehouse refuses what it is sent: nothing lost, nothing claimed.

Faults are made by a proxy in front of the real local warehouse (`tests/support/faulty_warehouse.py`);
the expected rows are worked out from the input file, as in test_batch.py.
"""

from __future__ import annotations

import base64
import glob
import json
import os
import subprocess
import sys

import pytest

from devtools import generate
from tests.support.faulty_warehouse import FaultyWarehouse
from tests.support.expected import END, expected_scorings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def events_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("failures") / "events.jsonl"
    generate.generate_events(str(path), users=25, days=6, end=END, seed=23, fmt="jsonl", corrupt_rate=0.05)
    return path


def invalid_lines(path) -> list[bytes]:
    """The records the generator made invalid: every line that is not a JSON object with an "e-" event id."""
    bad = []
    for line in path.read_bytes().split(b"\n"):
        if not line:
            continue
        try:
            record = json.loads(line)
        except ValueError:
            bad.append(line)
            continue
        if not isinstance(record, dict) or not str(record.get("event_id", "")).startswith("e-"):
            bad.append(line)
    return bad


def fallback_rows(folder) -> list[dict]:
    rows = []
    for name in glob.glob(os.path.join(folder, "dead_letters-*.jsonl")):
        with open(name, "rb") as handle:
            rows.extend(json.loads(line) for line in handle if line.strip())
    return rows


def payload(row) -> bytes:
    return base64.b64decode(row["raw_payload"]) if row["payload_encoding"] == "base64" else row["raw_payload"].encode()


def test_refused_uploads_fail_the_run_and_every_row_is_kept(events_file, warehouse, unique_dataset, tmp_path):
    fallback = tmp_path / "fallback"
    with FaultyWarehouse(warehouse.endpoint) as proxy:
        proxy.refuse_uploads = True
        result = subprocess.run(
            [sys.executable, "-m", "devtools.cli", "run", "--input", str(events_file), "--demo_key",
             "--run_id", "refused-1", "--summary", str(tmp_path / "s.json"), "--dead_letter_fallback", str(fallback),
             "--bq_endpoint", proxy.endpoint, "--bq_project", warehouse.project, "--bq_dataset", unique_dataset],
            capture_output=True, text=True, timeout=600)
    assert proxy.refused > 0
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("segments run: error:")]
    folder = str(fallback / "refused-1")
    assert "not everything reached the warehouse" in line and f"kept in {folder}" in line

    kept = fallback_rows(folder)
    # Every assignment the job made is kept, as a row_rejected dead letter carrying the row...
    rejected = [json.loads(row["raw_payload"]) for row in kept
                if row["error_code"] == "row_rejected" and row["source"] == "bigquery:segment_assignments"]
    # ... and so is every change it detected: here each user's first scoring, "entered".
    changes = [json.loads(row["raw_payload"]) for row in kept
               if row["error_code"] == "row_rejected" and row["source"] == "bigquery:segment_changes"]
    assert sorted((c["user_key"], c["kind"]) for c in changes) == sorted(
        (user, "entered") for user, _ in expected_scorings(events_file, history_days=0))
    expected = expected_scorings(events_file, history_days=0)
    assert {(row["user_key"], row["score_date"]) for row in rejected} == {
        (user, day.isoformat()) for user, day in expected}
    assert len(rejected) == len(expected)
    # ... and every invalid input record, byte for byte.
    others = sorted(payload(row) for row in kept if row["error_code"] != "row_rejected")
    assert others == sorted(invalid_lines(events_file))

    summary = json.loads((tmp_path / "s.json").read_text())
    assert (summary["reconciled"], summary["complete"], summary["fallback"]) == (True, False, folder)
    assert summary["writes"]["segment_assignments"]["written"] == 0
    assert summary["writes"]["dead_letters"]["kept_in_fallback"] == len(kept)
    # The audit row could not be loaded either: it is kept next to them.
    audit = json.loads((fallback / "refused-1" / "run_audit.json").read_text())
    assert (audit["run_id"], audit["status"]) == ("refused-1", "failed")
    # Nothing reached the tables.
    for table in ("segment_assignments", "segment_changes", "dead_letters", "run_audit"):
        (count,) = warehouse.client.query(
            f"SELECT COUNT(*) AS n FROM `{warehouse.project}.{unique_dataset}.{table}`").result()
        assert count["n"] == 0, table


def test_an_unreachable_warehouse_is_one_line_before_any_work(events_file, tmp_path):
    from devtools.warehouse import free_port

    result = subprocess.run(
        [sys.executable, "-m", "devtools.cli", "run", "--input", str(events_file), "--demo_key",
         "--bq_endpoint", f"http://127.0.0.1:{free_port()}", "--summary", str(tmp_path / "s.json")],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "cannot reach the warehouse at http://127.0.0.1:" in result.stderr
    assert not (tmp_path / "s.json").exists()
