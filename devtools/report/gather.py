"""Every number of the report, read from the warehouse (google-cloud-bigquery) and the model card.

`gather` returns one JSON-ready dict; the page shows it and embeds it whole. Sections,
and where each number comes from (``@mv`` is the model's version, ``[start, end]`` the
range of dates):

* ``sizes``: users per segment and score date (`segment_sizes_daily`); the latest day of
  the range, each segment's users, share of that day, change since the day before and
  since the first day of the range.
* ``profiles``: per segment, from the card: name, description, distinguishing features
  (`devtools.report.segments`); from the rows of the latest day: users, customers (with a
  P(alive)), average P(alive) and expected purchases over the customers, average spend
  (the RFM money feature), users per named RFM segment.
* ``moves``: from -> to counts of users whose segment differs from their previous scored
  day (`user_segment_history`), for the days of the range; the reasons: the drivers of
  the changes in `segment_changes` when that table exists, else the features that
  changed most (`segment_transitions`, weighted by moves).
* ``movement``: per day, users scored that day and the day before, and how many changed
  segment; the model card's training baseline (`models.drift.daily_moves`).
* ``health``: `run_audit` rows that finished from the range's first day on (to its last
  when one was asked for; streaming intervals summed per run), and dead letters processed
  then, by day, code and stage.
* ``drift``: per feature, the PSI of the latest day's rows against the card's training
  bins (`models.drift`; bins counted in SQL with ``COUNTIF(value <= edge)``), and the
  largest PSI each run (of the health section's runs) recorded in `run_audit`.
* ``shadow``: the latest `segments shadow` comparison of this model with a candidate
  (`shadow_moves`), when there is one.
* ``moments``: users per moment and score date (`moment_sizes_daily`), each day's share
  marked as a rise or a fall against its trailing baseline, and the type x moment cross of
  the latest day (`user_segment_history`; `devtools.report.moments`); None when the dataset
  has no moment view or the model no moments.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Mapping, Optional

from models import drift
from models.rfm import RFM_FEATURES
from devtools.report import moments as report_moments
from devtools.report import segments as card_segments
from transforms.bigquery.tables import Table

DEFAULT_DAYS = 30
TOP_REASONS = 3
MAX_RUNS = 20
SEGMENT_CHANGES = "segment_changes"  # changes with their drivers, when the dataset has the table


class ReportError(ValueError):
    """Nothing to report for what was asked (one line for the user)."""


class _Warehouse:
    """Queries with parameters against one dataset."""

    def __init__(self, client, project: str, dataset: str, model_version: str):
        self.client, self.project, self.dataset, self.model_version = client, project, dataset, model_version

    def __getitem__(self, name: str) -> str:
        """A table's quoted name, for ``{t[name]}`` in the statements."""
        return f"`{self.project}.{self.dataset}.{name}`"

    def exists(self, name: str) -> bool:
        from google.api_core.exceptions import NotFound

        try:
            self.client.get_table(f"{self.project}.{self.dataset}.{name}")
            return True
        except NotFound:
            return False

    def rows(self, sql: str, **params: Any) -> list[dict]:
        from google.cloud import bigquery

        kinds = {str: "STRING", int: "INT64", float: "FLOAT64", dt.date: "DATE"}
        config = bigquery.QueryJobConfig(query_parameters=[
            bigquery.ScalarQueryParameter(name, kinds[type(value)], value) for name, value in
            dict(params, mv=self.model_version).items()])
        return [dict(row.items()) for row in self.client.query(sql.format(t=self), job_config=config).result()]


def date_range(client, project: str, dataset: str, model_version: str, start: Optional[dt.date],
               end: Optional[dt.date]) -> tuple[dt.date, dt.date]:
    """The range asked for, by default the 30 days up to the model's latest score date.

    Raises:
        ReportError: the dataset holds no row of the model.
    """
    wh = _Warehouse(client, project, dataset, model_version)
    if not wh.exists(Table.SEGMENT_ASSIGNMENTS.value):
        raise ReportError(f"{project}.{dataset} has no segment_assignments table: run a job into it first")
    found = wh.rows("SELECT MAX(score_date) AS last_day FROM {t[segment_assignments]} WHERE model_version = @mv")
    last_day = found[0]["last_day"] if found else None
    if last_day is None:
        versions = wh.rows("SELECT model_version, COUNT(*) AS n FROM {t[segment_assignments]} GROUP BY model_version "
                           "ORDER BY n DESC LIMIT 5")
        there = ", ".join(f"{v['model_version']} ({v['n']:,} rows)" for v in versions) or "none"
        raise ReportError(f"{project}.{dataset}.segment_assignments has no row of model {model_version} "
                          f"(models there: {there}); pass --model with the model that scored them")
    if end is None:
        end = last_day
    if start is None:
        start = end - dt.timedelta(days=DEFAULT_DAYS - 1)
    if start > end:
        raise ReportError(f"--from {start} is after --to {end}")
    return start, end


def _iso(day: dt.date) -> str:
    return day.isoformat()


def gather(client, project: str, dataset: str, card: Mapping, start: dt.date, end: dt.date,
           model_dir: str = "", processed_until: Optional[dt.date] = None) -> dict:
    """Every number of the report (module docstring); JSON-ready.

    Args:
        start, end: the score dates of the segment sections; runs and dead letters processed
            from `start` to `processed_until` (None: to now, so that a backfill of old days
            shows the runs that wrote them).
    """
    wh = _Warehouse(client, project, dataset, card["model_version"])
    wh.processed = ("BETWEEN @start AND @until" if processed_until else ">= @start",
                    {"start": start, **({"until": processed_until} if processed_until else {})})
    sizes = _sizes(wh, start, end, card)
    latest = sizes["latest_day"] and dt.date.fromisoformat(sizes["latest_day"])
    return {
        "meta": {"project": project, "dataset": dataset, "model_version": card["model_version"],
                 "model_dir": model_dir, "start": _iso(start), "end": _iso(end),
                 "processed_until": _iso(processed_until) if processed_until else None,
                 "currency": (card.get("money") or {}).get("reporting_currency", "")},
        "segments": sizes.pop("segments"),
        "sizes": sizes,
        "profiles": _profiles(wh, latest, card) if latest else {},
        "moves": _moves(wh, start, end),
        "movement": _movement(wh, start, end, card),
        "health": _health(wh),
        "drift": _drift(wh, latest, card),
        "shadow": _shadow(wh, start, end),
        "moments": _moments(wh, start, end, latest, card),
    }


def _moments(wh: _Warehouse, start: dt.date, end: dt.date, latest: Optional[dt.date], card: Mapping) -> Optional[dict]:
    if not card.get("moments") or not wh.exists("moment_sizes_daily"):
        return None
    rows = wh.rows("SELECT day, moment, users FROM {t[moment_sizes_daily]} WHERE model_version = @mv "
                   "AND day BETWEEN @from AND @end ORDER BY day, moment",
                   end=end, **{"from": start - dt.timedelta(days=report_moments.TRAILING_DAYS)})
    out = report_moments.moment_series(rows, start)
    crossed = wh.rows("SELECT segment_id, moment, COUNT(*) AS users FROM {t[user_segment_history]} "
                      "WHERE model_version = @mv AND score_date = @day AND moment IS NOT NULL "
                      "GROUP BY segment_id, moment", day=latest) if latest else []
    out["cross"] = report_moments.cross(crossed)
    out["cross_day"] = _iso(latest) if latest else None
    return out


# ----------------------------------------------------------------------------- sections


def _sizes(wh: _Warehouse, start: dt.date, end: dt.date, card: Mapping) -> dict:
    rows = wh.rows("SELECT day, segment_id, segment_name, users FROM {t[segment_sizes_daily]} "
                   "WHERE model_version = @mv AND day BETWEEN @start AND @end ORDER BY day, segment_id",
                   start=start, end=end)
    names = {e["segment_id"]: e["name"] for e in card_segments.segment_entries(card)}
    for row in rows:
        names.setdefault(int(row["segment_id"]), row["segment_name"])
    days = sorted({row["day"] for row in rows})
    series = {str(sid): [0] * len(days) for sid in sorted(names)}
    index = {day: i for i, day in enumerate(days)}
    for row in rows:
        series[str(row["segment_id"])][index[row["day"]]] = int(row["users"])
    latest: dict[str, dict] = {}
    total = 0
    if days:
        last = len(days) - 1
        total = sum(values[last] for values in series.values())
        for sid, values in series.items():
            latest[sid] = {
                "users": values[last],
                "share": values[last] / total if total else 0.0,
                "change_day": values[last] - values[last - 1] if last >= 1 else None,
                "change_range": values[last] - values[0] if last >= 1 else None,
            }
    return {"segments": [{"segment_id": sid, "name": names[sid]} for sid in sorted(names)],
            "days": [_iso(d) for d in days], "series": series, "latest": latest, "total_latest": total,
            "latest_day": _iso(days[-1]) if days else None,
            "previous_day": _iso(days[-2]) if len(days) >= 2 else None,
            "first_day": _iso(days[0]) if days else None}


def _profiles(wh: _Warehouse, day: dt.date, card: Mapping) -> dict:
    money = RFM_FEATURES[2] if RFM_FEATURES[2] in card.get("features", ()) else None
    spend = f"AVG(features.{money})" if money else "CAST(NULL AS FLOAT64)"
    scores = wh.rows(
        "SELECT segment_id, COUNT(*) AS users, COUNTIF(p_alive IS NOT NULL) AS customers, AVG(p_alive) AS avg_p_alive, "
        "AVG(expected_purchases_30d) AS avg_expected_purchases, " + spend + " AS avg_spend "
        "FROM {t[segment_assignments]} WHERE model_version = @mv AND score_date = @day GROUP BY segment_id",
        day=day)
    mix = wh.rows("SELECT segment_id, rfm.rfm_segment AS rfm_segment, COUNT(*) AS users FROM {t[segment_assignments]} "
                  "WHERE model_version = @mv AND score_date = @day GROUP BY segment_id, rfm.rfm_segment", day=day)
    entries = {e["segment_id"]: e for e in card_segments.segment_entries(card)}
    out = {}
    for sid in sorted(set(entries) | {int(r["segment_id"]) for r in scores}):
        entry = entries.get(sid, {"name": "", "description": "", "features": [], "features_source": None, "z": {}})
        row = next((r for r in scores if int(r["segment_id"]) == sid), None)
        users = int(row["users"]) if row else 0
        rfm_counts = {str(r["rfm_segment"]): int(r["users"]) for r in mix if int(r["segment_id"]) == sid}
        out[str(sid)] = {
            "name": entry["name"], "description": entry["description"],
            "features": entry["features"], "features_source": entry["features_source"], "z": entry["z"],
            "users": users,
            "customers": int(row["customers"]) if row else 0,
            "avg_p_alive": row["avg_p_alive"] if row else None,
            "avg_expected_purchases": row["avg_expected_purchases"] if row else None,
            "avg_spend": row["avg_spend"] if row else None,
            "rfm": {name: n / users for name, n in sorted(rfm_counts.items(), key=lambda kv: (-kv[1], kv[0]))},
        }
    return {"day": _iso(day), "spend_feature": money, "segments": out}


def _moves(wh: _Warehouse, start: dt.date, end: dt.date) -> dict:
    counts = wh.rows(
        "SELECT previous_segment_id AS from_id, previous_segment_name AS from_name, segment_id AS to_id, "
        "segment_name AS to_name, COUNT(*) AS users FROM {t[user_segment_history]} "
        "WHERE model_version = @mv AND score_date BETWEEN @start AND @end AND changed "
        "GROUP BY previous_segment_id, previous_segment_name, segment_id, segment_name", start=start, end=end)
    reasons, source = {}, None
    if wh.exists(SEGMENT_CHANGES):
        source = SEGMENT_CHANGES
        found = wh.rows(
            "SELECT c.from_segment_id AS from_id, c.to_segment_id AS to_id, d.feature AS feature, COUNT(*) AS n, "
            "AVG(d.contribution) AS contribution, AVG(d.before) AS before_value, AVG(d.after) AS after_value "
            "FROM {t[segment_changes]} AS c, UNNEST(c.drivers) AS d WHERE c.model_version = @mv "
            "AND c.kind = 'segment' AND c.score_date BETWEEN @start AND @end "
            "GROUP BY c.from_segment_id, c.to_segment_id, d.feature", start=start, end=end)
        for r in found:
            reasons.setdefault((int(r["from_id"]), int(r["to_id"])), []).append(
                {"feature": r["feature"], "n": int(r["n"]), "contribution": r["contribution"],
                 "before": r["before_value"], "after": r["after_value"]})
        for key, items in reasons.items():
            items.sort(key=lambda x: (-x["n"], -(x["contribution"] or 0.0), x["feature"]))
    else:
        source = "segment_transitions"
        found = wh.rows(
            "SELECT from_segment_id AS from_id, to_segment_id AS to_id, t.feature AS feature, "
            "SUM(transitions) AS n, SUM(transitions * t.change_sd) AS weighted FROM {t[segment_transitions]}, "
            "UNNEST(top_changed_features) AS t WHERE model_version = @mv AND day BETWEEN @start AND @end "
            "AND from_segment_id != to_segment_id GROUP BY from_segment_id, to_segment_id, t.feature",
            start=start, end=end)
        for r in found:
            reasons.setdefault((int(r["from_id"]), int(r["to_id"])), []).append(
                {"feature": r["feature"], "n": int(r["n"]), "change_sd": r["weighted"] / r["n"]})
        for key, items in reasons.items():
            items.sort(key=lambda x: (-x["n"], -abs(x["change_sd"]), x["feature"]))
    pairs = sorted(({"from": int(r["from_id"]), "from_name": r["from_name"], "to": int(r["to_id"]),
                     "to_name": r["to_name"], "users": int(r["users"]),
                     "reasons": reasons.get((int(r["from_id"]), int(r["to_id"])), [])[:TOP_REASONS]}
                    for r in counts), key=lambda p: (-p["users"], p["from"], p["to"]))
    return {"pairs": pairs, "total": sum(p["users"] for p in pairs), "reasons_source": source}


def _movement(wh: _Warehouse, start: dt.date, end: dt.date, card: Mapping) -> dict:
    rows = wh.rows("SELECT score_date AS day, COUNT(*) AS users, COUNTIF(changed) AS moved "
                   "FROM {t[user_segment_history]} WHERE model_version = @mv AND score_date BETWEEN @start AND @end "
                   "AND previous_segment_id IS NOT NULL GROUP BY score_date ORDER BY score_date", start=start, end=end)
    baseline = ((card.get(drift.CARD_KEY) or {}).get("daily_moves") or {})
    return {"days": [_iso(r["day"]) for r in rows], "users": [int(r["users"]) for r in rows],
            "moved": [int(r["moved"]) for r in rows],
            "share": [int(r["moved"]) / int(r["users"]) for r in rows],
            "baseline": baseline.get("share"), "baseline_days": baseline.get("days")}


def _run_key(run_id: str) -> str:
    """A streaming interval's run id is ``<run>/<time>``: its run."""
    return run_id.split("/", 1)[0]


def _health(wh: _Warehouse) -> dict:
    runs: dict[str, dict] = {}
    when, params = wh.processed
    if wh.exists(Table.RUN_AUDIT.value):
        rows = wh.rows("SELECT * FROM {t[run_audit]} WHERE DATE(finished_at) " + when +
                       " ORDER BY finished_at, run_id", **params)
        for r in rows:
            run = runs.setdefault(_run_key(r["run_id"]), {
                "run_id": _run_key(r["run_id"]), "mode": r["mode"], "rows": 0, "finished_at": None, "read": 0,
                "valid": 0, "dead_lettered": 0, "filtered": 0, "duplicates": 0, "reconciled": None,
                "status": None, "model_version": r["model_version"]})
            run["rows"] += 1
            run["finished_at"] = r["finished_at"].strftime("%Y-%m-%d %H:%M UTC")
            for name in ("read", "valid", "duplicates"):
                run[name] += int(r[name] or 0)
            run["dead_lettered"] += sum(int(d["count"] or 0) for d in r["dead_lettered"] or [])
            run["filtered"] += sum(int(f["count"] or 0) for f in r["filtered"] or [])
            if r["reconciled"] is not None:
                run["reconciled"] = bool(r["reconciled"]) and run["reconciled"] is not False
            run["status"] = r["status"] or run["status"]
    dead = []
    if wh.exists(Table.DEAD_LETTERS.value):
        dead = wh.rows("SELECT DATE(processing_time) AS day, error_code, stage, COUNT(*) AS n FROM {t[dead_letters]} "
                       "WHERE DATE(processing_time) " + when + " GROUP BY 1, 2, 3 ORDER BY 1, 2, 3", **params)
    by_code_stage: dict[tuple[str, str], int] = {}
    for r in dead:
        by_code_stage[(r["error_code"], r["stage"])] = by_code_stage.get((r["error_code"], r["stage"]), 0) + int(r["n"])
    ordered = sorted(runs.values(), key=lambda r: (r["finished_at"], r["run_id"]))[-MAX_RUNS:]
    return {
        "runs": ordered,
        "runs_in_range": len(runs),
        "dead_letters": [{"day": _iso(r["day"]), "code": r["error_code"], "stage": r["stage"], "n": int(r["n"])}
                         for r in dead],
        "dead_by_code_stage": [{"code": c, "stage": s, "n": n} for (c, s), n in
                               sorted(by_code_stage.items(), key=lambda kv: (-kv[1], kv[0]))],
        "dead_total": sum(by_code_stage.values()),
    }


def _bin_columns(monitor: drift.DriftMonitor) -> tuple[str, dict[str, list[str]]]:
    """``COUNT(features.f) AS f__n, COUNTIF(features.f <= e) AS f__i, ...`` for every feature and edge."""
    parts, names = [], {}
    for feature in monitor.features:
        names[feature] = []
        parts.append(f"COUNT(features.{feature}) AS {feature}__n")
        for i, edge in enumerate(monitor.edges[feature]):
            parts.append(f"COUNTIF(features.{feature} <= {float(edge)!r}) AS {feature}__{i}")
            names[feature].append(f"{feature}__{i}")
    return ", ".join(parts), names


def _drift(wh: _Warehouse, day: Optional[dt.date], card: Mapping) -> dict:
    monitor = drift.DriftMonitor.from_card(card)
    out: dict[str, Any] = {"day": _iso(day) if day else None, "rows": 0, "features": [], "history": [],
                           "thresholds": {"moderate": drift.MODERATE, "major": drift.MAJOR},
                           "available": monitor is not None}
    if monitor is None or day is None:
        return out
    columns, names = _bin_columns(monitor)
    found = wh.rows("SELECT COUNT(*) AS rows_compared, " + columns + " FROM {t[segment_assignments]} "
                    "WHERE model_version = @mv AND score_date = @day", day=day)[0]
    counts = {}
    for feature in monitor.features:
        cumulative = [int(found[name]) for name in names[feature]] + [int(found[f"{feature}__n"])]
        counts[feature] = [cumulative[0]] + [hi - lo for lo, hi in zip(cumulative, cumulative[1:])]
    values = monitor.psi_of_counts(counts)
    out["rows"] = int(found["rows_compared"])
    out["features"] = [{"feature": name, "psi": value, "flag": drift.flag(value)}
                       for name, value in sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))]
    audit_columns = {f.name for f in wh.client.get_table(f"{wh.project}.{wh.dataset}.run_audit").schema} \
        if wh.exists(Table.RUN_AUDIT.value) else set()
    if "drift_max_psi" in audit_columns:
        when, params = wh.processed
        history = wh.rows("SELECT run_id, finished_at, drift_max_psi, drift_rows, drift FROM {t[run_audit]} "
                          "WHERE drift_max_psi IS NOT NULL AND model_version = @mv "
                          "AND DATE(finished_at) " + when + " ORDER BY finished_at, run_id", **params)
        out["history"] = [{"run_id": h["run_id"], "finished_at": h["finished_at"].strftime("%Y-%m-%d %H:%M UTC"),
                           "max_psi": h["drift_max_psi"], "rows": int(h["drift_rows"] or 0),
                           "top_feature": (h["drift"] or [{}])[0].get("feature")} for h in history]
    return out


def _shadow(wh: _Warehouse, start: dt.date, end: dt.date) -> Optional[dict]:
    if not wh.exists(Table.SHADOW_MOVES.value):
        return None
    runs = wh.rows("SELECT shadow_id, candidate_model_version, score_date, MAX(created_at) AS created_at, "
                   "COUNT(*) AS users, COUNTIF(moved) AS moved FROM {t[shadow_moves]} "
                   "WHERE current_model_version = @mv AND score_date BETWEEN @start AND @end "
                   "GROUP BY shadow_id, candidate_model_version, score_date "
                   "ORDER BY created_at DESC, shadow_id LIMIT 1", start=start, end=end)
    if not runs:
        return None
    run = runs[0]
    pairs = wh.rows("SELECT current_segment_id AS from_id, current_segment_name AS from_name, "
                    "candidate_segment_id AS to_id, candidate_segment_name AS to_name, COUNT(*) AS users "
                    "FROM {t[shadow_moves]} WHERE shadow_id = @shadow_id AND moved "
                    "GROUP BY 1, 2, 3, 4", shadow_id=run["shadow_id"])
    drivers = wh.rows("SELECT current_segment_id AS from_id, candidate_segment_id AS to_id, d.feature AS feature, "
                      "COUNT(*) AS n, AVG(d.contribution) AS contribution, AVG(d.value) AS value "
                      "FROM {t[shadow_moves]} AS s, UNNEST(s.drivers) AS d WHERE s.shadow_id = @shadow_id AND s.moved "
                      "GROUP BY 1, 2, 3", shadow_id=run["shadow_id"])
    by_pair: dict[tuple[int, int], list] = {}
    for d in drivers:
        by_pair.setdefault((int(d["from_id"]), int(d["to_id"])), []).append(
            {"feature": d["feature"], "n": int(d["n"]), "contribution": d["contribution"], "value": d["value"]})
    for items in by_pair.values():
        items.sort(key=lambda x: (-x["n"], -(x["contribution"] or 0.0), x["feature"]))
    users, moved = int(run["users"]), int(run["moved"])
    return {
        "shadow_id": run["shadow_id"], "candidate_model_version": run["candidate_model_version"],
        "score_date": _iso(run["score_date"]), "users": users, "moved": moved,
        "share": moved / users if users else 0.0,
        "pairs": sorted(({"from": int(p["from_id"]), "from_name": p["from_name"], "to": int(p["to_id"]),
                          "to_name": p["to_name"], "users": int(p["users"]),
                          "drivers": by_pair.get((int(p["from_id"]), int(p["to_id"])), [])[:TOP_REASONS]}
                         for p in pairs), key=lambda p: (-p["users"], p["from"], p["to"])),
    }
