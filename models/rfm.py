"""Rule-based RFM scores (1-5) and the standard named RFM segments, on lifetime figures.

R is the days since the last purchase (`recency_days`), F the orders and M the net spend
in the reporting currency (`spend_total`), all over the customer's whole history as of
the scoring time. RFM describes customers: a user who has not bought yet gets R = F = M = 0
and the segment "Prospect", and the thresholds are learned over customers only (with 60 %
non-buyers, quantiles over everyone put most cut points at zero and every non-buyer
"About to sleep").

Thresholds are learned at training: the 20/40/60/80 % quantiles (numpy's default linear
interpolation) of each figure over the customers among the training rows. They are
stored in the model card as plain numbers, so serving needs no data.

Scoring, with q20 <= q40 <= q60 <= q80 the thresholds of a feature::

    value <= q20 -> 1,  q20 < value <= q40 -> 2,  ...,  value > q80 -> 5   (F and M)
    R = 6 - (the same bucket of recency_days)                          (lower recency = better)

Ties at a threshold go to the lower bucket; when several thresholds are equal
(many zero-frequency users, say) the empty buckets are simply skipped.

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
    """Four ascending cut points (20/40/60/80 % of customers) per RFM feature."""

    recency_days: tuple[float, float, float, float]
    orders: tuple[float, float, float, float]
    spend_total: tuple[float, float, float, float]

    def as_card(self) -> dict:
        return {"quantiles": list(QUANTILES), **{name: [float(v) for v in getattr(self, name)] for name in RFM_FEATURES}}

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


def fit_thresholds(recency_days: Sequence[float], orders: Sequence[float],
                   spend_total: Sequence[float]) -> RfmThresholds:
    """The 20/40/60/80 % quantiles of each figure over the customers given (orders > 0 only)."""
    orders = np.asarray(orders, dtype=float)
    customers = orders > 0
    if not customers.any():
        raise ValueError("RFM needs customers in the training rows; found none with an order")
    cuts = []
    for values in (recency_days, orders, spend_total):
        arr = np.asarray(values, dtype=float)[customers]
        cuts.append(tuple(float(v) for v in np.quantile(arr, QUANTILES)))
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
