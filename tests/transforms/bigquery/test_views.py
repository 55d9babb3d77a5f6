"""The analyst views, run on the local warehouse over hand-made assignments; plus the DDL files.

Expected rows are written out (segments, days, counts, shares) or, for feature statistics,
computed with plain Python (`statistics`) over the same assignments.
"""

from __future__ import annotations

import math
import random
import re
import statistics
from collections import defaultdict

import pytest

from devtools import query
from tests.support.assignments import (
    DAY_US, MODEL_A, MODEL_B, T0, assignment, calendar_day, closing, during, utc,
)
from transforms.bigquery import admin as bq_admin
from transforms.bigquery import rows as bq_rows
from transforms.bigquery import tables as bt
from transforms.bigquery.loads import load_rows
from transforms.contracts.feature_spec import MODEL_FEATURES

A, B = MODEL_A, MODEL_B
D0, D1, D2, D3 = (calendar_day(d) for d in range(4))  # 2024-01-01 .. 2024-01-04


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
    lines = text.splitlines()
    assert "  score_date DATE NOT NULL," in lines and "  is_final BOOL NOT NULL," in lines
    # A DATE column partitions as itself; a TIMESTAMP one by its DATE.
    assert "PARTITION BY score_date" in lines and "CLUSTER BY segment_id, user_key" in lines
    dead = bq_admin.render_ddl(bt.TABLES[bt.Table.DEAD_LETTERS]).splitlines()
    assert "PARTITION BY DATE(processing_time)" in dead


@pytest.mark.parametrize("name", bq_admin.VIEWS)
def test_view_templates_resolve_every_placeholder(name):
    sql = bq_admin.view_sql(name, "proj", "ds")
    assert "${" not in sql
    assert f"CREATE OR REPLACE VIEW `proj.ds.{name}`" in sql
    if "UNNEST(" in sql:  # the views that unpivot the features list every one of them
        for feature in MODEL_FEATURES:
            assert f"features.{feature}" in sql


# ----------------------------------------------------------------------------- data


def _random_features(rng: random.Random) -> dict:
    return {name: round(rng.uniform(0, 10) * (1 + 9 * (i % 3 == 0)), 2) for i, name in enumerate(MODEL_FEATURES)}


def _flat(**values: float) -> dict:
    """Model B's features: 1.0 (no spread: left out of the top changes) except `values`."""
    return {name: float(values.get(name, 1.0)) for name in MODEL_FEATURES}


NULL_FEATURE = MODEL_FEATURES[1]


def make_loads() -> list[list[dict]]:
    """Two loads of assignments (assigned_at = as_of + 1 hour).

    Days 0-3 are 2024-01-01..04. Per user and model the segments of the stored days:
    u1 1, 2, 2, 3 (day 3 only an event scoring so far); u2 1, 3, 1 (day 1: an event scoring
    in segment 2, then the closing one in 3); u3 (a prospect) 2, 2 on days 1-2; u4 3 on
    day 3 (an event); u5 1, 3, 2 under A and 6, 7 on days 1-2 under B; u6 3, 1 on days 1-2;
    u7 1 and u8 6 (B) on day 2. The second load re-sends u3's day 2 with an earlier scoring.
    """
    rng = random.Random(7)

    def a(user, as_of, segment, model=A, prospect=False, **feature_values):
        if model == B:
            values = _flat(**feature_values)
        else:
            values = dict(_random_features(rng), **feature_values)
        # Model A has moments (segment 1's users lapsing, the others as usual); model B none.
        moment = None if model == B else ("lapsing" if segment == 1 else "active_as_usual")
        return assignment(user, as_of, segment, model=model, prospect=prospect, feature_values=values,
                          moment=moment, moment_reason=moment and f"because {moment}")

    first = [
        a("u1", during(0, 10), 1), a("u1", closing(0), 1), a("u1", closing(1), 2), a("u1", closing(2), 2),
        a("u1", during(3, 9), 3, spend_total=10.0, **{NULL_FEATURE: None}),
        a("u2", closing(0), 1), a("u2", during(1, 8), 2), a("u2", closing(1), 3),
        a("u2", closing(2), 1, spend_total=5.0),
        a("u3", closing(1), 2, prospect=True), a("u3", closing(2), 2, prospect=True),
        a("u4", during(3, 15), 3, spend_total=25.0),
        a("u5", closing(0), 1), a("u5", closing(1), 3), a("u5", closing(2), 2),
        a("u5", closing(1), 6, B, spend_total=10, orders=1, recency_days=3, tenure_days=10),
        a("u5", closing(2), 7, B, spend_total=30, orders=2, recency_days=1, tenure_days=11),
        a("u6", closing(1), 3), a("u6", closing(2), 1, spend_total=40.0),
        a("u7", closing(2), 1, spend_total=9.0),
        a("u8", closing(2), 6, B, spend_total=20, orders=1, recency_days=4, tenure_days=100),
    ]
    second = [a("u3", during(2, 12), 1, prospect=True)]  # earlier than the stored closing(2): ignored
    return [first, second]


def _stored(loads) -> dict:
    """Plain Python: per (user, UTC day of as_of - 1 us, model), the assignment with the latest as_of."""
    best = {}
    for batch in loads:
        for a in batch:
            key = (a["user_key"], calendar_day((a["as_of_us"] - 1 - T0) // DAY_US), a["model_version"])
            if key not in best or a["as_of_us"] > best[key]["as_of_us"]:
                best[key] = a
    return best


# (user, model, score_date, as_of, is_final, scoring, segment_id, previous_segment_id, changed)
HISTORY = [
    ("u1", A, D0, closing(0), True, "daily", 1, None, False),
    ("u1", A, D1, closing(1), True, "daily", 2, 1, True),
    ("u1", A, D2, closing(2), True, "daily", 2, 2, False),
    ("u1", A, D3, during(3, 9), False, "event", 3, 2, True),
    ("u2", A, D0, closing(0), True, "daily", 1, None, False),
    ("u2", A, D1, closing(1), True, "daily", 3, 1, True),
    ("u2", A, D2, closing(2), True, "daily", 1, 3, True),
    ("u3", A, D1, closing(1), True, "daily", 2, None, False),
    ("u3", A, D2, closing(2), True, "daily", 2, 2, False),
    ("u4", A, D3, during(3, 15), False, "event", 3, None, False),
    ("u5", A, D0, closing(0), True, "daily", 1, None, False),
    ("u5", A, D1, closing(1), True, "daily", 3, 1, True),
    ("u5", A, D2, closing(2), True, "daily", 2, 3, True),
    ("u5", B, D1, closing(1), True, "daily", 6, None, False),
    ("u5", B, D2, closing(2), True, "daily", 7, 6, True),
    ("u6", A, D1, closing(1), True, "daily", 3, None, False),
    ("u6", A, D2, closing(2), True, "daily", 1, 3, True),
    ("u7", A, D2, closing(2), True, "daily", 1, None, False),
    ("u8", B, D2, closing(2), True, "daily", 6, None, False),
]


@pytest.fixture(scope="module")
def views_dataset(warehouse):
    name = "test_views"
    loads = make_loads()
    bq_admin.setup(warehouse.client, name)
    spec = bt.TABLES[bt.Table.SEGMENT_ASSIGNMENTS]
    for batch in loads:
        rows = [bq_rows.assignment_row(a, a["as_of_us"] + 3_600_000_000) for a in batch]
        load_rows(warehouse.client, spec, f"{warehouse.project}.{name}.segment_assignments", rows)
    yield name, _stored(loads)
    warehouse.client.delete_dataset(f"{warehouse.project}.{name}", delete_contents=True, not_found_ok=True)


def _query(warehouse, sql):
    return [dict(r) for r in warehouse.client.query(sql).result()]


# ----------------------------------------------------------------------------- views


def test_the_expected_history_is_the_latest_scoring_per_user_day_and_model():
    # The written-out HISTORY and the plain-Python selection the feature statistics use agree.
    stored = _stored(make_loads())
    assert {(u, d, m): (t, seg) for u, m, d, t, _, _, seg, _, _ in HISTORY} == {
        key: (a["as_of_us"], a["segment_id"]) for key, a in stored.items()}


def test_user_segment_history(warehouse, views_dataset):
    name, _ = views_dataset
    got = _query(warehouse, f"SELECT user_key, model_version, score_date, as_of, is_final, scoring, segment_id, "
                            f"previous_segment_id, changed, previous_segment_name, p_alive "
                            f"FROM `{warehouse.project}.{name}.user_segment_history` "
                            f"ORDER BY user_key, model_version, score_date")
    assert [(g["user_key"], g["model_version"], g["score_date"], g["as_of"], g["is_final"], g["scoring"],
             g["segment_id"], g["previous_segment_id"], g["changed"]) for g in got] == [
        (u, m, d, utc(t), final, scoring, seg, prev, changed)
        for u, m, d, t, final, scoring, seg, prev, changed in HISTORY]
    by_key = {(g["user_key"], g["model_version"], g["score_date"]): g for g in got}
    assert by_key[("u2", A, D2)]["previous_segment_name"] == "segment-3"
    assert by_key[("u3", A, D2)]["p_alive"] is None  # a prospect: no BG/NBD scores
    assert by_key[("u1", A, D2)]["p_alive"] == 0.75


def test_current_segment(warehouse, views_dataset):
    name, _ = views_dataset
    got = _query(warehouse, f"SELECT user_key, model_version, score_date, as_of, is_final, segment_id "
                            f"FROM `{warehouse.project}.{name}.current_segment` ORDER BY user_key")
    assert [tuple(g.values()) for g in got] == [
        ("u1", A, D3, utc(during(3, 9)), False, 3),  # the latest as_of: today's event, not yesterday's final row
        ("u2", A, D2, utc(closing(2)), True, 1),
        ("u3", A, D2, utc(closing(2)), True, 2),  # the earlier scoring loaded afterwards did not replace it
        ("u4", A, D3, utc(during(3, 15)), False, 3),
        ("u5", B, D2, utc(closing(2)), True, 7),  # A and B scored the same time: the later model version
        ("u6", A, D2, utc(closing(2)), True, 1),
        ("u7", A, D2, utc(closing(2)), True, 1),
        ("u8", B, D2, utc(closing(2)), True, 6),
    ]


def test_segment_sizes_daily(warehouse, views_dataset):
    name, _ = views_dataset
    got = _query(warehouse, f"SELECT day, model_version, segment_id, segment_name, users, share "
                            f"FROM `{warehouse.project}.{name}.segment_sizes_daily`")
    assert {(g["day"], g["model_version"], g["segment_id"]): (g["users"], pytest.approx(g["share"])) for g in got} == {
        (D0, A, 1): (3, 1.0),  # u1 (its event and closing scorings: one row), u2, u5
        (D1, A, 2): (2, 0.4),  # u1, u3
        (D1, A, 3): (3, 0.6),  # u2 (closing: 3, not its earlier event's 2), u5, u6
        (D1, B, 6): (1, 1.0),
        (D2, A, 1): (3, 0.5),  # u2, u6, u7
        (D2, A, 2): (3, 0.5),  # u1, u3, u5
        (D2, B, 6): (1, 0.5),
        (D2, B, 7): (1, 0.5),
        (D3, A, 3): (2, 1.0),  # u1, u4
    }
    shares = defaultdict(float)
    for g in got:
        assert g["segment_name"] == f"segment-{g['segment_id']}"
        shares[(g["day"], g["model_version"])] += g["share"]
    assert all(math.isclose(total, 1.0) for total in shares.values())


def test_moment_sizes_daily(warehouse, views_dataset):
    name, _ = views_dataset
    got = _query(warehouse, f"SELECT day, model_version, moment, users, share "
                            f"FROM `{warehouse.project}.{name}.moment_sizes_daily`")
    # From HISTORY: model A's users in segment 1 are lapsing, the others active as usual; model B
    # has no moments, so no row.
    assert {(g["day"], g["model_version"], g["moment"]): (g["users"], pytest.approx(g["share"])) for g in got} == {
        (D0, A, "lapsing"): (3, 1.0),  # u1, u2, u5
        (D1, A, "active_as_usual"): (5, 1.0),  # u1, u2, u3, u5, u6
        (D2, A, "lapsing"): (3, 0.5),  # u2, u6, u7
        (D2, A, "active_as_usual"): (3, 0.5),  # u1, u3, u5
        (D3, A, "active_as_usual"): (2, 1.0),  # u1, u4
    }
    history = _query(warehouse, f"SELECT user_key, score_date, moment, moment_reason, previous_moment "
                                f"FROM `{warehouse.project}.{name}.user_segment_history` "
                                f"WHERE model_version = '{A}' AND user_key = 'u2' ORDER BY score_date")
    assert [(h["moment"], h["previous_moment"]) for h in history] == [
        ("lapsing", None), ("active_as_usual", "lapsing"), ("lapsing", "active_as_usual")]
    assert history[0]["moment_reason"] == "because lapsing"


def _expected_top_changes(stored, pairs, model):
    """Plain Python: the top 3 features by |mean change / population sd over the model's stored rows|."""
    spread = {}
    for f in MODEL_FEATURES:
        values = [a["features"][f] for (_, _, m), a in stored.items() if m == model and a["features"][f] is not None]
        spread[f] = statistics.pstdev(values)
    changes = []
    for f in MODEL_FEATURES:
        deltas = [later["features"][f] - earlier["features"][f] for earlier, later in pairs
                  if later["features"][f] is not None and earlier["features"][f] is not None]
        if deltas and spread[f] > 0:
            mean = statistics.fmean(deltas)
            changes.append((f, mean, mean / spread[f]))
    changes.sort(key=lambda c: (-abs(c[2]), c[0]))
    return changes[:3]


def test_segment_transitions(warehouse, views_dataset):
    name, stored = views_dataset
    got = _query(warehouse, f"SELECT * FROM `{warehouse.project}.{name}.segment_transitions`")
    by_group = {(g["day"], g["model_version"], g["from_segment_id"], g["to_segment_id"]): g for g in got}
    # Consecutive days per user and model; staying counts as from = to.
    users = {
        (D1, A, 1, 2): ["u1"],
        (D1, A, 1, 3): ["u2", "u5"],
        (D2, A, 2, 2): ["u1", "u3"],
        (D2, A, 3, 1): ["u2", "u6"],
        (D2, A, 3, 2): ["u5"],
        (D2, B, 6, 7): ["u5"],
        (D3, A, 2, 3): ["u1"],
    }
    assert {k: g["transitions"] for k, g in by_group.items()} == {k: len(v) for k, v in users.items()}
    assert len(got) == len(by_group)
    assert by_group[(D2, A, 3, 1)]["from_segment_name"] == "segment-3"
    assert by_group[(D2, A, 3, 1)]["to_segment_name"] == "segment-1"

    # Model B, by hand: spend_total 10 -> 30 (B's rows: 10, 30, 20; sd sqrt(200/3)), orders 1 -> 2
    # (1, 2, 1; sd sqrt(2/9)), recency_days 3 -> 1 (3, 1, 4; sd sqrt(14/9)); tenure_days 10 -> 11
    # (10, 11, 100) ranks fourth; every other feature is 1.0 everywhere (no spread: left out).
    top = by_group[(D2, B, 6, 7)]["top_changed_features"]
    assert [t["feature"] for t in top] == ["spend_total", "orders", "recency_days"]
    assert [t["mean_change"] for t in top] == pytest.approx([20.0, 1.0, -2.0])
    assert [t["change_sd"] for t in top] == pytest.approx([math.sqrt(6), 3 / math.sqrt(2), -6 / math.sqrt(14)])

    # Model A, computed over the stored assignments.
    for (day, model, frm, to), members in users.items():
        previous = calendar_day((day - D0).days - 1)
        pairs = [(stored[(u, previous, model)], stored[(u, day, model)]) for u in members]
        assert [stored[(u, previous, model)]["segment_id"] for u in members] == [frm] * len(members)
        expected = _expected_top_changes(stored, pairs, model)
        top = by_group[(day, model, frm, to)]["top_changed_features"]
        assert [t["feature"] for t in top] == [e[0] for e in expected]
        assert [t["mean_change"] for t in top] == pytest.approx([e[1] for e in expected])
        assert [t["change_sd"] for t in top] == pytest.approx([e[2] for e in expected])


def test_segment_profiles(warehouse, views_dataset):
    name, stored = views_dataset
    got = _query(warehouse, f"SELECT segment_id, model_version, feature_index, feature, users, mean, median "
                            f"FROM `{warehouse.project}.{name}.segment_profiles`")
    by_key = {(g["model_version"], g["segment_id"], g["feature"]): g for g in got}
    # Members: each user's current row (see test_current_segment).
    members = {(A, 1): [("u2", D2), ("u6", D2), ("u7", D2)], (A, 2): [("u3", D2)], (A, 3): [("u1", D3), ("u4", D3)],
               (B, 6): [("u8", D2)], (B, 7): [("u5", D2)]}
    assert len(got) == len(members) * len(MODEL_FEATURES)
    # Written out: spend_total of (A, 1) is 5, 40, 9; of (A, 3) 10, 25 (an interpolated median).
    assert (by_key[(A, 1, "spend_total")]["users"], by_key[(A, 1, "spend_total")]["mean"],
            by_key[(A, 1, "spend_total")]["median"]) == (3, pytest.approx(18.0), pytest.approx(9.0))
    assert (by_key[(A, 3, "spend_total")]["mean"], by_key[(A, 3, "spend_total")]["median"]) == (
        pytest.approx(17.5), pytest.approx(17.5))
    assert (by_key[(B, 7, "spend_total")]["mean"], by_key[(B, 7, "orders")]["median"]) == (30.0, 2.0)
    # A NULL value is left out of mean and median; the user still counts.
    only_u4 = stored[("u4", D3, A)]["features"][NULL_FEATURE]
    assert (by_key[(A, 3, NULL_FEATURE)]["users"], by_key[(A, 3, NULL_FEATURE)]["mean"],
            by_key[(A, 3, NULL_FEATURE)]["median"]) == (2, pytest.approx(only_u4), pytest.approx(only_u4))
    for (model, segment), users in members.items():
        rows = [stored[(u, d, model)] for u, d in users]
        for i, f in enumerate(MODEL_FEATURES):
            g = by_key[(model, segment, f)]
            values = [r["features"][f] for r in rows if r["features"][f] is not None]
            assert (g["feature_index"], g["users"]) == (i, len(users))
            assert g["mean"] == pytest.approx(statistics.fmean(values))
            assert g["median"] == pytest.approx(statistics.median(values))


@pytest.mark.parametrize("view", bq_admin.VIEWS)
def test_run_view_prints_a_readable_table(warehouse, views_dataset, view):
    name, _ = views_dataset
    text = query.run_view(warehouse.client, name, view, project=warehouse.project)
    lines = text.splitlines()
    columns = [f.name for f in warehouse.client.query(
        f"SELECT * FROM `{warehouse.project}.{name}.{view}` LIMIT 0").result().schema]
    assert re.split(r"\s+", lines[0]) == columns
    assert set(lines[1].replace(" ", "")) == {"-"}
    (count,) = _query(warehouse, f"SELECT COUNT(*) AS n FROM `{warehouse.project}.{name}.{view}`")
    assert lines[-1] == f"({count['n']} rows)" == f"({len(lines) - 3} rows)"


def test_run_view_refuses_an_unknown_view(warehouse):
    with pytest.raises(ValueError):
        query.run_view(warehouse.client, "test_views", "no_such_view")


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
