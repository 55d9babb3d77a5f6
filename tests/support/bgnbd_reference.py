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


def likelihood_direct(p: BgNbdParams, x: int, t_x: float, T: float) -> float:
    """FHL (2005) eq. 6 as printed, without logs (fine for small x)."""
    r, alpha, a, b = p.r, p.alpha, p.a, p.b
    a1 = math.gamma(r + x) * alpha ** r / math.gamma(r)
    a2 = math.gamma(a + b) * math.gamma(b + x) / (math.gamma(b) * math.gamma(a + b + x))
    a3 = (1 / (alpha + T)) ** (r + x)
    a4 = (a / (b + x - 1)) * (1 / (alpha + t_x)) ** (r + x) if x > 0 else 0.0
    return a1 * a2 * (a3 + a4)
