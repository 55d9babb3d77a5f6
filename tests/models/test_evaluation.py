"""Hold-out evaluation: on a population simulated here from known BG/NBD parameters, the
report's counts are the simulation's, the AUCs are the Mann-Whitney statistic computed here,
the true parameters' purchase propensity matches the simulated buyer rate decile by decile,
and the expected repeat purchases with the true parameters match the simulated ones."""

from __future__ import annotations

import numpy as np
import pytest

from models.bgnbd import BgNbdParams
from models.evaluation import HoldoutActivity, decile_means, evaluate_holdout, format_holdout
from tests.support.bgnbd_reference import p_purchase_direct

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
        holdout[user] = HoldoutActivity(active, len(later), later[0] - CALIBRATION_DAYS if later else None)
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


def _inputs(r) -> tuple[int, float, float]:
    return (r["purchase_days"] - 1, (r["last_purchase_us"] - r["first_purchase_us"]) / DAY_US,
            (r["as_of_us"] - r["first_purchase_us"]) / DAY_US)


def _horizon(got, days: float) -> dict:
    (found,) = [h for h in got["purchase_prediction"] if h["horizon_days"] == days]
    return {s["score"]: s for s in found["scores"]} | {"_buyers": found["buyers"]}


def test_aucs_rank_scores_against_buying_in_the_horizon(report):
    got, records, holdout = report
    assert [h["horizon_days"] for h in got["purchase_prediction"]] == [30.0, 90.0]  # the hold-out is 90 days
    first = [holdout[r["user_key"]].first_purchase_day for r in records]
    for days in (30.0, 90.0):
        bought = [f is not None and f < days for f in first]
        scores = _horizon(got, days)
        assert scores["_buyers"] == sum(bought)
        p = [p_purchase_direct(TRUE, days, *_inputs(r)) for r in records]
        recency = [-(r["as_of_us"] - r["last_purchase_us"]) / DAY_US for r in records]
        frequency = [r["purchase_days"] for r in records]
        assert scores[f"p_purchase_{days:g}d"]["auc"] == pytest.approx(auc_by_ranks(p, bought), abs=1e-9)
        assert scores["recency_only"]["auc"] == pytest.approx(auc_by_ranks(recency, bought), abs=1e-9)
        assert scores["frequency_only"]["auc"] == pytest.approx(auc_by_ranks(frequency, bought), abs=1e-9)
        assert scores[f"p_purchase_{days:g}d"]["brier"] == pytest.approx(
            np.mean((np.array(p) - np.array(bought)) ** 2), rel=1e-9)
        assert scores["recency_only"]["brier"] is None  # a rank, not a probability of the label
        # With the true parameters, the propensity ranks better than either baseline alone.
        assert scores[f"p_purchase_{days:g}d"]["auc"] > max(scores["recency_only"]["auc"],
                                                            scores["frequency_only"]["auc"])


def test_true_propensity_is_calibrated_per_decile(report):
    got, records, _ = report
    deciles = _horizon(got, 90.0)["p_purchase_90d"]["deciles"]
    # 600 customers a decile: the buyer rate has a standard error of 0.02 at most.
    for d in deciles:
        assert d["predicted"] == pytest.approx(d["actual"], abs=0.06)
    assert deciles[0]["predicted"] > deciles[4]["predicted"] > deciles[9]["predicted"]
    lift = _horizon(got, 90.0)["p_purchase_90d"]["top_decile_lift"]
    assert lift == pytest.approx(deciles[0]["actual"] / (_horizon(got, 90.0)["_buyers"] / len(records)))


def test_decile_means_without_ties_are_means_of_sorted_tenths():
    rng = np.random.default_rng(0)
    score, values = rng.random(200), rng.random(200)
    order = np.argsort(-score)
    np.testing.assert_allclose(decile_means(score, values), values[order].reshape(10, 20).mean(axis=1))


def test_decile_means_share_tied_blocks_as_random_tie_breaking_does():
    # 60 % of the population tied at the lowest score (one-time buyers, say): spread over
    # deciles 5-10, each of those gets the tied block's mean whatever the row order.
    score = np.array([5.0] * 10 + [3.0] * 30 + [1.0] * 60)
    values = np.array([1.0] * 10 + [1.0] * 15 + [0.0] * 15 + [1.0] * 12 + [0.0] * 48)
    got = decile_means(score, values)
    rng = np.random.default_rng(1)
    draws = []
    for _ in range(4000):  # random tie-breaking, averaged
        order = np.lexsort((rng.random(100), -score))
        draws.append(values[order].reshape(10, 10).mean(axis=1))
    np.testing.assert_allclose(got, np.mean(draws, axis=0), atol=0.02)
    np.testing.assert_allclose(got[4:], 0.2)
    np.testing.assert_allclose(got[1:4], 0.5)


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
    p90 = _horizon(got, 90.0)["p_purchase_90d"]
    assert "bought at least once in the first 90 days of the hold-out" in text
    assert any(line.split()[:3] == ["p_purchase_90d", f"{p90['auc']:.3f}", f"{p90['top_decile_lift']:.2f}"]
               for line in text.splitlines())
    assert len([line for line in text.splitlines() if line.strip().startswith(tuple("01234567"))]) == len(
        got["by_frequency"])


def test_users_who_never_bought_are_not_evaluated():
    records, holdout = simulate(50, seed=4)
    prospects = [{"user_key": "p1", "as_of_us": records[0]["as_of_us"], "purchase_days": 0,
                  "first_purchase_us": None, "last_purchase_us": None}]
    got = evaluate_holdout(records + prospects, {**holdout, "p1": HoldoutActivity(True, 2)}, TRUE, HOLDOUT_DAYS)
    assert (got["users"], got["customers"]) == (51, 50)
