"""The MERGE that makes writes idempotent: staged rows into a table, on its merge key.

Shared by the production batch path (after Beam's FILE_LOADS into a staging table),
the local sink, and the analyst views' notion of "most final" (`pane_rank_sql`).
"""

from __future__ import annotations

from typing import Sequence

from transforms.bigquery.tables import TableSpec


def pane_rank_sql(column: str) -> str:
    """How final a pane is: late 2, on_time/unknown 1, early 0 (same rule as the views)."""
    return (
        f"CASE LOWER({column}) WHEN 'late' THEN 2 WHEN 'on_time' THEN 1 "
        f"WHEN 'unknown' THEN 1 ELSE 0 END"
    )


def merge_sql(spec: TableSpec, target_table: str, staging_tables: Sequence[str]) -> str:
    """MERGE staged rows (one staging table or several) into the target on the spec's merge key.

    Unseen keys are inserted. A key already present is replaced only by a more final
    row (higher pane rank, or equal rank and more events), so re-merging the same rows
    is a no-op. Within the staged rows the most final row per key wins.
    """
    if spec.merge_key != "row_key":
        raise ValueError(f"{spec.name} has no MERGE rule")
    staged = "\n  UNION ALL\n".join(f"  SELECT * FROM `{table}`" for table in staging_tables)
    cols = [f["name"] for f in spec.schema]
    rank_s, rank_t = pane_rank_sql("s.pane"), pane_rank_sql("t.pane")
    return (
        f"MERGE `{target_table}` AS t\n"
        f"USING (\n"
        f"  SELECT * FROM (\n{staged}\n  )\n"
        f"  WHERE TRUE\n"
        f"  QUALIFY ROW_NUMBER() OVER (\n"
        f"    PARTITION BY row_key\n"
        f"    ORDER BY {pane_rank_sql('pane')} DESC, event_count DESC, assigned_at DESC) = 1\n"
        f") AS s\n"
        f"ON t.row_key = s.row_key\n"
        f"WHEN MATCHED AND ({rank_s} > {rank_t}\n"
        f"  OR ({rank_s} = {rank_t} AND s.event_count > t.event_count)) THEN\n"
        f"  UPDATE SET {', '.join(f'{c} = s.{c}' for c in cols if c != 'row_key')}\n"
        f"WHEN NOT MATCHED THEN\n"
        f"  INSERT ({', '.join(cols)})\n"
        f"  VALUES ({', '.join('s.' + c for c in cols)})"
    )
