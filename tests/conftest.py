"""Shared fixtures.

`warehouse`: one local BigQuery-API warehouse (bqemulator) for the whole test session,
on free ports in a temporary directory, stopped at the end. It yields a
`devtools.warehouse.Warehouse` with `.client` (google.cloud.bigquery.Client pointed at
the emulator), `.endpoint` and `.project`. Tests should create their own dataset (see
`unique_dataset`) so that they do not see each other's tables.
"""

from __future__ import annotations

import os
import uuid

import pytest


@pytest.fixture(scope="session")
def warehouse(tmp_path_factory):
    from devtools import warehouse as wh

    with wh.ephemeral(data_dir=tmp_path_factory.mktemp("warehouse")) as running:
        yield running


@pytest.fixture
def unique_dataset(warehouse):
    """A fresh dataset name in the session warehouse (deleted after the test)."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    yield name
    warehouse.client.delete_dataset(f"{warehouse.project}.{name}", delete_contents=True, not_found_ok=True)


# CI (`.ci/run`) sets SEGMENTS_REQUIRE_INTEGRATION=1: then a skipped integration test
# (Pub/Sub emulator, local warehouse) fails the run, and so does a run where none passed.
_REQUIRE_INTEGRATION = os.environ.get("SEGMENTS_REQUIRE_INTEGRATION") == "1"
_integration_passed = []


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if item.get_closest_marker("integration") is None:
        return
    if report.skipped and _REQUIRE_INTEGRATION:
        report.outcome = "failed"
        report.longrepr = f"integration test {item.nodeid} was skipped; CI requires it to run"
    elif report.when == "call" and report.passed:
        _integration_passed.append(item.nodeid)


def pytest_sessionfinish(session, exitstatus):
    collected_integration = any(item.get_closest_marker("integration") for item in session.items)
    if _REQUIRE_INTEGRATION and collected_integration and not _integration_passed and exitstatus == 0:
        session.exitstatus = 1
        print("\nCI: no integration test passed (SEGMENTS_REQUIRE_INTEGRATION=1)")


@pytest.fixture(scope="session")
def generated_population(tmp_path_factory):
    """A generated population with its truth and training rows, made once per session
    (`tests.support.population`)."""
    from tests.support.population import make_population

    return make_population(tmp_path_factory.mktemp("population"))
