"""The DuckDB SQL reference (benchmark variant c) computes what the batch job computes.

A small generated input (40 users x 10 days, no corruption) goes through the batch
graph (`pipelines.batch.build_pipeline`: read, privacy, dedupe, ComputeUserFeatures,
windows ending by the as-of time) and through `benchmarks/duckdb_features.sql`; every
user window and every feature of `REFERENCE_FEATURES` must agree to 1e-9. The plain
Python loop (variant d) is held to the same reference, so the benchmark's four variants
compute the same thing.
"""

from __future__ import annotations

import math

import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import BeamAssertException, assert_that

from benchmarks import duckdb_features, python_loop
from benchmarks.pseudonyms import BENCH_KEY
from devtools import generate
from models import DEFAULT_MODEL_DIR
from models.handler import assignment_handler
from pipelines.batch import BatchOptions, build_pipeline
from transforms.ingest.privacy import DEMO_ID_KEY, pseudonymise

TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def events_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("duckdb_reference") / "events.jsonl"
    generate.generate_events(path, users=40, days=10, seed=11, fmt="jsonl")
    return str(path)


@pytest.fixture(scope="module")
def reference(events_file):
    return duckdb_features.compute(events_file, key=DEMO_ID_KEY)


def _key(record):
    return record["user_key"], record["window_start_us"], record["window_end_us"]


def _differences(expected: list[dict], actual: list[dict]) -> list[str]:
    """Human-readable differences between two sets of user-window records."""
    want = {_key(r): r for r in expected}
    got = {_key(r): r for r in actual}
    problems = []
    if len(want) != len(expected) or len(got) != len(actual):
        problems.append(f"duplicate windows: {len(expected)} vs {len(want)}, {len(actual)} vs {len(got)}")
    missing, extra = set(want) - set(got), set(got) - set(want)
    if missing or extra:
        problems.append(f"{len(missing)} windows missing (e.g. {sorted(missing)[:2]}), "
                        f"{len(extra)} unexpected (e.g. {sorted(extra)[:2]})")
    for key in sorted(set(want) & set(got)):
        for name in duckdb_features.REFERENCE_FEATURES:
            a, b = want[key][name], got[key][name]
            if isinstance(a, float) or isinstance(b, float):
                same = a is not None and b is not None and math.isclose(a, b, rel_tol=TOLERANCE, abs_tol=TOLERANCE)
            else:
                same = a == b
            if not same:
                problems.append(f"{key} {name}: reference {a!r}, got {b!r}")
    return problems


def test_reference_covers_the_input(reference):
    # Guards against a vacuous comparison: 40 users over 10 days give many windows.
    assert len(reference) > 100
    assert sum(r["frequency"] for r in reference) > 0
    assert sum(r["sessions"] for r in reference) > 0


def test_pipeline_features_equal_the_duckdb_reference(events_file, reference):
    options = BatchOptions(["--input", events_file, "--demo_key"])

    def matches_reference(records):
        problems = _differences(reference, list(records))
        if problems:
            raise BeamAssertException(f"{len(problems)} differences:\n" + "\n".join(problems[:20]))

    with TestPipeline() as p:
        outputs = build_pipeline(p, options, DEMO_ID_KEY, assignment_handler(DEFAULT_MODEL_DIR), target=None)
        assert_that(outputs.features, matches_reference)


def test_python_loop_equals_the_duckdb_reference(events_file, reference):
    assert _differences(reference, python_loop.compute(events_file, key=DEMO_ID_KEY)) == []


def test_benchmark_pseudonyms_are_the_pipelines():
    # The DuckDB and loop variants pseudonymise without importing Beam; same key, same HMAC.
    assert BENCH_KEY == DEMO_ID_KEY
    from benchmarks.pseudonyms import pseudonymise_rows

    assert pseudonymise_rows([{"user_id": "u-000001"}], BENCH_KEY) == [
        {"user_key": pseudonymise(DEMO_ID_KEY, "u-000001")}]
