"""Hold-out evaluation: on a population simulated here from known BG/NBD parameters, the
report's counts are the simulation's, P(alive) ranks survivors above the dropped-out, and
the expected repeat purchases with the true parameters match the simulated ones."""

from __future__ import annotations

import numpy as np
import pytest

from models.bgnbd import BgNbdParams
from models.evaluation import HoldoutActivity, evaluate_holdout, format_holdout
from tests.support.bgnbd_reference import p_alive_direct

DAY_US = 86_400_000_000
TRUE = BgNbdParams(0.6, 12.0, 0.8, 2.5)
CALIBRATION_DAYS, HOLDOUT_DAYS = 365.0, 90.0
VISIT_SHARE = 0.95


def simulate(n: int, seed: int):
    """Customers acquired over the year (first purchase at a uniform time), then BG/NBD:
    Poisson(lambda) purchases while alive, dropout with probability p after each repeat one.
    A customer alive at some point of the hold-out visits (is active) with probability
    `VISIT_SHARE`, whether or not they buy.

    Returns calibration records as of the calibration end, and hold-out activity.
    """
    rng = np.random.default_rng(seed)
    lam = rng.gamma(TRUE.r, 1.0 / TRUE.alpha, n)
    p = rng.beta(TRUE.a, TRUE.b, n)
    first = rng.uniform(0.0, CALIBRATION_DAYS - 1.0, n)
    end = CALIBRATION_DAYS + HOLDOUT_DAYS
    records, holdout = [], {}
    for i in range(n):
        times, t, alive = [first[i]], first[i], True
        while alive:
            t += rng.exponential(1.0 / lam[i])
            if t > end:
                break
            times.append(t)
            alive = rng.random() >= p[i]
        calibration = [x for x in times if x < CALIBRATION_DAYS]
        later = [x for x in times if x >= CALIBRATION_DAYS]
        alive_in_holdout = bool(later) or (alive and t > CALIBRATION_DAYS)
        active = bool(later) or (alive_in_holdout and rng.random() < VISIT_SHARE)
        user = f"u{i}"
        records.append({
            "user_key": user, "as_of_us": int(CALIBRATION_DAYS * DAY_US), "purchase_days": len(calibration),
            "first_purchase_us": int(calibration[0] * DAY_US), "last_purchase_us": int(calibration[-1] * DAY_US)})
        holdout[user] = HoldoutActivity(active, len(later))
    return records, holdout


@pytest.fixture(scope="module")
def report():
    records, holdout = simulate(6000, seed=3)
    return evaluate_holdout(records, holdout, TRUE, HOLDOUT_DAYS), records, holdout


def test_counts_are_the_simulations(report):
    got, records, holdout = report
    assert got["users"] == got["customers"] == len(records)
    assert got["customers_active_in_holdout"] == sum(a.active for a in holdout.values())
    assert got["repeat_purchase_days"]["actual"] == sum(a.purchase_days for a in holdout.values())
    groups = {g["x"]: g for g in got["by_frequency"]}
    for x in range(7):
        members = [r for r in records if r["purchase_days"] - 1 == x]
        if members:
            assert groups[str(x)]["customers"] == len(members)
            assert groups[str(x)]["actual_mean"] == pytest.approx(
                np.mean([holdout[r["user_key"]].purchase_days for r in members]))
    assert groups["7+"]["customers"] == sum(1 for r in records if r["purchase_days"] - 1 >= 7)


def auc_by_ranks(scores: list[float], labels: list[bool]) -> float:
    """The Mann-Whitney form of the AUC: P(a positive scores above a negative), ties half."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = np.sort([s for s, y in zip(scores, labels) if not y])
    above = sum(np.searchsorted(neg, s, side="left") for s in pos)
    ties = sum(np.searchsorted(neg, s, side="right") - np.searchsorted(neg, s, side="left") for s in pos)
    return (above + 0.5 * ties) / (len(pos) * len(neg))


def test_the_auc_is_p_alive_ranked_against_activity(report):
    got, records, holdout = report
    alive = [p_alive_direct(TRUE, r["purchase_days"] - 1, (r["last_purchase_us"] - r["first_purchase_us"]) / DAY_US,
                            (r["as_of_us"] - r["first_purchase_us"]) / DAY_US) for r in records]
    labels = [holdout[r["user_key"]].active for r in records]
    assert got["p_alive_auc"] == pytest.approx(auc_by_ranks(alive, labels), abs=1e-9)
    assert got["p_alive_auc"] > 0.8  # the true parameters separate survivors from dropped-out well


def test_true_parameters_predict_the_holdout(report):
    got, _, _ = report
    # 6,000 customers: the sum of hold-out purchases has a relative sd of a few percent.
    assert abs(got["repeat_purchase_days"]["relative_error"]) < 0.08
    for group in got["by_frequency"]:
        if group["customers"] >= 300:
            assert group["predicted_mean"] == pytest.approx(group["actual_mean"], rel=0.25, abs=0.05)


def test_report_prints_every_group(report):
    got, _, _ = report
    text = format_holdout(got)
    assert "P(alive) AUC" in text and f"{got['p_alive_auc']:.3f}" in text
    assert len([line for line in text.splitlines() if line.strip().startswith(tuple("01234567"))]) == len(
        got["by_frequency"])


def test_users_who_never_bought_are_not_evaluated():
    records, holdout = simulate(50, seed=4)
    prospects = [{"user_key": "p1", "as_of_us": records[0]["as_of_us"], "purchase_days": 0,
                  "first_purchase_us": None, "last_purchase_us": None}]
    got = evaluate_holdout(records + prospects, {**holdout, "p1": HoldoutActivity(True, 2)}, TRUE, HOLDOUT_DAYS)
    assert (got["users"], got["customers"]) == (51, 50)
