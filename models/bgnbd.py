"""BG/NBD ("Beta-Geometric / Negative Binomial Distribution") purchase model.

Fader, Hardie & Lee (2005), "Counting your customers the easy way: an
alternative to the Pareto/NBD model", Marketing Science 24(2).

While alive, a customer buys as a Poisson process with rate lambda; lambda is
Gamma(r, alpha) across customers (alpha is a rate, in 1 / `time_unit`). After
every repeat purchase the customer drops out with probability p; p is
Beta(a, b) across customers. A customer is summarised by

* ``x``: the number of repeat purchases (purchases after the first),
* ``t_x``: the time of the last purchase, measured from the first,
* ``T``: the time from the first purchase to the end of observation,

all times in `time_unit` (this project: days). With
``A = ln Gamma(r+x) - ln Gamma(r) + r ln alpha
      + ln Gamma(a+b) + ln Gamma(b+x) - ln Gamma(b) - ln Gamma(a+b+x)``
the log-likelihood of one customer is (paper, eq. 6)::

    LL = A + ln( (alpha+T)^-(r+x) + [x>0] * a/(b+x-1) * (alpha+t_x)^-(r+x) )

evaluated with `numpy.logaddexp` so that it stays finite for large x and T.

Closed forms (paper, eqs. 10 and 13)::

    P(alive | x, t_x, T) = 1 / (1 + [x>0] * a/(b+x-1) * ((alpha+T)/(alpha+t_x))^(r+x))

    E[X(t) | x, t_x, T] = (a+b+x-1)/(a-1)
        * (1 - ((alpha+T)/(alpha+T+t))^(r+x) * 2F1(r+x, b+x; a+b+x-1; t/(alpha+T+t)))
        * P(alive | x, t_x, T)

(the second needs a != 1; the fitted a is a continuous estimate, never exactly 1).

The probability of at least one purchase in the next t (the purchase propensity)::

    P(X(t) > 0 | x, t_x, T) = P(alive | x, t_x, T) * (1 - ((alpha+T)/(alpha+T+t))^(r+x))

A customer alive at T makes a purchase before any dropout (dropout only follows a
purchase), and given alive the rate's posterior is Gamma(r+x, alpha+T), whose
probability of no event in t is the power above.

Example::

    params = fit_bgnbd(x, t_x, T)
    p = p_alive(params, x, t_x, T)
    e30 = expected_purchases(params, 30.0, x, t_x, T)
    p90 = p_purchase(params, 90.0, x, t_x, T)
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from scipy import optimize, special

TIME_UNIT_DAY = "day"


class BgNbdParams(NamedTuple):
    """Fitted BG/NBD parameters; `alpha` is in 1 / `time_unit`."""

    r: float
    alpha: float
    a: float
    b: float
    time_unit: str = TIME_UNIT_DAY

    def as_card(self) -> dict:
        """The model-card form: plain numbers plus the time unit."""
        return {"r": float(self.r), "alpha": float(self.alpha), "a": float(self.a), "b": float(self.b),
                "time_unit": self.time_unit}

    @classmethod
    def from_card(cls, card: dict) -> "BgNbdParams":
        return cls(float(card["r"]), float(card["alpha"]), float(card["a"]), float(card["b"]),
                   str(card.get("time_unit", TIME_UNIT_DAY)))


def _arrays(x, t_x, T) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float)
    t_x = np.asarray(t_x, dtype=float)
    T = np.asarray(T, dtype=float)
    if np.any(x < 0) or np.any(t_x < 0) or np.any(T < t_x):
        raise ValueError("BG/NBD inputs need x >= 0 and 0 <= t_x <= T")
    return x, t_x, T


def log_likelihood(params: BgNbdParams | tuple, x, t_x, T) -> np.ndarray:
    """Per-customer log-likelihood (FHL 2005, eq. 6), numerically stable.

    Args:
        params: (r, alpha, a, b).
        x, t_x, T: arrays (or scalars) of repeat purchases, time of last
            purchase and observation length, in the parameters' time unit.

    Returns:
        An array of log-likelihoods, one per customer.
    """
    r, alpha, a, b = params[:4]
    x, t_x, T = _arrays(x, t_x, T)
    ln_a1 = special.gammaln(r + x) - special.gammaln(r) + r * np.log(alpha)
    ln_a2 = special.gammaln(a + b) + special.gammaln(b + x) - special.gammaln(b) - special.gammaln(a + b + x)
    ln_a3 = -(r + x) * np.log(alpha + T)
    repeat = x > 0
    # b + x - 1 > 0 whenever x >= 1; the masked-out entries never reach the log.
    ln_a4 = np.where(
        repeat,
        np.log(a) - np.log(np.where(repeat, b + x - 1.0, 1.0)) - (r + x) * np.log(alpha + t_x),
        -np.inf,
    )
    return ln_a1 + ln_a2 + np.logaddexp(ln_a3, ln_a4)


def _aggregate(x, t_x, T) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Unique (x, t_x, T) rows with their counts: the likelihood is a weighted sum."""
    rows = np.stack([x, t_x, T], axis=1)
    unique, counts = np.unique(rows, axis=0, return_counts=True)
    return unique[:, 0], unique[:, 1], unique[:, 2], counts.astype(float)


def fit_bgnbd(x, t_x, T, *, time_unit: str = TIME_UNIT_DAY) -> BgNbdParams:
    """Maximum-likelihood fit of (r, alpha, a, b).

    Optimises the mean negative log-likelihood over log-parameters (so all four
    stay positive) with L-BFGS-B from a fixed start; deterministic for the same
    input.

    Args:
        x: repeat purchases per customer (>= 0).
        t_x: time of the last purchase since the first, in `time_unit`.
        T: time since the first purchase to the end of observation, in `time_unit`.
        time_unit: the unit of t_x and T ('day' here).

    Returns:
        The fitted `BgNbdParams`.

    Raises:
        ValueError: no customers, invalid inputs, or the optimiser did not converge.
    """
    x, t_x, T = _arrays(x, t_x, T)
    x, t_x, T = np.ravel(x), np.ravel(t_x), np.ravel(T)
    if x.size == 0:
        raise ValueError("BG/NBD needs at least one customer")
    ux, ut, uT, w = _aggregate(x, t_x, T)
    total = w.sum()

    def objective(log_params: np.ndarray) -> float:
        # Bounded log-parameters keep exp() finite; the bounds (e^-10 .. e^10)
        # are far outside any plausible purchase behaviour.
        params = np.exp(log_params)
        ll = log_likelihood(params, ux, ut, uT)
        value = -float(np.dot(w, ll)) / total
        return value if math.isfinite(value) else 1e300

    # Start: unit shapes and alpha at the mean observation length (so the
    # starting mean rate r/alpha is about one purchase per observed span).
    start = np.log([1.0, max(float(np.mean(T)), 1e-3), 1.0, 1.0])
    result = optimize.minimize(objective, start, method="L-BFGS-B", bounds=[(-10.0, 10.0)] * 4,
                               options={"maxiter": 2000, "ftol": 1e-12, "gtol": 1e-8})
    if not np.all(np.isfinite(result.x)) or (not result.success and result.nit == 0):
        raise ValueError(f"BG/NBD fit failed: {result.message}")
    r, alpha, a, b = (float(v) for v in np.exp(result.x))
    return BgNbdParams(r, alpha, a, b, time_unit)


def p_alive(params: BgNbdParams, x, t_x, T) -> np.ndarray | float:
    """P(the customer is still alive | x, t_x, T) (FHL 2005, eq. 13).

    A customer with no repeat purchase (x = 0) cannot have dropped out under
    BG/NBD (dropout happens only right after a repeat purchase), so P = 1.
    """
    r, alpha, a, b = params[:4]
    x, t_x, T = _arrays(x, t_x, T)
    repeat = x > 0
    # log of a/(b+x-1) * ((alpha+T)/(alpha+t_x))^(r+x), computed in logs (the
    # ratio can overflow for large x).
    log_odds = np.where(
        repeat,
        np.log(a) - np.log(np.where(repeat, b + x - 1.0, 1.0)) + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x)),
        -np.inf,
    )
    result = special.expit(-log_odds)
    return float(result) if np.ndim(result) == 0 else result


def expected_purchases(params: BgNbdParams, t: float, x, t_x, T) -> np.ndarray | float:
    """E[X(t) | x, t_x, T]: expected purchases in the next `t` time units (FHL 2005, eq. 10)."""
    r, alpha, a, b = params[:4]
    x, t_x, T = _arrays(x, t_x, T)
    if t < 0:
        raise ValueError("t must be >= 0")
    z = t / (alpha + T + t)
    hyp = special.hyp2f1(r + x, b + x, a + b + x - 1.0, z)
    head = (a + b + x - 1.0) / (a - 1.0)
    body = 1.0 - np.exp((r + x) * (np.log(alpha + T) - np.log(alpha + T + t))) * hyp
    result = head * body * p_alive(params, x, t_x, T)
    return float(result) if np.ndim(result) == 0 else result


def p_purchase(params: BgNbdParams, t: float, x, t_x, T) -> np.ndarray | float:
    """P(at least one purchase in the next `t` time units | x, t_x, T) (see the module docstring).

    Unlike P(alive), it falls for every customer who stays silent, one-time buyers
    included: T grows, the posterior purchase rate falls.
    """
    r, alpha, a, b = params[:4]
    x, t_x, T = _arrays(x, t_x, T)
    if t < 0:
        raise ValueError("t must be >= 0")
    # 1 - ((alpha+T)/(alpha+T+t))^(r+x) as -expm1(log ...): exact for small t.
    buys_if_alive = -np.expm1((r + x) * (np.log(alpha + T) - np.log(alpha + T + t)))
    result = buys_if_alive * p_alive(params, x, t_x, T)
    return float(result) if np.ndim(result) == 0 else result


def simulate(params: BgNbdParams, n: int, T, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draws `n` customers from the BG/NBD generative process.

    Each customer makes a first purchase at time 0 and is observed until `T`
    (a scalar or an array of n lengths). While alive, inter-purchase times are
    Exponential(lambda) with lambda ~ Gamma(r, rate alpha); after each repeat
    purchase the customer drops out with probability p ~ Beta(a, b).

    Returns:
        (x, t_x, T) arrays of length n.
    """
    r, alpha, a, b = params[:4]
    T = np.broadcast_to(np.asarray(T, dtype=float), (n,)).copy()
    lam = np.maximum(rng.gamma(shape=r, scale=1.0 / alpha, size=n), 1e-300)  # no 1/0 below
    p = rng.beta(a, b, size=n)
    x = np.zeros(n)
    t_x = np.zeros(n)
    now = np.zeros(n)
    active = np.ones(n, dtype=bool)
    while active.any():
        idx = np.flatnonzero(active)
        now[idx] += rng.exponential(1.0 / lam[idx])
        bought = now[idx] <= T[idx]
        buyers = idx[bought]
        x[buyers] += 1
        t_x[buyers] = now[buyers]
        active[idx[~bought]] = False  # the observation ended first
        dropped = rng.random(buyers.size) < p[buyers]
        active[buyers[dropped]] = False
    return x, t_x, T


DAY_US = 86_400_000_000
DAYS_PER_UNIT = {"day": 1.0, "week": 7.0}


def inputs_from_record(record) -> tuple[float, float, float]:
    """(x, t_x, T) in days from a profile's feature record, as of its ``as_of_us``.

    * x = purchase_days - 1: repeat purchase DAYS over the customer's whole history (several
      orders on one day count once, the usual discrete-time reading of BG/NBD);
    * t_x = last_purchase_us - first_purchase_us, in days;
    * T = as_of_us - first_purchase_us, in days: it keeps growing while the customer is
      silent, which is what makes P(alive) fall.

    BG/NBD describes customers from their first purchase on: a user who never bought has
    no (x, t_x, T); `is_customer` says which records have them.

    Raises:
        ValueError: a record of a customer whose purchase times are inconsistent.
    """
    if not is_customer(record):
        return 0.0, 0.0, 0.0
    first, last, as_of = int(record["first_purchase_us"]), int(record["last_purchase_us"]), int(record["as_of_us"])
    if not first <= last <= as_of:
        raise ValueError(f"inconsistent purchase times: first={first} last={last} as_of={as_of}")
    return float(int(record["purchase_days"]) - 1), (last - first) / DAY_US, (as_of - first) / DAY_US


def is_customer(record) -> bool:
    """Whether the record's user has bought anything by its as-of time."""
    return int(record.get("purchase_days") or 0) > 0 and record.get("first_purchase_us") is not None
