"""The MERGE that makes writes idempotent and reruns authoritative: staged rows into a table, on its key.

Shared by the production batch path (after Beam's FILE_LOADS into a staging table) and
the local sink. The rule, for a row of `segment_assignments` (one per user, day and model
version):

* an unseen key is inserted;
* an existing row is replaced by a scoring as of a later time (a later update of the same
  day), or by a scoring as of the same time whose content differs: a rerun over corrected
  input replaces the rows of the days it recomputed, while writing the same rows again
  changes nothing (``assigned_at`` included), because their ``content_sha256`` is equal;
* a scoring as of an earlier time never replaces a later one.

Among the staged rows themselves, the latest scoring per key wins.

A row of `segment_changes` (one per user, model version and scoring time) is inserted
when its key is unseen and replaced only when its content differs: writing the same
changes again (a rerun, a replayed message) changes nothing, ``detected_at`` included.
"""

from __future__ import annotations

from typing import Sequence

from transforms.bigquery.tables import TableSpec


# merge key -> (the order that picks one staged row per key, when a matched row is replaced)
_RULES = {
    "row_key": ("as_of DESC, event_count DESC, content_sha256 DESC, assigned_at DESC",
                "(s.as_of > t.as_of\n  OR (s.as_of = t.as_of AND s.content_sha256 != t.content_sha256))"),
    "change_key": ("content_sha256 DESC, detected_at DESC", "s.content_sha256 != t.content_sha256"),
}


def merge_sql(spec: TableSpec, target_table: str, staging_tables: Sequence[str]) -> str:
    """MERGE staged rows (one staging table or several) into the target (the rules: module docstring)."""
    if spec.merge_key not in _RULES:
        raise ValueError(f"{spec.name} has no MERGE rule")
    key = spec.merge_key
    order, replace_when = _RULES[key]
    staged = "\n  UNION ALL\n".join(f"  SELECT * FROM `{table}`" for table in staging_tables)
    cols = [f["name"] for f in spec.schema]
    return (
        f"MERGE `{target_table}` AS t\n"
        f"USING (\n"
        f"  SELECT * FROM (\n{staged}\n  )\n"
        f"  WHERE TRUE\n"
        f"  QUALIFY ROW_NUMBER() OVER (\n"
        f"    PARTITION BY {key}\n"
        f"    ORDER BY {order}) = 1\n"
        f") AS s\n"
        f"ON t.{key} = s.{key}\n"
        f"WHEN MATCHED AND {replace_when} THEN\n"
        f"  UPDATE SET {', '.join(f'{c} = s.{c}' for c in cols if c != key)}\n"
        f"WHEN NOT MATCHED THEN\n"
        f"  INSERT ({', '.join(cols)})\n"
        f"  VALUES ({', '.join('s.' + c for c in cols)})"
    )
