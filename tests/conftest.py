"""Shared fixtures.

`warehouse`: one local BigQuery-API warehouse (bqemulator) for the whole test session,
on free ports in a temporary directory, stopped at the end. It yields a
`pipelines.warehouse.Warehouse` with `.client` (google.cloud.bigquery.Client pointed at
the emulator), `.endpoint` and `.project`. Tests should create their own dataset (see
`unique_dataset`) so that they do not see each other's tables.
"""

from __future__ import annotations

import uuid

import pytest


@pytest.fixture(scope="session")
def warehouse(tmp_path_factory):
    from pipelines import warehouse as wh

    with wh.ephemeral(data_dir=tmp_path_factory.mktemp("warehouse")) as running:
        yield running


@pytest.fixture
def unique_dataset(warehouse):
    """A fresh dataset name in the session warehouse (deleted after the test)."""
    name = f"t_{uuid.uuid4().hex[:10]}"
    yield name
    warehouse.client.delete_dataset(f"{warehouse.project}.{name}", delete_contents=True, not_found_ok=True)
