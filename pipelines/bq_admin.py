"""Warehouse administration: create the dataset, tables and views; run analyst queries.

Works the same against the local warehouse and real BigQuery; only the client differs::

    from pipelines import bq_admin, warehouse
    client = warehouse.client_for("http://127.0.0.1:9050", "segments-local")
    bq_admin.setup(client, "segments")                       # idempotent
    print(bq_admin.run_view(client, "segments", "segment_sizes_daily"))
    print(bq_admin.query_table(client, "SELECT 1 AS one"))

Tables are created through the tables API from `transforms.bigquery_tables` (the
emulator ignores PARTITION BY / CLUSTER BY in DDL but keeps them from the API). The
DDL in ``templates/bigquery/ddl/*.sql`` is the same schema for people who prefer to
run SQL on real BigQuery; `render_ddl` produces it and a test checks the files.
Views come from ``templates/bigquery/*.sql``, with ``${project}``, ``${dataset}`` and
the feature lists (``${feature_values}``, ``${feature_changes}``) derived from
`transforms.feature_spec.MODEL_FEATURES` substituted in. A view is replaced only when
its statement changed (`create_views`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import math
from pathlib import Path
from string import Template
from typing import Any, Iterable, Sequence

from transforms.bigquery_tables import TABLES, Field, TableSpec, schema_fields
from transforms.feature_spec import MODEL_FEATURES

_LOG = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "templates" / "bigquery"
DDL_DIR = TEMPLATES_DIR / "ddl"

# In dependency order: later views read earlier ones.
VIEWS: tuple[str, ...] = (
    "user_segment_history",
    "current_segment",
    "segment_sizes_daily",
    "segment_transitions",
    "segment_profiles",
)

DEFAULT_LOCATION = "US"
# Label of a view: the digest of the statement that made it (see `create_views`).
VIEW_DIGEST_LABEL = "definition_sha256"


def feature_values_sql(features: Sequence[str] = MODEL_FEATURES) -> str:
    """An array literal unpivoting the ``features`` RECORD: (feature_index, feature, value)."""
    items = ",\n      ".join(
        f"STRUCT({i} AS feature_index, '{name}' AS feature, features.{name} AS value)" if i == 0
        else f"STRUCT({i}, '{name}', features.{name})"
        for i, name in enumerate(features)
    )
    return f"[\n      {items}]"


def feature_changes_sql(features: Sequence[str] = MODEL_FEATURES) -> str:
    """An array literal of (feature, change) = later minus earlier window's value."""
    items = ",\n      ".join(
        f"STRUCT('{name}' AS feature, features.{name} - previous_features.{name} AS change)" if i == 0
        else f"STRUCT('{name}', features.{name} - previous_features.{name})"
        for i, name in enumerate(features)
    )
    return f"[\n      {items}]"


def view_sql(name: str, project: str, dataset: str) -> str:
    """The ``CREATE OR REPLACE VIEW`` statement of a view, templated."""
    text = (TEMPLATES_DIR / f"{name}.sql").read_text()
    return Template(text).substitute(
        project=project,
        dataset=dataset,
        feature_values=feature_values_sql(),
        feature_changes=feature_changes_sql(),
    )


def view_digest(sql: str) -> str:
    """The label value identifying a view statement: its SHA-256, cut to a label's 63 characters."""
    return hashlib.sha256(sql.encode("utf-8")).hexdigest()[:63]


_DDL_TYPES = {"STRING": "STRING", "INT64": "INT64", "FLOAT64": "FLOAT64", "BOOL": "BOOL", "TIMESTAMP": "TIMESTAMP"}


def _ddl_type(field: Field) -> str:
    if field["type"] == "RECORD":
        inner = ", ".join(f"{f['name']} {_ddl_type(f)}" for f in field["fields"])
        base = f"STRUCT<{inner}>"
    else:
        base = _DDL_TYPES[field["type"]]
    if field.get("mode") == "REPEATED":
        return f"ARRAY<{base}>"
    return base


def render_ddl(spec: TableSpec, project: str = "${project}", dataset: str = "${dataset}") -> str:
    """``CREATE TABLE IF NOT EXISTS`` for a table, from its schema constant."""
    cols = []
    for f in spec.schema:
        not_null = " NOT NULL" if f.get("mode") == "REQUIRED" else ""
        cols.append(f"  {f['name']} {_ddl_type(f)}{not_null}")
    lines = [
        f"-- Generated from transforms/bigquery_tables.py ({spec.name}); tests/test_views.py checks it.",
        f"CREATE TABLE IF NOT EXISTS `{project}.{dataset}.{spec.name}` (",
        ",\n".join(cols),
        ")",
    ]
    if spec.partition_field:
        lines.append(f"PARTITION BY DATE({spec.partition_field})")
    if spec.clustering:
        lines.append(f"CLUSTER BY {', '.join(spec.clustering)}")
    lines.append(f"OPTIONS (description = {json.dumps(spec.description)});")
    return "\n".join(lines) + "\n"


def write_ddl_files(directory: Path = DDL_DIR) -> list[Path]:
    """(Re)generates ``templates/bigquery/ddl/<table>.sql`` from the schema constants."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for spec in TABLES.values():
        path = directory / f"{spec.name}.sql"
        path.write_text(render_ddl(spec))
        paths.append(path)
    return paths


def create_table(client, project: str, dataset: str, spec: TableSpec):
    """Creates one table (partitioned and clustered per its spec) unless it exists."""
    from google.cloud import bigquery

    table = bigquery.Table(f"{project}.{dataset}.{spec.name}", schema=schema_fields(spec))
    table.description = spec.description
    if spec.partition_field:
        table.time_partitioning = bigquery.TimePartitioning(
            type_=bigquery.TimePartitioningType.DAY, field=spec.partition_field
        )
    if spec.clustering:
        table.clustering_fields = list(spec.clustering)
    return client.create_table(table, exists_ok=True)


def setup(client, dataset: str, location: str = DEFAULT_LOCATION, project: str | None = None) -> dict:
    """Creates the dataset, the three tables and the views; safe to run again.

    Args:
        client: a google-cloud-bigquery client (local or real).
        dataset: dataset id.
        location: dataset location (real BigQuery; the emulator records it).
        project: defaults to the client's project.

    Returns:
        What exists now: {"dataset": ..., "tables": [...], "views": [...]}.
    """
    made = create_tables(client, dataset, location, project)
    return dict(made, views=create_views(client, dataset, project))


def create_tables(client, dataset: str, location: str = DEFAULT_LOCATION, project: str | None = None) -> dict:
    """The dataset and the three tables (the part of `setup` a job writes to); safe to run again."""
    from google.cloud import bigquery

    project = project or client.project
    ds = bigquery.Dataset(f"{project}.{dataset}")
    ds.location = location
    client.create_dataset(ds, exists_ok=True)
    for spec in TABLES.values():
        create_table(client, project, dataset, spec)
    _LOG.info("Dataset %s.%s ready: %d tables", project, dataset, len(TABLES))
    return {"dataset": f"{project}.{dataset}", "tables": [s.name for s in TABLES.values()]}


def create_views(client, dataset: str, project: str | None = None) -> list[str]:
    """(Re)creates the views whose definition changed; returns every view's name.

    A view carries the digest of the statement that made it in the label
    `VIEW_DIGEST_LABEL`. A view whose label matches is left alone: each ``CREATE OR
    REPLACE VIEW`` is a query job, about 4 s for the five on the local warehouse, paid
    on every run before. A view changed by hand but still carrying a current label is
    left alone: remove the label (or the view) to have it made again.
    """
    from google.api_core.exceptions import NotFound

    project = project or client.project
    replaced = []
    for name in VIEWS:
        sql = view_sql(name, project, dataset)
        digest = view_digest(sql)
        table_id = f"{project}.{dataset}.{name}"
        try:
            current = client.get_table(table_id).labels.get(VIEW_DIGEST_LABEL)
        except NotFound:
            current = None
        if current == digest:
            continue
        client.query(sql).result()
        view = client.get_table(table_id)
        view.labels = {**view.labels, VIEW_DIGEST_LABEL: digest}
        client.update_table(view, ["labels"])
        replaced.append(name)
    _LOG.info("Views of %s.%s ready: %s", project, dataset,
              f"replaced {', '.join(replaced)}" if replaced else "all current")
    return list(VIEWS)


# ----------------------------------------------------------------------------- queries


def _cell(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return str(value)
        return f"{value:.6g}"
    if isinstance(value, dt.datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S") + (f".{value.microsecond:06d}" if value.microsecond else "")
    if isinstance(value, (dict, list)):
        return json.dumps(value, default=_json_default, separators=(", ", ": "))
    return str(value)


def _json_default(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.6g}")
    return str(value)


def _round_floats(value: Any) -> Any:
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.6g}")
    if isinstance(value, dict):
        return {k: _round_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_round_floats(v) for v in value]
    return value


def format_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], max_width: int = 60) -> str:
    """Rows as a fixed-width text table with a header rule and a row count."""
    cells = [[_cell(_round_floats(v)) for v in row] for row in rows]
    cells = [[c if len(c) <= max_width else c[: max_width - 1] + "…" for c in row] for row in cells]
    widths = [len(c) for c in columns]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]
    numeric = [
        all(_is_number(r[i]) for r in cells) and bool(cells) for i in range(len(columns))
    ]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.rjust(w) if num else v.ljust(w) for v, w, num in zip(values, widths, numeric)).rstrip()

    out = [line(columns), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in cells)
    out.append(f"({len(cells)} row{'s' if len(cells) != 1 else ''})")
    return "\n".join(out)


def _is_number(text: str) -> bool:
    if text == "NULL":
        return True
    try:
        float(text)
        return True
    except ValueError:
        return False


def query_table(client, sql: str, max_rows: int = 1000) -> str:
    """Runs `sql` and returns its result as a readable fixed-width text table."""
    result = client.query(sql).result(max_results=max_rows)
    columns = [f.name for f in result.schema]
    rows = [tuple(r.values()) for r in result]
    return format_table(columns, rows)


def view_query(project: str, dataset: str, name: str) -> str:
    """``SELECT * FROM`` a known view, in a stable order."""
    if name not in VIEWS:
        raise ValueError(f"unknown view {name!r}; known: {', '.join(VIEWS)}")
    order = {
        "user_segment_history": "user_key, window_end, model_version",
        "current_segment": "user_key",
        "segment_sizes_daily": "day, model_version, segment_id",
        "segment_transitions": "day, model_version, from_segment_id, to_segment_id",
        "segment_profiles": "model_version, segment_id, feature_index",
    }[name]
    return f"SELECT * FROM `{project}.{dataset}.{name}` ORDER BY {order}"


def run_view(client, dataset: str, name: str, project: str | None = None, max_rows: int = 1000) -> str:
    """A view's rows as a readable text table."""
    return query_table(client, view_query(project or client.project, dataset, name), max_rows=max_rows)
