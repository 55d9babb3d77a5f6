"""Rule-based RFM scores (1-5) and the standard named RFM segments, on lifetime figures.

R is the days since the last purchase (`recency_days`), F the orders and M the net spend
in the reporting currency (`spend_total`), all over the customer's whole history as of
the scoring time. RFM describes customers: a user who has not bought yet gets R = F = M = 0
and the segment "Prospect", and the thresholds are learned over customers only (with 60 %
non-buyers, quantiles over everyone put most cut points at zero and every non-buyer
"About to sleep").

Thresholds are learned at training, over the customers among the training rows, and
stored in the model card as four cut points per figure (plain numbers: serving needs no
data). Scoring, with c1 <= c2 <= c3 <= c4 the cut points of a figure::

    value <= c1 -> 1,  c1 < value <= c2 -> 2,  ...,  value > c4 -> 5   (F and M)
    R = 6 - (the same bucket of recency_days)                          (lower recency = better)

Ties: a customer's value is never split from an equal one (ties at a cut point go to
the lower bucket), and a tied block that fills more than its fifth does not use up the
scores above it. The cut points are chosen one at a time, from the lowest: each is the
smallest value with at least 1 / (buckets left) of the customers not yet placed at or
below it, so the buckets above a big tied block split the customers above it evenly.
Without ties every bucket holds a fifth. Example, the orders of 100 customers: 60 bought
once, 15 twice, 8 three times, 5 four times, and one each 5, 6, ..., 16 times:

    c1: at least 1/5 of the 100 at or below        -> 1   F 1: one order (60)
    c2: at least 1/4 of the 40 above 1             -> 2   F 2: two orders (15)
    c3: at least 1/3 of the 25 above 2 (8.3; 3 has 8) -> 4   F 3: three or four (13)
    c4: at least 1/2 of the 12 above 4             -> 10  F 4: 5-10 (6), F 5: 11-16 (6)

(plain 20/40/60/80 % quantiles give 1, 1, 1.4, 3: F 2 and F 3 are never given, and two
orders already score F 4). Only when a figure has fewer than five distinct values among the
customers do buckets stay empty; then the remaining cut points equal the largest value.

Named segments from the (R, F) grid, the widely used RF mapping (rows R, columns F)::

    R \\ F |  1                  2                  3                  4          5
    ------+----------------------------------------------------------------------------
      5   |  New                Potential loyalist Potential loyalist Champions  Champions
      4   |  Promising          Potential loyalist Potential loyalist Loyal      Loyal
      3   |  About to sleep     About to sleep     Need attention     Loyal      Loyal
      2   |  Hibernating        Hibernating        At risk            At risk    Can't lose
      1   |  Lost               Lost               At risk            At risk    Can't lose

This is the common 10-segment RF grid with its low-low corner split into
"Hibernating" (R = 2) and "Lost" (R = 1). M is reported alongside but, as in the
grid, does not change the named segment.
"""

from __future__ import annotations

import enum
from typing import Mapping, NamedTuple, Sequence

import numpy as np

QUANTILES: tuple[float, ...] = (0.2, 0.4, 0.6, 0.8)
RFM_FEATURES: tuple[str, str, str] = ("recency_days", "orders", "spend_total")
PROSPECT = "Prospect"  # not a customer yet: no purchase by the scoring time


class RfmSegment(str, enum.Enum):
    """The named RFM segments."""

    CHAMPIONS = "Champions"
    LOYAL = "Loyal"
    POTENTIAL_LOYALIST = "Potential loyalist"
    NEW = "New"
    PROMISING = "Promising"
    NEED_ATTENTION = "Need attention"
    ABOUT_TO_SLEEP = "About to sleep"
    AT_RISK = "At risk"
    CANT_LOSE = "Can't lose"
    HIBERNATING = "Hibernating"
    LOST = "Lost"


# RF_GRID[r - 1][f - 1]; the docstring table, bottom row first.
_S = RfmSegment
RF_GRID: tuple[tuple[RfmSegment, ...], ...] = (
    (_S.LOST, _S.LOST, _S.AT_RISK, _S.AT_RISK, _S.CANT_LOSE),  # R = 1
    (_S.HIBERNATING, _S.HIBERNATING, _S.AT_RISK, _S.AT_RISK, _S.CANT_LOSE),  # R = 2
    (_S.ABOUT_TO_SLEEP, _S.ABOUT_TO_SLEEP, _S.NEED_ATTENTION, _S.LOYAL, _S.LOYAL),  # R = 3
    (_S.PROMISING, _S.POTENTIAL_LOYALIST, _S.POTENTIAL_LOYALIST, _S.LOYAL, _S.LOYAL),  # R = 4
    (_S.NEW, _S.POTENTIAL_LOYALIST, _S.POTENTIAL_LOYALIST, _S.CHAMPIONS, _S.CHAMPIONS),  # R = 5
)


class RfmThresholds(NamedTuple):
    """Four ascending cut points per RFM feature (`tie_aware_cuts`)."""

    recency_days: tuple[float, float, float, float]
    orders: tuple[float, float, float, float]
    spend_total: tuple[float, float, float, float]

    def as_card(self) -> dict:
        return {"quantiles": list(QUANTILES), "rule": TIE_RULE,
                **{name: [float(v) for v in getattr(self, name)] for name in RFM_FEATURES}}

    @classmethod
    def from_card(cls, card: Mapping) -> "RfmThresholds":
        values = []
        for name in RFM_FEATURES:
            cuts = tuple(float(v) for v in card[name])
            if len(cuts) != 4 or any(lo > hi for lo, hi in zip(cuts, cuts[1:])):
                raise ValueError(f"RFM thresholds for {name} must be 4 ascending numbers, got {cuts}")
            values.append(cuts)
        return cls(*values)


class RfmScore(NamedTuple):
    r: int  # 0 for prospects
    f: int
    m: int
    segment: str  # an RfmSegment value, or PROSPECT


TIE_RULE = ("each cut point in turn: the smallest value with at least 1 / (buckets left) of the customers "
            "above the previous cut point at or below it; ties stay in the lower bucket")


def tie_aware_cuts(values: Sequence[float], buckets: int = len(QUANTILES) + 1) -> tuple[float, ...]:
    """`buckets - 1` cut points over `values`, one at a time (see the module docstring).

    Args:
        values: the figure of every customer (at least one).
        buckets: the number of scores.

    Returns:
        Non-decreasing cut points; ``value <= cut`` falls in the lower bucket.
    """
    remaining = np.sort(np.asarray(values, dtype=float))
    if remaining.size == 0:
        raise ValueError("no value to cut")
    cuts: list[float] = []
    for left in range(buckets, 1, -1):
        if remaining.size == 0:  # fewer distinct values than buckets: the upper ones stay empty
            cuts.append(cuts[-1])
            continue
        # The smallest value with at least 1 / left of the remaining customers at or below it.
        cut = float(np.quantile(remaining, 1.0 / left, method="inverted_cdf"))
        cuts.append(cut)
        remaining = remaining[remaining > cut]
    return tuple(cuts)


def fit_thresholds(recency_days: Sequence[float], orders: Sequence[float],
                   spend_total: Sequence[float]) -> RfmThresholds:
    """The tie-aware cut points (`tie_aware_cuts`) of each figure over the customers given (orders > 0 only)."""
    orders = np.asarray(orders, dtype=float)
    customers = orders > 0
    if not customers.any():
        raise ValueError("RFM needs customers in the training rows; found none with an order")
    cuts = []
    for values in (recency_days, orders, spend_total):
        arr = np.asarray(values, dtype=float)[customers]
        cuts.append(tie_aware_cuts(arr))
    return RfmThresholds(*cuts)


def bucket(value, cuts: Sequence[float]) -> np.ndarray | int:
    """1 + the number of cut points strictly below `value` (1..5)."""
    result = 1 + np.searchsorted(np.asarray(cuts, dtype=float), np.asarray(value, dtype=float), side="left")
    return int(result) if np.ndim(result) == 0 else result


def segment_for(r: int, f: int) -> RfmSegment:
    """The named segment of an (R, F) pair, each 1..5."""
    if not (1 <= r <= 5 and 1 <= f <= 5):
        raise ValueError(f"RFM scores must be 1..5, got R={r} F={f}")
    return RF_GRID[r - 1][f - 1]


def score(thresholds: RfmThresholds, recency_days: float, orders: float, spend_total: float) -> RfmScore:
    """R, F, M scores and the named segment of one row (0, 0, 0 and "Prospect" without an order)."""
    if not orders > 0:
        return RfmScore(0, 0, 0, PROSPECT)
    r = 6 - bucket(recency_days, thresholds.recency_days)
    f = bucket(orders, thresholds.orders)
    m = bucket(spend_total, thresholds.spend_total)
    return RfmScore(r, f, m, segment_for(r, f).value)


def score_arrays(thresholds: RfmThresholds, recency_days, orders, spend_total
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[str]]:
    """Vectorised `score`: arrays of R, F, M and the list of segment names."""
    customers = np.atleast_1d(np.asarray(orders, dtype=float)) > 0
    r = np.where(customers, 6 - np.atleast_1d(bucket(recency_days, thresholds.recency_days)), 0)
    f = np.where(customers, np.atleast_1d(bucket(orders, thresholds.orders)), 0)
    m = np.where(customers, np.atleast_1d(bucket(spend_total, thresholds.spend_total)), 0)
    names = [RF_GRID[ri - 1][fi - 1].value if ri else PROSPECT for ri, fi in zip(r.tolist(), f.tolist())]
    return r, f, m, names
