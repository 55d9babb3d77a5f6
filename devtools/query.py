"""Query results as text tables, for the terminal (`segments query`, the demo).

Works against any google-cloud-bigquery client (the local warehouse or BigQuery)::

    print(query_table(client, "SELECT 1 AS one"))
    print(run_view(client, "segments", "segment_sizes_daily"))
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any, Iterable, Sequence

from transforms.bigquery.admin import VIEWS


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
        "user_segment_history": "user_key, score_date, model_version",
        "current_segment": "user_key",
        "segment_sizes_daily": "day, model_version, segment_id",
        "moment_sizes_daily": "day, model_version, moment",
        "segment_transitions": "day, model_version, from_segment_id, to_segment_id",
        "segment_profiles": "model_version, segment_id, feature_index",
    }[name]
    return f"SELECT * FROM `{project}.{dataset}.{name}` ORDER BY {order}"


def run_view(client, dataset: str, name: str, project: str | None = None, max_rows: int = 1000) -> str:
    """A view's rows as a readable text table."""
    return query_table(client, view_query(project or client.project, dataset, name), max_rows=max_rows)
