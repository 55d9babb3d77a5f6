"""Where the tables are: `BigQueryTarget`, and a google-cloud-bigquery client for it.

Production is Google BigQuery (``endpoint`` None); locally, any server speaking the
BigQuery REST API on an endpoint (the `bqemulator` warehouse the `segments` CLI starts),
reached by the same client with anonymous credentials.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from apache_beam.io.gcp.bigquery import BigQueryDisposition

from transforms.bigquery.tables import Table

LOCAL_PROJECT = "segments-local"
LOCAL_ENDPOINT = "http://127.0.0.1:9050"


def client_for(endpoint: str, project: str = LOCAL_PROJECT):
    """A `google.cloud.bigquery.Client` talking to a local BigQuery-API endpoint, anonymously."""
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import bigquery

    return bigquery.Client(
        project=project,
        credentials=AnonymousCredentials(),
        client_options=ClientOptions(api_endpoint=endpoint),
    )


@dataclasses.dataclass(frozen=True)
class BigQueryTarget:
    """Where rows go.

    Attributes:
        project: GCP project (or the local warehouse's project id).
        dataset: dataset holding the tables.
        endpoint: REST endpoint of a local BigQuery-API server; None = real BigQuery.
        streaming: True for unbounded input (production: STREAMING_INSERTS).
        create_disposition: production only; CREATE_IF_NEEDED (default) or CREATE_NEVER.
        batch_size: local sink: rows per load job (at most).
        staging_suffix: staging tables are named ``<table>__<staging_suffix>`` (production
            batch) or ``<table>__<staging_suffix>_<random>`` (local); a batch run makes
            it unique (``staging_<run token>``).
        run_id: the run writing (recorded on its staging tables, see `transforms.bigquery.loads.StagingOwner`).
        owner_host / owner_pid: the process that launched the run (ditto; None: not recorded).
        max_payload_bytes: dead letters: payloads longer than this are stored truncated,
            with their full size and SHA-256 (`transforms.bigquery.rows.dead_letter_row`).
        fallback_dir: local or gs:// folder where rows the warehouse refused and that have
            no table to go to (dead letters, audit rows) are kept as JSON lines; None: such
            a refusal fails the job.
    """

    project: str
    dataset: str
    endpoint: str | None = None
    streaming: bool = False
    create_disposition: str = BigQueryDisposition.CREATE_IF_NEEDED
    # A load job has a fixed cost, and in streaming each load is MERGEd, which reads the
    # whole table: fewer, larger loads (20k rows are ~60 MB in memory) keep runs linear.
    batch_size: int = 20_000
    staging_suffix: str = "staging"
    run_id: str | None = None
    owner_host: str | None = None
    owner_pid: int | None = None
    max_payload_bytes: int = 1024 * 1024
    fallback_dir: str | None = None

    @classmethod
    def local(cls, endpoint: str, project: str, dataset: str, **kwargs: Any) -> "BigQueryTarget":
        return cls(project=project, dataset=dataset, endpoint=endpoint, **kwargs)

    @property
    def is_local(self) -> bool:
        return self.endpoint is not None

    def table_id(self, table: Table | str) -> str:
        """``project.dataset.table`` (google-cloud-bigquery form)."""
        name = table.value if isinstance(table, Table) else table
        return f"{self.project}.{self.dataset}.{name}"

    def beam_table(self, table: Table | str) -> str:
        """``project:dataset.table`` (Beam form)."""
        name = table.value if isinstance(table, Table) else table
        return f"{self.project}:{self.dataset}.{name}"

    def staging_owner(self):
        """Who the staging tables belong to (`StagingOwner`), or None when not recorded."""
        from transforms.bigquery.loads import StagingOwner

        if self.run_id is None or self.owner_host is None or self.owner_pid is None:
            return None
        return StagingOwner(self.run_id, self.owner_host, self.owner_pid)

    def client(self):
        """A google-cloud-bigquery client for this target."""
        if self.is_local:
            return client_for(self.endpoint, self.project)
        from google.cloud import bigquery

        return bigquery.Client(project=self.project)
