"""`segments shadow` and `segments report` on a demo-like warehouse, the report checked in headless Chromium.

One batch run of generated events (with history and corrupt records) fills a dataset; a
model retrained on the same events is the candidate. Every number the report shows is
compared with what this test computes itself from the tables' raw rows (and from the model
card, for what the card says), never through `devtools.report`.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import math
import re
import shutil
import uuid

import joblib
import numpy as np
import pytest

from devtools import generate
from devtools.report import ReportError, write_report
from devtools.shadow import run_shadow
from models import DEFAULT_MODEL_DIR
from models.artifact import load_artifact, load_card
from pipelines import batch, train
from tests.support.expected import END
from tests.support.psi import counts_by_comparison, psi_of_shares
from transforms.contracts.feature_spec import MODEL_FEATURES

HISTORY_DAYS = 5


@pytest.fixture(scope="module")
def demo(tmp_path_factory, warehouse):
    """A dataset filled like `segments demo` does, the report's inputs, and a candidate model."""
    work = tmp_path_factory.mktemp("report")
    events = work / "events.jsonl"
    generate.generate_events(str(events), users=150, days=14, end=END, seed=7, fmt="jsonl", corrupt_rate=0.01)
    dataset = f"t_{uuid.uuid4().hex[:10]}"
    summary = batch.run(["--input", str(events), "--demo_key", "--run_id", "report-run", "--history_days",
                         str(HISTORY_DAYS), "--bq_endpoint", warehouse.endpoint, "--bq_project", warehouse.project,
                         "--bq_dataset", dataset])
    summary.check()
    # The candidate: a model retrained on these events (up to a week before their end).
    train.run(["--input", str(events), "--out", str(work / "candidate"), "--demo_key", "--until",
               str(END - dt.timedelta(days=7)), "--k_min", "3", "--k_max", "5", "--baseline_days", "0"],
              say=lambda line: None)
    yield {"dataset": dataset, "work": work, "candidate": str(work / "candidate")}
    warehouse.client.delete_dataset(f"{warehouse.project}.{dataset}", delete_contents=True, not_found_ok=True)


def rows_of(warehouse, dataset, sql):
    return [dict(r.items()) for r in warehouse.client.query(sql.format(t=f"{warehouse.project}.{dataset}")).result()]


def direct_segments(model_dir: str, X: np.ndarray) -> np.ndarray:
    """The model file's own model, its labels mapped to segment ids by the card."""
    card = json.load(open(f"{model_dir}/model_card.json"))
    ids = {int(s["cluster_index"]): int(s["segment_id"]) for s in card["segments"]}
    return np.array([ids[int(label)] for label in joblib.load(f"{model_dir}/model.joblib").predict(X)])


@pytest.fixture(scope="module")
def shadowed(demo, warehouse):
    current, candidate = load_artifact(DEFAULT_MODEL_DIR), load_artifact(demo["candidate"])
    lines = []
    summary = run_shadow(warehouse.client, warehouse.project, demo["dataset"], current, candidate, page_size=100,
                         say=lines.append)
    return summary, lines


def test_shadow_reports_the_share_a_direct_comparison_of_the_two_models_gives(demo, warehouse, shadowed):
    summary, lines = shadowed
    latest = rows_of(warehouse, demo["dataset"], "SELECT MAX(score_date) AS d FROM `{t}.segment_assignments`")[0]["d"]
    rows = rows_of(warehouse, demo["dataset"], "SELECT user_key, features FROM `{t}.segment_assignments` "
                   f"WHERE score_date = '{latest}' ORDER BY user_key")
    X = np.array([[r["features"][name] for name in MODEL_FEATURES] for r in rows])
    now, then = direct_segments(DEFAULT_MODEL_DIR, X), direct_segments(demo["candidate"], X)
    moved = now != then
    assert 0 < moved.sum() < len(rows)  # a retrained model moves some users, not all
    assert (summary.users, summary.moved) == (len(rows), int(moved.sum()))
    assert summary.share == pytest.approx(moved.mean())
    assert summary.disagreements == 0 and summary.score_date == latest
    assert len(lines) == math.ceil(len(rows) / 100)  # progress, a page at a time
    # The table holds every user once; the moved ones, from -> to, as the direct comparison says.
    stored = rows_of(warehouse, demo["dataset"], "SELECT * FROM `{t}.shadow_moves` ORDER BY user_key")
    assert [r["user_key"] for r in stored] == [r["user_key"] for r in rows]
    assert [(r["current_segment_id"], r["candidate_segment_id"], r["moved"]) for r in stored] == [
        (int(a), int(b), bool(a != b)) for a, b in zip(now, then)]
    assert all((len(r["drivers"]) == 3) == r["moved"] for r in stored)
    assert {r["shadow_id"] for r in stored} == {summary.shadow_id}
    # Nothing was assigned.
    versions = rows_of(warehouse, demo["dataset"], "SELECT DISTINCT model_version FROM `{t}.segment_assignments`")
    assert versions == [{"model_version": load_card(DEFAULT_MODEL_DIR)["model_version"]}]


def test_shadow_drivers_pull_towards_the_candidates_segment(demo, warehouse, shadowed):
    """A driver's contribution, recomputed in the candidate's standardised space with its metric:
    the user's features, the current segment's centroid (current card) and the candidate
    segment's centre mapped through the candidate's fitted steps and whitening matrix."""
    candidate = joblib.load(f"{demo['candidate']}/model.joblib")
    current_card, candidate_card = load_card(DEFAULT_MODEL_DIR), load_card(demo["candidate"])
    (row,) = rows_of(warehouse, demo["dataset"], "SELECT * FROM `{t}.shadow_moves` WHERE moved "
                     "ORDER BY user_key LIMIT 1")
    features = rows_of(warehouse, demo["dataset"], "SELECT features FROM `{t}.segment_assignments` "
                       f"WHERE user_key = '{row['user_key']}' AND score_date = '{row['score_date']}'")[0]["features"]
    x = np.array([[features[name] for name in MODEL_FEATURES]])
    now = next(s for s in current_card["segments"] if s["segment_id"] == row["current_segment_id"])
    then = next(s for s in candidate_card["segments"] if s["segment_id"] == row["candidate_segment_id"])
    steps, T = candidate.representation[:-1], candidate.representation[-1].matrix
    z = steps.transform(x)[0]
    a = steps.transform(np.array([[now["centroid"][name] for name in MODEL_FEATURES]]))[0]
    b = candidate.centers[list(candidate.labels).index(then["cluster_index"])] @ np.linalg.pinv(T)
    M = T @ T.T
    expected = dict(zip(candidate.features, (z - a) * ((z - a) @ M) - (z - b) * ((z - b) @ M)))
    for driver in row["drivers"]:
        assert driver["value"] == pytest.approx(features[driver["feature"]])
        assert driver["current_centroid"] == pytest.approx(now["centroid"][driver["feature"]])
        assert driver["candidate_centroid"] == pytest.approx(then["centroid"][driver["feature"]])
        assert driver["contribution"] == pytest.approx(expected[driver["feature"]], rel=1e-6, abs=1e-9)
    assert [d["feature"] for d in row["drivers"]] == sorted(expected, key=lambda f: -expected[f])[:3]
    assert row["drivers"][0]["contribution"] > 0


# ----------------------------------------------------------------------------- what the page must show


def expected_numbers(warehouse, dataset: str, card: dict) -> dict[str, object]:
    """Every number the report may show, by its data-key, computed from the raw rows and the card."""
    mv = card["model_version"]
    rows = rows_of(warehouse, dataset, "SELECT user_key, score_date, segment_id, p_alive, expected_purchases_30d, "
                   f"rfm, features FROM `{{t}}.segment_assignments` WHERE model_version = '{mv}'")
    out: dict[str, object] = {}
    days = sorted({r["score_date"] for r in rows})
    latest, previous, first = days[-1], days[-2], days[0]
    size = collections.Counter((r["score_date"], r["segment_id"]) for r in rows)
    total = sum(n for (d, _), n in size.items() if d == latest)
    out["sizes.total"] = total
    for s in card["segments"]:
        sid = s["segment_id"]
        out[f"sizes.users.{sid}"] = size[(latest, sid)]
        out[f"sizes.share.{sid}"] = size[(latest, sid)] / total
        out[f"sizes.change_day.{sid}"] = size[(latest, sid)] - size[(previous, sid)]
        out[f"sizes.change_range.{sid}"] = size[(latest, sid)] - size[(first, sid)]
    # Profiles: the latest day's rows; the card's centroids against its training distribution.
    dist = card["distribution"]["features"]
    for s in card["segments"]:
        sid = s["segment_id"]
        members = [r for r in rows if r["score_date"] == latest and r["segment_id"] == sid]
        customers = [r for r in members if r["p_alive"] is not None]
        out[f"profile.users.{sid}"] = len(members)
        out[f"profile.customers.{sid}"] = len(customers)
        out[f"profile.p_alive.{sid}"] = np.mean([r["p_alive"] for r in customers]) if customers else None
        out[f"profile.expected_purchases.{sid}"] = (np.mean([r["expected_purchases_30d"] for r in customers])
                                                    if customers else None)
        out[f"profile.spend.{sid}"] = np.mean([r["features"]["spend_total"] for r in members]) if members else None
        for name, n in collections.Counter(r["rfm"]["rfm_segment"] for r in members).items():
            out[f"profile.rfm.{sid}.{name}"] = n / len(members)
        for name in MODEL_FEATURES:
            if dist[name]["sd"] > 0:
                out[f"profile.z.{sid}.{name}"] = (s["centroid"][name] - dist[name]["mean"]) / dist[name]["sd"]
                out[f"profile.centroid.{sid}.{name}"] = s["centroid"][name]
                out[f"profile.population.{sid}.{name}"] = dist[name]["mean"]
        # A card that lists a segment's distinguishing features (the model's own standardised
        # differences, and values in the feature's units): the report shows those.
        for d in s.get("distinguishing_features") or []:
            out[f"profile.z.{sid}.{d['feature']}"] = d["z"]
            out[f"profile.centroid.{sid}.{d['feature']}"] = d["value"]
            out[f"profile.population.{sid}.{d['feature']}"] = d["population_value"]
    # Movements: consecutive scored days of a user.
    by_user = collections.defaultdict(list)
    for r in rows:
        by_user[r["user_key"]].append(r)
    pairs, per_day = collections.Counter(), collections.defaultdict(lambda: [0, 0])
    for history in by_user.values():
        history.sort(key=lambda r: r["score_date"])
        for before, after in zip(history, history[1:]):
            per_day[after["score_date"]][0] += 1
            if before["segment_id"] != after["segment_id"]:
                per_day[after["score_date"]][1] += 1
                pairs[(before["segment_id"], after["segment_id"])] += 1
    out["moves.total"] = sum(pairs.values())
    for (a, b), n in pairs.items():
        out[f"moves.users.{a}.{b}"] = n
    # The reasons: the drivers the jobs wrote to segment_changes for these changes (kind "segment").
    drivers = collections.defaultdict(list)
    for change in rows_of(warehouse, dataset, "SELECT * FROM `{t}.segment_changes` WHERE "
                          f"model_version = '{mv}' AND kind = 'segment'"):
        for d in change["drivers"]:
            drivers[(change["from_segment_id"], change["to_segment_id"], d["feature"])].append(d["contribution"])
    for (a, b, name), pulls in drivers.items():
        out[f"moves.reason.{a}.{b}.{name}"] = len(pulls)
        out[f"moves.reason_value.{a}.{b}.{name}"] = float(np.mean(pulls))
    for day, (users, moved) in per_day.items():
        out[f"movement.users.{day}"] = users
        out[f"movement.moved.{day}"] = moved
        out[f"movement.share.{day}"] = moved / users
    out["movement.baseline"] = card["distribution"]["daily_moves"]["share"]
    # Drift of the latest day, by hand.
    current = [r["features"] for r in rows if r["score_date"] == latest]
    out["drift.rows"] = len(current)
    psi = {name: psi_of_shares(dist[name]["proportions"],
                               counts_by_comparison([f[name] for f in current], dist[name]["edges"]))
           for name in MODEL_FEATURES}
    for name, value in psi.items():
        out[f"drift.psi.{name}"] = value
    out["drift.max_psi"] = max(psi.values())
    # Data health: run_audit and dead_letters.
    for run in rows_of(warehouse, dataset, "SELECT * FROM `{t}.run_audit`"):
        rid = run["run_id"]
        out.update({f"health.run.{rid}.read": run["read"], f"health.run.{rid}.valid": run["valid"],
                    f"health.run.{rid}.duplicates": run["duplicates"],
                    f"health.run.{rid}.dead_lettered": sum(d["count"] for d in run["dead_lettered"]),
                    f"health.run.{rid}.filtered": sum(f["count"] for f in run["filtered"])})
        if run["drift_max_psi"] is not None:
            out[f"drift.history.{rid}"] = run["drift_max_psi"]
            out[f"drift.history_rows.{rid}"] = run["drift_rows"]
    dead = collections.Counter((d["error_code"], d["stage"]) for d in
                               rows_of(warehouse, dataset, "SELECT error_code, stage FROM `{t}.dead_letters`"))
    out["health.dead_total"] = sum(dead.values())
    for (code, stage), n in dead.items():
        out[f"health.dead.{code}.{stage}"] = n
    # Moments: a day of a moment is marked when its share reaches twice (or falls to half) the mean of
    # its shares on the (at least 3) scored days of the 7 before, by 3 users or more.
    moment_rows = rows_of(warehouse, dataset, "SELECT score_date, moment FROM `{t}.segment_assignments` "
                          f"WHERE model_version = '{mv}'")
    per_day = collections.Counter(r["score_date"] for r in moment_rows)
    per_moment = collections.Counter((r["score_date"], r["moment"]) for r in moment_rows)
    for moment in {r["moment"] for r in moment_rows}:
        for day in days:
            before = [per_moment[(d, moment)] / per_day[d] for d in days if day - dt.timedelta(days=7) <= d < day]
            if len(before) < 3:
                continue
            baseline, n = sum(before) / len(before), per_moment[(day, moment)]
            share, expected_users = n / per_day[day], sum(before) / len(before) * per_day[day]
            if (share >= 2 * baseline and n - expected_users >= 3) or (share <= baseline / 2
                                                                        and expected_users - n >= 3):
                key = f"{day.isoformat()}.{moment}"
                out.update({f"moments.mark_users.{key}": n, f"moments.mark_share.{key}": share,
                            f"moments.mark_baseline.{key}": baseline})
    # The shadow comparison.
    shadow = rows_of(warehouse, dataset, "SELECT * FROM `{t}.shadow_moves`")
    if shadow:
        moved = [s for s in shadow if s["moved"]]
        out.update({"shadow.users": len(shadow), "shadow.moved": len(moved), "shadow.share": len(moved) / len(shadow)})
        for (a, b), n in collections.Counter((s["current_segment_id"], s["candidate_segment_id"]) for s in moved).items():
            out[f"shadow.move.{a}.{b}"] = n
        drivers = collections.defaultdict(list)
        for s in moved:
            for d in s["drivers"]:
                drivers[(s["current_segment_id"], s["candidate_segment_id"], d["feature"])].append(d["value"])
        for (a, b, name), values in drivers.items():
            out[f"shadow.driver.{a}.{b}.{name}"] = len(values)
            out[f"shadow.driver_value.{a}.{b}.{name}"] = float(np.mean(values))
    return out


def _matches(key: str, shown: object, expected: object) -> bool:
    if expected is None:
        return shown is None
    if isinstance(expected, (int, np.integer)) and not isinstance(expected, bool):
        return shown == int(expected)
    return shown == pytest.approx(float(expected), rel=1e-9, abs=1e-12)


def _parsed(text: str, fmt: str) -> float | None:
    if text == "–":
        return None
    number = float(re.sub(r"[,%+]", "", text))
    return number / 100 if fmt == "pct" else number


def _close_to_shown(text: str, value: float | None, fmt: str) -> bool:
    """The text is the value rounded for display (its last digit is at most half a unit off)."""
    parsed = _parsed(text, fmt)
    if value is None or parsed is None:
        return value is None and parsed is None
    decimals = {"int": 0, "signed": 0, "pct": 3, "dec2": 2, "dec3": 3, "z": 2}.get(fmt)
    if decimals is not None:
        return abs(parsed - value) <= 0.5 * 10 ** -decimals + 1e-12
    if abs(value) < 0.0005:  # "num": three significant digits, 0 when tiny
        return parsed == 0
    return abs(parsed - value) <= 0.005 * abs(value) + 0.5 * (abs(value) >= 999.5)


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no Chromium on this machine: install Debian's chromium (apt-get install chromium); .ci/run does")


@pytest.mark.integration
def test_the_report_renders_in_chromium_with_every_chart_and_the_warehouses_numbers(demo, warehouse, shadowed):
    from playwright.sync_api import sync_playwright

    browser_path = chromium()
    out = demo["work"] / "report.html"
    data = write_report(warehouse.client, warehouse.project, demo["dataset"], DEFAULT_MODEL_DIR, str(out))
    card = load_card(DEFAULT_MODEL_DIR)
    expected = expected_numbers(warehouse, demo["dataset"], card)

    errors, requests = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=browser_path, args=["--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.route("**/*", lambda route: (requests.append(route.request.url), route.continue_())[1]
                       if route.request.url.startswith("file:") else (requests.append(route.request.url),
                                                                      route.abort())[1])
            page.goto(out.as_uri(), wait_until="load")
            drawn = page.evaluate("""() => [...document.querySelectorAll('svg.chart')].map(s => {
                const box = s.getBoundingClientRect();
                return {name: s.dataset.chart, width: box.width, height: box.height,
                        marks: s.querySelectorAll('path, rect, use').length};
            })""")
            shown = page.evaluate("""() => [...document.querySelectorAll('[data-key]')].map(e =>
                ({key: e.dataset.key, value: e.dataset.value, format: e.dataset.format, text: e.textContent}))""")
            embedded = json.loads(page.evaluate("() => document.getElementById('report-data').textContent"))
        finally:
            browser.close()

    assert errors == []
    assert [u for u in requests if not u.startswith("file:")] == []  # nothing fetched from the network
    assert {c["name"] for c in drawn} == {"sizes", "features", "rfm", "moves", "movement", "runs", "dead_letters",
                                          "psi", "psi_history", "shadow", "moments", "moment_cross"}
    assert all(c["width"] > 100 and c["height"] > 50 and c["marks"] > 5 for c in drawn), drawn
    assert embedded == json.loads(json.dumps(data, default=str))

    keys = [s["key"] for s in shown]
    assert len(keys) == len(set(keys))
    unknown = sorted(k for k in keys if k not in expected)
    assert unknown == []
    for family in ("sizes.", "profile.", "moves.", "movement.", "health.", "drift.", "shadow."):
        assert any(k.startswith(family) for k in keys), family
    wrong = []
    for s in shown:
        value = None if s["value"] == "" else (int(s["value"]) if re.fullmatch(r"-?\d+", s["value"])
                                               else float(s["value"]))
        if not _matches(s["key"], value, expected[s["key"]]) or not _close_to_shown(s["text"], value, s["format"]):
            wrong.append((s["key"], s["text"], s["value"], expected[s["key"]]))
    assert wrong == []
    # Every segment's latest size, every PSI and every run are on the page.
    assert {k for k in expected if k.startswith(("sizes.users.", "drift.psi.", "health.run."))} <= set(keys)


def test_a_model_with_no_rows_is_one_clear_error(demo, warehouse, tmp_path):
    with pytest.raises(ReportError, match="has no row of model .* pass --model"):
        write_report(warehouse.client, warehouse.project, demo["dataset"], demo["candidate"], str(tmp_path / "r.html"))
