"""Whole commands against the local warehouse: erasure that sticks (snapshots included), Ctrl-C, a killed run's leftovers."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys

import pytest

from devtools import generate
from pipelines import batch
from tests.support.expected import END
from tests.support.waiting import wait_for
from transforms.ingest.privacy import DEMO_ID_KEY, pseudonymise

pytestmark = pytest.mark.integration


def cli(*args, env=None, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "devtools.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, **kwargs)


def target_flags(warehouse, dataset):
    return ["--bq_endpoint", warehouse.endpoint, "--bq_project", warehouse.project, "--bq_dataset", dataset]


def query(warehouse, sql, **params):
    from google.cloud import bigquery

    config = bigquery.QueryJobConfig(query_parameters=[
        bigquery.ScalarQueryParameter(name, "STRING", value) for name, value in params.items()])
    return [dict(row) for row in warehouse.client.query(sql, job_config=config).result()]


def snapshot_users(folder) -> list[str]:
    import fastavro

    from transforms.features.snapshots import snapshot_files

    found = []
    for path in snapshot_files(str(folder)):
        with open(path, "rb") as f:
            found += [r["user_key"] for r in fastavro.reader(f)]
    return found


def test_an_erased_user_is_gone_from_every_table_and_stays_gone(warehouse, unique_dataset, tmp_path):
    events = tmp_path / "events.jsonl"
    generate.generate_events(str(events), users=20, days=5, end=END, seed=31, fmt="jsonl", corrupt_rate=0.1)
    # Of the users, the one named by the most records that are not valid events: the most to lose.
    lines = events.read_bytes().splitlines()
    users = {json.loads(line)["user_id"] for line in lines if line.startswith(b'{"event_id":"e-')}
    user = max(sorted(users), key=lambda u: sum(f'"{u}"'.encode() in line for line in lines
                                                if not line.startswith(b'{"event_id":"e-')))
    key = pseudonymise(DEMO_ID_KEY, user)
    table = f"`{warehouse.project}.{unique_dataset}"
    suppression = tmp_path / "erasures.txt"
    flags = ["--input", str(events), "--demo_key", *target_flags(warehouse, unique_dataset)]
    def remaining():
        assignments = query(warehouse, f"SELECT COUNT(*) AS n FROM {table}.segment_assignments` WHERE user_key = @k",
                            k=key)[0]["n"]
        letters = [r for r in query(warehouse, f"SELECT raw_payload, payload_encoding FROM {table}.dead_letters`")
                   if any(word in (base64.b64decode(r["raw_payload"]) if r["payload_encoding"] == "base64"
                                   else r["raw_payload"].encode()) for word in (f'"{user}"'.encode(), key.encode()))]
        return assignments, len(letters)

    snapshot_dir = tmp_path / "snapshots"
    batch.run(flags + ["--run_id", "before", "--snapshot_dir", str(snapshot_dir), "--as_of", END.isoformat()]).check()
    assert key in snapshot_users(snapshot_dir)
    assert remaining()[1] > 0, "the chosen user has dead letters to erase"
    assert query(warehouse, f"SELECT COUNT(*) AS n FROM {table}.segment_assignments` WHERE user_key = @k", k=key)[0]["n"]
    others = query(warehouse, f"SELECT COUNT(*) AS n FROM {table}.segment_assignments` WHERE user_key != @k", k=key)

    (tmp_path / "ids.txt").write_text(f"\ufeff{user}\n")
    env = dict(os.environ, SEGMENTS_WAREHOUSE_DIR=str(warehouse.data_dir))
    erase = cli("erase", "--user_ids", str(tmp_path / "ids.txt"), "--suppression_list", str(suppression),
                "--demo_key", "--bq_project", warehouse.project, "--bq_dataset", unique_dataset,
                "--snapshot_dir", str(snapshot_dir), env=env)
    out, err = erase.communicate(timeout=300)
    assert erase.returncode == 0, err
    assert "1 users erased" in out
    assert "1 profile records removed from the snapshots" in out
    assert key not in snapshot_users(snapshot_dir) and snapshot_users(snapshot_dir)

    assert remaining() == (0, 0)
    (audit,) = query(warehouse, f"SELECT * FROM {table}.erasure_audit`")
    assert audit["user_keys"] == [key] and user not in json.dumps(audit, default=str)

    # A rerun over the same input, with the list the erasure appended to, does not bring them back.
    rerun = batch.run(flags + ["--run_id", "after", "--suppression_list", str(suppression)])
    rerun.check()
    assert rerun.filtered["suppressed"] > 0
    assert remaining() == (0, 0)
    assert query(warehouse, f"SELECT COUNT(*) AS n FROM {table}.segment_assignments` WHERE user_key != @k",
                 k=key) == others


@pytest.fixture(scope="module")
def long_input(tmp_path_factory):
    """Enough users that the final loads take seconds: time to interrupt a run while it stages."""
    path = tmp_path_factory.mktemp("long") / "events.jsonl"
    generate.generate_events(str(path), users=6000, days=30, end=END, seed=5, fmt="jsonl", corrupt_rate=0.0)
    return path


def staging_of(warehouse, dataset, token):
    try:
        return [t.table_id for t in warehouse.client.list_tables(f"{warehouse.project}.{dataset}")
                if f"__staging_{token}" in t.table_id]
    except Exception:  # the dataset is made by the run
        return []


def start_and_wait_for_staging(warehouse, dataset, run_id, long_input):
    job = cli("run", "--input", str(long_input), "--demo_key", "--run_id", run_id,
              *target_flags(warehouse, dataset))
    token = run_id.replace("-", "_")
    wait_for(lambda: staging_of(warehouse, dataset, token) or job.poll() is not None,
             "a staging table of the run", timeout_s=240)
    assert job.poll() is None, "the run ended before it staged anything: the input is too small for this machine"
    return job, token


def test_ctrl_c_stops_a_run_and_drops_its_staging_tables(warehouse, unique_dataset, long_input):
    job, token = start_and_wait_for_staging(warehouse, unique_dataset, "ctrl-c", long_input)
    job.send_signal(signal.SIGINT)
    out, err = job.communicate(timeout=120)
    assert job.returncode == 130, err
    assert "Traceback" not in err and "interrupted" in err
    assert staging_of(warehouse, unique_dataset, token) == []
    (audit,) = query(warehouse, f"SELECT status, detail FROM `{warehouse.project}.{unique_dataset}.run_audit` "
                                "WHERE run_id = 'ctrl-c'")
    assert audit["status"] == "interrupted" and "dropped" in audit["detail"]


def test_the_next_run_sweeps_a_killed_runs_staging_tables(warehouse, unique_dataset, long_input, tmp_path):
    job, token = start_and_wait_for_staging(warehouse, unique_dataset, "killed", long_input)
    job.send_signal(signal.SIGKILL)
    job.communicate(timeout=60)
    left = staging_of(warehouse, unique_dataset, token)
    assert left, "a killed run leaves its staging tables"
    # The next run is typed as a user would: from the folder holding the data, a relative glob.
    (tmp_path / "data").mkdir()
    records = 0
    for seed in (2, 3):
        small = tmp_path / "data" / f"small-{seed}.jsonl"
        generate.generate_events(str(small), users=5, days=3, end=END, seed=seed, fmt="jsonl")
        records += len(small.read_bytes().splitlines())
    job = cli("run", "--input", "data/*.jsonl", "--summary", "s.json", "--demo_key", "--run_id", "next",
              *target_flags(warehouse, unique_dataset), cwd=tmp_path)
    _out, err = job.communicate(timeout=600)
    assert job.returncode == 0, err
    assert json.loads((tmp_path / "s.json").read_text())["read"] == records
    assert staging_of(warehouse, unique_dataset, token) == []
    (audit,) = query(warehouse, f"SELECT status, detail FROM `{warehouse.project}.{unique_dataset}.run_audit` "
                                "WHERE run_id = 'killed'")
    assert audit["status"] == "killed" and f"{len(left)} staging table(s)" in audit["detail"]
