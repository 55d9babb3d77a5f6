"""The analyst views, run on the local warehouse over hand-made assignments and checked
against plain-Python computations over the same assignments; plus the DDL files."""

from __future__ import annotations

import datetime as dt
import random
import re
import statistics
from collections import defaultdict

import pytest

from devtools import query
from transforms.bigquery import admin as bq_admin
from transforms.bigquery import rows as bq_rows
from transforms.bigquery import tables as bt
from transforms.contracts.feature_spec import MODEL_FEATURES
from transforms.bigquery.loads import load_rows

UTC = dt.timezone.utc
DAY_US = 86_400_000_000
T0 = 1_704_067_200_000_000  # 2024-01-01 00:00:00 UTC
PANE_RANK = {"early": 0, "on_time": 1, "late": 2}  # the documented finality order


# ----------------------------------------------------------------------------- files


@pytest.mark.parametrize("table", list(bt.Table))
def test_ddl_files_match_the_schema_constants(table):
    path = bq_admin.DDL_DIR / f"{table.value}.sql"
    assert path.read_text() == bq_admin.render_ddl(bt.TABLES[table])


def test_ddl_lists_every_column_with_its_mode():
    text = bq_admin.render_ddl(bt.TABLES[bt.Table.SEGMENT_ASSIGNMENTS])
    for f in bt.SEGMENT_ASSIGNMENTS_SCHEMA:
        line = next(line for line in text.splitlines() if line.strip().startswith(f["name"] + " "))
        assert line.rstrip(",").endswith("NOT NULL") == (f["mode"] == "REQUIRED")
    assert "PARTITION BY DATE(window_end)" in text and "CLUSTER BY segment_id, user_key" in text


@pytest.mark.parametrize("name", bq_admin.VIEWS)
def test_view_templates_resolve_every_placeholder(name):
    sql = bq_admin.view_sql(name, "proj", "ds")
    assert "${" not in sql
    assert f"CREATE OR REPLACE VIEW `proj.ds.{name}`" in sql
    if "UNNEST(" in sql:  # the views that unpivot the features list every one of them
        for feature in MODEL_FEATURES:
            assert f"features.{feature}" in sql


# ----------------------------------------------------------------------------- data


def _features(rng: random.Random, with_null: bool = False) -> dict:
    values = {name: round(rng.uniform(0, 10) * (1 + 9 * (i % 3 == 0)), 2) for i, name in enumerate(MODEL_FEATURES)}
    if with_null:
        values[MODEL_FEATURES[1]] = None
    return values


def _assignment(user, day, segment, pane="on_time", events=5, model="m-1", assigned_at_us=None, rng=None, **kw):
    a = {
        "user_key": user,
        "window_start_us": T0 + day * DAY_US,
        "window_end_us": T0 + (day + 1) * DAY_US,
        "pane": pane,
        "segment_id": segment,
        "segment_name": f"{model}-segment-{segment}",
        "distance": 1.0,
        "margin": 0.5,
        "rfm": {"r": 1, "f": 1, "m": 1, "rfm_segment": "x"},
        "p_alive": 0.5,
        "expected_purchases_30d": 1.0,
        "churn_risk": 0.5,
        "features": _features(rng, kw.pop("with_null", False)),
        "feature_version": "v1",
        "model_version": model,
        "event_count": events,
    }
    a.update(kw)
    return a, assigned_at_us if assigned_at_us is not None else T0 + 10 * DAY_US


def make_data():
    """(assignment, assigned_at_us) pairs covering panes, days, users and two models."""
    rng = random.Random(7)
    rows = [
        # u1: 1 -> 2 -> 2 -> 3; day 1 has an early pane superseded by on_time.
        _assignment("u1", 0, 1, rng=rng),
        _assignment("u1", 1, 1, pane="early", events=2, rng=rng),
        _assignment("u1", 1, 2, pane="on_time", events=4, rng=rng),
        _assignment("u1", 2, 2, rng=rng),
        _assignment("u1", 3, 3, rng=rng, with_null=True),
        # u2: 1 -> 3 -> 1; a late firing overrides on_time on day 1.
        _assignment("u2", 0, 1, rng=rng),
        _assignment("u2", 1, 2, pane="on_time", events=3, rng=rng),
        _assignment("u2", 1, 3, pane="late", events=6, rng=rng),
        _assignment("u2", 2, 1, rng=rng),
        # u3: 2 -> 2, then only an early pane on day 3 (current: the final day-2 one).
        _assignment("u3", 1, 2, rng=rng),
        _assignment("u3", 2, 2, rng=rng),
        _assignment("u3", 3, 1, pane="early", events=1, rng=rng),
        # u4: only early so far.
        _assignment("u4", 3, 3, pane="early", events=1, rng=rng),
        # u5: 1 -> 3 on day 1 -> 2 ; plus a second model version re-scoring day 2 later.
        _assignment("u5", 0, 1, rng=rng),
        _assignment("u5", 1, 3, rng=rng),
        _assignment("u5", 2, 2, rng=rng),
        _assignment("u5", 2, 7, model="m-2", assigned_at_us=T0 + 11 * DAY_US, rng=rng),
        # u6, u7: more members for the medians (even and odd counts).
        _assignment("u6", 2, 1, rng=rng),
        _assignment("u7", 2, 1, rng=rng),
        _assignment("u6", 1, 3, rng=rng),
    ]
    return rows


def _day(us):
    return (dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=us)).date()


def _history(data):
    """Python: one row per (user, window, model), the most final pane, with previous segment."""
    best = {}
    for a, at in data:
        key = (a["user_key"], a["window_start_us"], a["window_end_us"], a["model_version"])
        rank = (PANE_RANK[a["pane"]], a["event_count"], at)
        if key not in best or rank > best[key][0]:
            best[key] = (rank, a, at)
    by_user = defaultdict(list)
    for rank, a, at in best.values():
        by_user[(a["user_key"], a["model_version"])].append(dict(a, assigned_at=at, is_final=rank[0] > 0))
    out = []
    for rows in by_user.values():
        rows.sort(key=lambda r: (r["window_end_us"], r["window_start_us"]))
        prev = None
        for r in rows:
            out.append(dict(r, previous=prev))
            prev = r
    return out


# ----------------------------------------------------------------------------- views


@pytest.fixture(scope="module")
def views_dataset(warehouse):
    name = "test_views"
    data = make_data()
    bq_admin.setup(warehouse.client, name)
    rows = [bq_rows.assignment_row(a, at) for a, at in data]
    spec = bt.TABLES[bt.Table.SEGMENT_ASSIGNMENTS]
    load_rows(warehouse.client, spec, f"{warehouse.project}.{name}.segment_assignments", rows)
    yield name, data
    warehouse.client.delete_dataset(f"{warehouse.project}.{name}", delete_contents=True, not_found_ok=True)


def _query(warehouse, sql):
    return [dict(r) for r in warehouse.client.query(sql).result()]


def test_user_segment_history(warehouse, views_dataset):
    name, data = views_dataset
    got = _query(warehouse, f"SELECT user_key, window_end, model_version, pane, is_final, segment_id, "
                            f"previous_segment_id, changed, event_count "
                            f"FROM `{warehouse.project}.{name}.user_segment_history`")
    expected = [
        {
            "user_key": r["user_key"],
            "window_end": _day(r["window_end_us"]),
            "model_version": r["model_version"],
            "pane": r["pane"],
            "is_final": r["is_final"],
            "segment_id": r["segment_id"],
            "previous_segment_id": r["previous"]["segment_id"] if r["previous"] else None,
            "changed": bool(r["previous"]) and r["previous"]["segment_id"] != r["segment_id"],
            "event_count": r["event_count"],
        }
        for r in _history(data)
    ]
    for g in got:
        g["window_end"] = g["window_end"].date()
    key = lambda r: (r["user_key"], r["model_version"], r["window_end"])  # noqa: E731
    assert sorted(got, key=key) == sorted(expected, key=key)


def _current(data):
    current = {}
    for r in _history(data):
        rank = (r["is_final"], r["window_end_us"], r["assigned_at"], r["window_start_us"], r["model_version"])
        if r["user_key"] not in current or rank > current[r["user_key"]][0]:
            current[r["user_key"]] = (rank, r)
    return {u: r for u, (_, r) in current.items()}


def test_current_segment(warehouse, views_dataset):
    name, data = views_dataset
    got = _query(warehouse, f"SELECT user_key, segment_id, model_version, pane, is_final "
                            f"FROM `{warehouse.project}.{name}.current_segment` ORDER BY user_key")
    expected = [
        {"user_key": u, "segment_id": r["segment_id"], "model_version": r["model_version"], "pane": r["pane"], "is_final": r["is_final"]}
        for u, r in sorted(_current(data).items())
    ]
    assert got == expected
    # Spelled out for the cases the data was built for:
    by_user = {r["user_key"]: r for r in got}
    assert by_user["u3"]["segment_id"] == 2 and by_user["u3"]["is_final"]  # early day-3 pane ignored
    assert by_user["u4"]["pane"] == "early" and not by_user["u4"]["is_final"]  # nothing final yet
    assert by_user["u5"]["model_version"] == "m-2"  # same window, later assignment


def test_segment_sizes_daily(warehouse, views_dataset):
    name, data = views_dataset
    got = _query(warehouse, f"SELECT day, model_version, segment_id, users, share "
                            f"FROM `{warehouse.project}.{name}.segment_sizes_daily`")
    last = {}
    for r in _history(data):
        key = (_day(r["window_end_us"]), r["model_version"], r["user_key"])
        rank = (r["is_final"], r["window_end_us"], r["assigned_at"], r["window_start_us"])
        if key not in last or rank > last[key][0]:
            last[key] = (rank, r)
    sizes = defaultdict(int)
    for (day, model, _user), (_, r) in last.items():
        sizes[(day, model, r["segment_id"])] += 1
    totals = defaultdict(int)
    for (day, model, _), n in sizes.items():
        totals[(day, model)] += n
    expected = {k: (n, n / totals[k[:2]]) for k, n in sizes.items()}
    assert {(g["day"], g["model_version"], g["segment_id"]): (g["users"], pytest.approx(g["share"])) for g in got} == expected


def test_segment_transitions(warehouse, views_dataset):
    name, data = views_dataset
    got = _query(warehouse, f"SELECT * FROM `{warehouse.project}.{name}.segment_transitions`")
    history = _history(data)
    spread = {}
    for model in {r["model_version"] for r in history}:
        for f in MODEL_FEATURES:
            values = [r["features"][f] for r in history if r["model_version"] == model and r["features"][f] is not None]
            spread[(model, f)] = statistics.pstdev(values)
    groups = defaultdict(list)
    for r in history:
        if r["previous"]:
            groups[(_day(r["window_end_us"]), r["model_version"], r["previous"]["segment_id"], r["segment_id"])].append(r)
    expected = {}
    for (day, model, frm, to), rs in groups.items():
        changes = []
        for f in MODEL_FEATURES:
            deltas = [r["features"][f] - r["previous"]["features"][f] for r in rs
                      if r["features"][f] is not None and r["previous"]["features"][f] is not None]
            if deltas and spread[(model, f)] > 0:
                mean = statistics.fmean(deltas)
                changes.append((f, mean, mean / spread[(model, f)]))
        changes.sort(key=lambda c: (-abs(c[2]), c[0]))
        expected[(day, model, frm, to)] = (len(rs), changes[:3])
    assert len(got) == len(expected)
    for g in got:
        n, top = expected[(g["day"], g["model_version"], g["from_segment_id"], g["to_segment_id"])]
        assert g["transitions"] == n
        assert [t["feature"] for t in g["top_changed_features"]] == [t[0] for t in top]
        assert [t["mean_change"] for t in g["top_changed_features"]] == pytest.approx([t[1] for t in top])
        assert [t["change_sd"] for t in g["top_changed_features"]] == pytest.approx([t[2] for t in top])
    # u2 went 1 -> 3 on day 2 (its late pane), u5 too: one group of two.
    assert expected[(dt.date(2024, 1, 3), "m-1", 1, 3)][0] == 2


def test_segment_profiles(warehouse, views_dataset):
    name, data = views_dataset
    got = _query(warehouse, f"SELECT segment_id, model_version, feature_index, feature, users, mean, median "
                            f"FROM `{warehouse.project}.{name}.segment_profiles`")
    members = defaultdict(list)
    for r in _current(data).values():
        members[(r["segment_id"], r["model_version"])].append(r)
    expected = {}
    for (seg, model), rs in members.items():
        for i, f in enumerate(MODEL_FEATURES):
            values = [r["features"][f] for r in rs if r["features"][f] is not None]
            expected[(seg, model, i, f)] = (len(rs), statistics.fmean(values) if values else None,
                                            statistics.median(values) if values else None)
    assert len(got) == len(expected)
    for g in got:
        users, mean, median = expected[(g["segment_id"], g["model_version"], g["feature_index"], g["feature"])]
        assert g["users"] == users
        assert g["mean"] == pytest.approx(mean)
        assert g["median"] == pytest.approx(median)
    assert any(n % 2 == 0 and n > 1 for n, _, _ in expected.values())  # an interpolated median is exercised


def test_run_view_prints_a_readable_table(warehouse, views_dataset):
    name, _ = views_dataset
    text = query.run_view(warehouse.client, name, "segment_sizes_daily", project=warehouse.project)
    lines = text.splitlines()
    assert re.split(r"\s+", lines[0]) == ["day", "model_version", "segment_id", "segment_name", "users", "share"]
    assert set(lines[1].replace(" ", "")) == {"-"}
    assert lines[-1] == f"({len(lines) - 3} rows)"
    with pytest.raises(ValueError):
        query.run_view(warehouse.client, name, "no_such_view")


def test_format_table():
    text = query.format_table(["name", "n"], [("a", 1), ("bbb", None), ("c", 2.5)])
    assert text.splitlines() == [
        "name     n",
        "----  ----",
        "a        1",
        "bbb   NULL",
        "c      2.5",
        "(3 rows)",
    ]
