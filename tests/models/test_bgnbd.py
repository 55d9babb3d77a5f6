"""BG/NBD: closed forms against formulas written out here, parameter recovery, record inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models.bgnbd import (BgNbdParams, expected_purchases, fit_bgnbd, inputs_from_record, is_customer,
                          log_likelihood, p_alive, p_purchase, simulate)
from tests.support.bgnbd_reference import expected_direct, likelihood_direct, p_alive_direct, p_purchase_integrated

DAY_US = 86_400_000_000
# The CDNOW estimates of Fader, Hardie & Lee (2005), in weeks.
CDNOW = BgNbdParams(0.243, 4.414, 0.793, 2.426, "week")


CASES = [(0, 0.0, 38.86), (1, 2.0, 30.0), (2, 30.43, 38.86), (7, 35.0, 38.0), (3, 5.0, 39.0)]
DAY_PARAMS = BgNbdParams(0.5, 8.0, 0.7, 3.0)


@pytest.mark.parametrize("params", [CDNOW, DAY_PARAMS])
@pytest.mark.parametrize("x,t_x,T", CASES)
def test_closed_forms_match_direct_formulas(params, x, t_x, T):
    assert p_alive(params, x, t_x, T) == pytest.approx(p_alive_direct(params, x, t_x, T), rel=1e-12)
    for t in (1.0, 30.0, 39.0):
        assert expected_purchases(params, t, x, t_x, T) == pytest.approx(
            expected_direct(params, t, x, t_x, T), rel=1e-9)
    assert float(log_likelihood(params, x, t_x, T)) == pytest.approx(
        math.log(likelihood_direct(params, x, t_x, T)), rel=1e-12)


def test_published_cdnow_value():
    # FHL (2005), section 5: a customer with x=2, t_x=30.43, T=38.86 (weeks)
    # is expected to make 1.226 purchases in the next 39 weeks.
    assert expected_purchases(CDNOW, 39.0, 2, 30.43, 38.86) == pytest.approx(1.226, abs=5e-4)


@pytest.mark.parametrize("params,case,t", [
    (CDNOW, (0, 0.0, 38.86), 13.0),  # a one-time buyer, 13 weeks ahead under the published CDNOW fit
    (CDNOW, (2, 30.43, 38.86), 39.0),  # the paper's example customer
    (CDNOW, (3, 5.0, 39.0), 4.0),  # repeat buyer silent for 34 weeks: likely dropped out
    (DAY_PARAMS, (7, 35.0, 38.0), 30.0),
])
def test_p_purchase_matches_numerical_integration(params, case, t):
    assert p_purchase(params, t, *case) == pytest.approx(p_purchase_integrated(params, t, *case), rel=1e-9)


def test_p_purchase_of_one_time_buyers_matches_simulation():
    # One-time buyers of the CDNOW fit, simulated: first purchase at 0, no other by T = 39
    # weeks; the share that buys in the next 13 weeks. Standard error ~0.001 at this size.
    rng = np.random.default_rng(7)
    lam = rng.gamma(CDNOW.r, 1.0 / CDNOW.alpha, size=400_000)
    next_purchase = rng.exponential(1.0 / np.maximum(lam, 1e-300))
    silent = next_purchase > 39.0
    observed = float(np.mean(next_purchase[silent] <= 39.0 + 13.0))
    assert p_purchase(CDNOW, 13.0, 0, 0.0, 39.0) == pytest.approx(observed, abs=0.004)


def test_silence_lowers_p_purchase_for_every_customer():
    # P(alive) stays 1 for a one-time buyer however long the silence; the propensity must not.
    T = np.array([10.0, 60.0, 180.0, 365.0])
    for x, t_x in ((0, 0.0), (3, 9.0)):
        p = p_purchase(DAY_PARAMS, 90.0, np.full(4, float(x)), np.full(4, t_x), T)
        assert np.all(np.diff(p) < 0) and np.all((p > 0) & (p < 1))
    assert p_purchase(DAY_PARAMS, 0.0, 2, 5.0, 10.0) == 0.0
    assert p_purchase(DAY_PARAMS, 30.0, 2, 5.0, 10.0) < p_purchase(DAY_PARAMS, 90.0, 2, 5.0, 10.0)


def test_no_repeat_purchase_means_alive():
    assert p_alive(DAY_PARAMS, 0, 0.0, 60.0) == 1.0
    np.testing.assert_array_equal(p_alive(DAY_PARAMS, np.zeros(3), np.zeros(3), np.array([1.0, 10.0, 100.0])),
                                  np.ones(3))


def test_vectorised_equals_scalar():
    x = np.array([c[0] for c in CASES], dtype=float)
    t_x = np.array([c[1] for c in CASES])
    T = np.array([c[2] for c in CASES])
    np.testing.assert_allclose(p_alive(DAY_PARAMS, x, t_x, T), [p_alive_direct(DAY_PARAMS, *c) for c in CASES])
    np.testing.assert_allclose(expected_purchases(DAY_PARAMS, 30.0, x, t_x, T),
                               [expected_direct(DAY_PARAMS, 30.0, *c) for c in CASES], rtol=1e-9)


def test_log_likelihood_is_finite_for_heavy_buyers():
    # The direct form underflows here ((alpha+T)^-(r+x) ~ 1e-1500); the log form must not.
    ll = log_likelihood(DAY_PARAMS, 800, 59.0, 60.0)
    assert np.isfinite(ll)
    assert 0.0 < p_alive(DAY_PARAMS, 800, 59.0, 60.0) < 1.0


def test_rejects_inconsistent_inputs():
    with pytest.raises(ValueError):
        p_alive(DAY_PARAMS, 1, 10.0, 5.0)  # t_x > T


def _numeric_hessian(f, theta: np.ndarray, h: float = 1e-4) -> np.ndarray:
    n = len(theta)
    H = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            e_i, e_j = np.eye(n)[i] * h, np.eye(n)[j] * h
            H[i, j] = (f(theta + e_i + e_j) - f(theta + e_i - e_j) - f(theta - e_i + e_j) + f(theta - e_i - e_j)) / (
                4 * h * h)
    return H


def test_parameter_recovery():
    """Simulate 4000 customers from known parameters, fit, recover.

    Tolerance: the asymptotic standard errors of the MLE, from the inverse of the
    observed information (numeric Hessian of the total negative log-likelihood
    in log-parameters, computed here). Each true log-parameter must lie within
    3 standard errors of the estimate (a two-sided 99.7 % band per parameter).
    The standard errors themselves must be small (log r and log alpha within
    ~10 %, a and b, which only the repeat buyers' dropouts identify, within
    ~40 %), so the band cannot be trivially wide. With the fixed seed the test
    is deterministic.
    """
    true = BgNbdParams(0.5, 8.0, 0.7, 3.0)
    rng = np.random.default_rng(2024)
    T = np.round(rng.uniform(30.0, 60.0, size=4000))  # days since first purchase
    x, t_x, T = simulate(true, 4000, T, rng)
    assert 1.0 < x.mean() < 4.0  # the simulation produced repeat buying at all

    fitted = fit_bgnbd(x, t_x, T)
    theta = np.log(np.array(fitted[:4]))
    H = _numeric_hessian(lambda th: -float(np.sum(log_likelihood(np.exp(th), x, t_x, T))), theta)
    se = np.sqrt(np.diag(np.linalg.inv(H)))
    assert np.all(se[:2] < 0.1) and np.all(se[2:] < 0.4), se
    z = (theta - np.log(np.array(true[:4]))) / se
    assert np.all(np.abs(z) < 3.0), (fitted, se, z)
    assert fitted.time_unit == "day"


def test_fit_is_deterministic():
    rng = np.random.default_rng(7)
    x, t_x, T = simulate(DAY_PARAMS, 500, 45.0, rng)
    assert fit_bgnbd(x, t_x, T) == fit_bgnbd(x, t_x, T)


def test_simulation_respects_observation_window():
    x, t_x, T = simulate(DAY_PARAMS, 1000, 20.0, np.random.default_rng(1))
    assert np.all(t_x <= T) and np.all(x >= 0)
    assert np.all(t_x[x == 0] == 0.0)


def _record(**kw):
    base = {"user_key": "u", "as_of_us": 30 * DAY_US, "purchase_days": 0, "first_purchase_us": None,
            "last_purchase_us": None}
    base.update(kw)
    return base


@pytest.mark.parametrize("record,expected,customer", [
    (_record(), (0.0, 0.0, 0.0), False),  # never bought: not a customer, no BG/NBD inputs
    (_record(purchase_days=1, first_purchase_us=10 * DAY_US, last_purchase_us=10 * DAY_US), (0.0, 0.0, 20.0), True),
    (_record(purchase_days=4, first_purchase_us=6 * DAY_US, last_purchase_us=18 * DAY_US), (3.0, 12.0, 24.0), True),
    # silent for 400 more days: T keeps growing, x and t_x stay
    (_record(purchase_days=4, first_purchase_us=6 * DAY_US, last_purchase_us=18 * DAY_US, as_of_us=430 * DAY_US),
     (3.0, 12.0, 424.0), True),
])
def test_inputs_from_record(record, expected, customer):
    assert inputs_from_record(record) == pytest.approx(expected)
    assert is_customer(record) is customer


def test_inputs_from_record_rejects_purchase_after_the_scoring_time():
    with pytest.raises(ValueError):
        inputs_from_record(_record(purchase_days=2, first_purchase_us=DAY_US, last_purchase_us=31 * DAY_US))
