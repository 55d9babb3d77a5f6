"""`segments shadow`: which users a candidate model would move, before switching to it.

    segments shadow --candidate models/candidate [--model models/default] [--score_date 2026-12-01]

Reads the rows the current model (``--model``, the one that scored them) wrote to
`segment_assignments` for one score date (default: its latest), scores the feature values
stored on them with both the current model and the candidate (`models.shadow`: the same
users, the same profiles, the same as-of time), and writes one `shadow_moves` row per user:
both segments, whether the candidate moves them, and for a move the features driving it.
No assignment is changed. Rerunning the same comparison (same date, same two models)
replaces its rows. `segments report` shows the latest comparison of its model.

Rows are read and written a page at a time (``--page_size``), so memory stays bounded.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import time
from typing import Callable, Optional

from devtools import warehouse_cli


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from models import DEFAULT_MODEL_DIR
    from pipelines.flags import int_in, iso_date, sha256_hex

    parser.add_argument("--candidate", required=True, metavar="DIR",
                        help="The candidate model's artifact folder (local or gs://). Required.")
    parser.add_argument("--candidate_sha256", type=sha256_hex, default=None,
                        help="Refuse the candidate unless its model.joblib has this SHA-256 (a model folder is code). "
                             "Default: not pinned.")
    parser.add_argument("--model", default=DEFAULT_MODEL_DIR, metavar="DIR",
                        help="The current model: the one whose rows are compared. Default: the shipped model.")
    parser.add_argument("--model_sha256", type=sha256_hex, default=None,
                        help="Refuse the current model unless its model.joblib has this SHA-256. Default: its card's "
                             "digest is checked, not pinned.")
    parser.add_argument("--score_date", type=iso_date, default=None,
                        help="The score date (UTC) of the rows to compare. Default: the current model's latest.")
    parser.add_argument("--page_size", type=int_in(100, 1_000_000), default=50_000,
                        help="Rows read, scored and written at a time (100 to 1,000,000). Default: 50000.")
    warehouse_cli.add_target_arguments(parser)


@dataclasses.dataclass
class ShadowSummary:
    shadow_id: str
    score_date: dt.date
    users: int
    moved: int
    moves: dict[tuple[str, str], int]  # ("<current name> (id N)", "<candidate name> (id M)") -> users
    disagreements: int  # rows whose stored segment differs from the current model's scoring (expected 0)
    table: str

    @property
    def share(self) -> float:
        return self.moved / self.users if self.users else 0.0


def shadow_id_of(day: dt.date, current_version: str, candidate_version: str) -> str:
    return f"{day.isoformat()}:{current_version}:{candidate_version}"


def _micros(value: dt.datetime) -> int:
    return (value - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)) // dt.timedelta(microseconds=1)


def latest_score_date(client, project: str, dataset: str, model_version: str) -> Optional[dt.date]:
    from google.cloud import bigquery

    config = bigquery.QueryJobConfig(query_parameters=[bigquery.ScalarQueryParameter("mv", "STRING", model_version)])
    (row,) = client.query(f"SELECT MAX(score_date) AS day FROM `{project}.{dataset}.segment_assignments` "
                          "WHERE model_version = @mv", job_config=config).result()
    return row["day"]


def run_shadow(client, project: str, dataset: str, current, candidate, day: Optional[dt.date] = None,
               page_size: int = 50_000, say: Callable[[str], None] = print) -> ShadowSummary:
    """Scores the current model's rows of `day` with both models and writes `shadow_moves` (module docstring).

    Args:
        current, candidate: `models.artifact.LoadedModel`s (verified).

    Raises:
        ValueError: the models read different features, or there is no row to compare.
    """
    from google.cloud import bigquery

    from models.shadow import compare, feature_matrix
    from transforms.bigquery import admin
    from transforms.bigquery.loads import load_rows
    from transforms.bigquery.rows import format_timestamp, validate_row
    from transforms.bigquery.tables import TABLES, Table

    if tuple(current.features) != tuple(candidate.features):
        raise ValueError("the candidate reads other features than the current model: it cannot score the same rows")
    spec = TABLES[Table.SHADOW_MOVES]
    table_id = f"{project}.{dataset}.{spec.name}"
    day = day or latest_score_date(client, project, dataset, current.model_version)
    if day is None:
        raise ValueError(f"{project}.{dataset}.segment_assignments has no row of the current model "
                         f"{current.model_version}: nothing to compare (is --model the model that scored them?)")
    shadow_id = shadow_id_of(day, current.model_version, candidate.model_version)
    admin.create_table(client, project, dataset, spec)
    params = [bigquery.ScalarQueryParameter("shadow_id", "STRING", shadow_id)]
    client.query(f"DELETE FROM `{table_id}` WHERE shadow_id = @shadow_id",
                 job_config=bigquery.QueryJobConfig(query_parameters=params)).result()
    config = bigquery.QueryJobConfig(query_parameters=[
        bigquery.ScalarQueryParameter("mv", "STRING", current.model_version),
        bigquery.ScalarQueryParameter("day", "DATE", day)])
    result = client.query(
        f"SELECT user_key, as_of, segment_id, features FROM `{project}.{dataset}.segment_assignments` "
        "WHERE model_version = @mv AND score_date = @day ORDER BY user_key", job_config=config).result(
        page_size=page_size)
    created_at = format_timestamp(time.time_ns() // 1000)
    users = moved = disagreements = 0
    moves: dict[tuple[str, str], int] = {}
    for page in result.pages:
        records = [dict(row.items()) for row in page]
        if not records:
            continue
        X = feature_matrix([r["features"] for r in records], current.features)
        comparison = compare(current, candidate, X)
        rows = []
        for i, record in enumerate(records):
            now_id, then_id = int(comparison.current.segment_id[i]), int(comparison.candidate.segment_id[i])
            disagreements += int(now_id != int(record["segment_id"]))
            rows.append({
                "shadow_id": shadow_id, "user_key": record["user_key"], "score_date": day.isoformat(),
                "as_of": format_timestamp(_micros(record["as_of"])),
                "current_model_version": current.model_version, "candidate_model_version": candidate.model_version,
                "current_segment_id": now_id, "current_segment_name": comparison.current.segment_name[i],
                "candidate_segment_id": then_id, "candidate_segment_name": comparison.candidate.segment_name[i],
                "moved": bool(comparison.moved[i]), "drivers": comparison.drivers[i], "created_at": created_at,
            })
            if comparison.moved[i]:
                key = (f"{comparison.current.segment_name[i]} (id {now_id})",
                       f"{comparison.candidate.segment_name[i]} (id {then_id})")
                moves[key] = moves.get(key, 0) + 1
        for row in rows:
            problems = validate_row(row, spec.schema)
            if problems:
                raise ValueError(f"shadow_moves row refused: {problems[:3]}")
        load_rows(client, spec, table_id, rows)
        users += len(rows)
        moved += int(comparison.moved.sum())
        say(f"scored {users:,} users with both models ({moved:,} would move so far)")
    if users == 0:
        raise ValueError(f"no row of model {current.model_version} on {day} in {project}.{dataset}")
    return ShadowSummary(shadow_id, day, users, moved, moves, disagreements, table_id)


def cmd_shadow(args: argparse.Namespace, _rest) -> int:
    from models.artifact import load_artifact

    current = load_artifact(args.model, expected_sha256=args.model_sha256)
    candidate = load_artifact(args.candidate, expected_sha256=args.candidate_sha256)
    client, project = warehouse_cli.client_and_project(args)
    print(f"segments shadow: current {current.model_version} ({args.model}), candidate {candidate.model_version} "
          f"({args.candidate})", flush=True)
    summary = run_shadow(client, project, args.bq_dataset, current, candidate, args.score_date, args.page_size,
                         say=lambda line: print(f"segments shadow: {line}", flush=True))
    print(f"segments shadow: {summary.moved:,} of {summary.users:,} users ({summary.share:.1%}) would change segment "
          f"with the candidate, scored as of {summary.score_date}; no assignment was changed")
    for (before, after), n in sorted(summary.moves.items(), key=lambda kv: (-kv[1], kv[0]))[:5]:
        print(f"segments shadow:   {before} -> {after}: {n:,}")
    if candidate.card.get("segment_id_mapping") is None:
        print("segments shadow: note: the candidate was trained without --previous, so its segment ids are its own: "
              "train it with `segments train --previous <current model>` to keep the ids of matching segments")
    if summary.disagreements:
        print(f"segments shadow: warning: {summary.disagreements:,} rows hold another segment than the current model "
              f"gives them now (were they scored by another model file?)")
    print(f"segments shadow: written to {summary.table} (shadow_id {summary.shadow_id}); `segments report` shows it")
    return 0
