"""BG/NBD formulas written out directly from Fader, Hardie & Lee (2005), independent of `models.bgnbd`."""

from __future__ import annotations

import math

from models.bgnbd import BgNbdParams


def hyp2f1_series(a: float, b: float, c: float, z: float) -> float:
    """Gauss' series sum_k (a)_k (b)_k / ((c)_k k!) z^k, for 0 <= z < 1."""
    total, term, k = 0.0, 1.0, 0
    while abs(term) > 1e-17 * max(1.0, abs(total)):
        total += term
        term *= (a + k) * (b + k) / ((c + k) * (k + 1)) * z
        k += 1
        assert k < 100_000
    return total


def p_alive_direct(p: BgNbdParams, x: int, t_x: float, T: float) -> float:
    if x == 0:
        return 1.0
    return 1.0 / (1.0 + p.a / (p.b + x - 1) * ((p.alpha + T) / (p.alpha + t_x)) ** (p.r + x))


def expected_direct(p: BgNbdParams, t: float, x: int, t_x: float, T: float) -> float:
    r, alpha, a, b = p.r, p.alpha, p.a, p.b
    hyp = hyp2f1_series(r + x, b + x, a + b + x - 1, t / (alpha + T + t))
    unconditional = (a + b + x - 1) / (a - 1) * (1 - ((alpha + T) / (alpha + T + t)) ** (r + x) * hyp)
    return unconditional * p_alive_direct(p, x, t_x, T)


def p_purchase_direct(p: BgNbdParams, t: float, x: int, t_x: float, T: float) -> float:
    """P(alive) * (1 - ((alpha+T)/(alpha+T+t))^(r+x)), as written in the docstring of `models.bgnbd`."""
    return p_alive_direct(p, x, t_x, T) * (1 - ((p.alpha + T) / (p.alpha + T + t)) ** (p.r + x))


def likelihood_direct(p: BgNbdParams, x: int, t_x: float, T: float) -> float:
    """FHL (2005) eq. 6 as printed, without logs (fine for small x)."""
    r, alpha, a, b = p.r, p.alpha, p.a, p.b
    a1 = math.gamma(r + x) * alpha ** r / math.gamma(r)
    a2 = math.gamma(a + b) * math.gamma(b + x) / (math.gamma(b) * math.gamma(a + b + x))
    a3 = (1 / (alpha + T)) ** (r + x)
    a4 = (a / (b + x - 1)) * (1 / (alpha + t_x)) ** (r + x) if x > 0 else 0.0
    return a1 * a2 * (a3 + a4)


def p_purchase_integrated(p: BgNbdParams, t: float, x: int, t_x: float, T: float) -> float:
    """P(a purchase in (T, T+t] | x, t_x, T) by numerical integration over the customer's (lambda, p).

    Bayes on the BG/NBD process itself, no closed form: with prior Gamma(r, alpha) x Beta(a, b),
    the customer is alive at T with likelihood (1-p)^x lambda^x e^(-lambda T), dropped after the
    last purchase with p (1-p)^(x-1) lambda^x e^(-lambda t_x); alive, the next purchase comes
    within t with probability 1 - e^(-lambda t).
    """
    from scipy import integrate, stats

    lam_prior = stats.gamma(p.r, scale=1.0 / p.alpha).pdf
    p_prior = stats.beta(p.a, p.b).pdf

    def over_p(g) -> float:
        return integrate.quad(lambda q: p_prior(q) * g(q), 0.0, 1.0, limit=200, epsabs=0, epsrel=1e-10)[0]

    def over_lambda(h) -> float:
        # Split where the integrand's scale changes: the prior's singularity at 0 and its tail.
        edges = [0.0, 1e-3 / max(T, 1.0), 1.0 / max(T, 1.0), 10.0 / max(T, 1.0), math.inf]
        return sum(integrate.quad(lambda lam: lam_prior(lam) * h(lam), lo, hi, limit=200, epsabs=0,
                                  epsrel=1e-10)[0] for lo, hi in zip(edges, edges[1:]))

    alive_p = over_p(lambda q: (1 - q) ** x)
    dead_p = over_p(lambda q: q * (1 - q) ** (x - 1)) if x > 0 else 0.0
    alive_then_buys = alive_p * over_lambda(lambda lam: lam ** x * math.exp(-lam * T) * -math.expm1(-lam * t))
    evidence = (alive_p * over_lambda(lambda lam: lam ** x * math.exp(-lam * T))
                + dead_p * over_lambda(lambda lam: lam ** x * math.exp(-lam * t_x)))
    return alive_then_buys / evidence
