"""The population stability index written out by hand, apart from `models.drift`.

Values are counted into right-closed bins (lo, hi] by plain comparisons; each side's shares
are floored at 1e-4 (the documented convention); PSI = sum of (a - e) ln(a / e).
"""

from __future__ import annotations

import math
from typing import Sequence

EPSILON = 1e-4


def counts_by_comparison(values: Sequence[float], edges: Sequence[float]) -> list[int]:
    bounds = [-math.inf, *edges, math.inf]
    return [sum(1 for v in values if lo < v <= hi) for lo, hi in zip(bounds, bounds[1:])]


def psi_of_shares(expected: Sequence[float], actual_counts: Sequence[int]) -> float:
    total_e, total_a = sum(expected), sum(actual_counts)
    e = [max(x / total_e, EPSILON) for x in expected]
    a = [max(x / total_a, EPSILON) for x in actual_counts]
    return sum((ai - ei) * math.log(ai / ei) for ei, ai in zip(e, a))


def reference_psi(training: Sequence[float], current: Sequence[float], edges: Sequence[float]) -> float:
    return psi_of_shares(counts_by_comparison(training, edges), counts_by_comparison(current, edges))
