"""Drift: how far the data a model sees has moved from the data it was trained on.

Pure numpy. Training keeps the distribution of every model feature in the model card
(`training_distribution`, under the card key ``distribution``): quantile bins of the
training rows (one row per user, as of the calibration end), the share of rows in each,
and the feature's mean, standard deviation and median; plus the share of users whose
segment changed from one day to the next over the last days of the training data
(`daily_moves`), the baseline of movement.

Bins
----
`N_BINS` (10) quantile bins: the edges are the distinct interior deciles of the
training values. Bins are closed on the right::

    bin 0 = (-inf, e_0], bin i = (e_(i-1), e_i], bin n = (e_(n-1), +inf)

so that a point mass (many users with exactly 0 orders) falls in one bin whose upper edge
is that value, rather than being split by interpolation. A feature with few distinct
values has fewer bins.

Population stability index
--------------------------
With e_i the training share and a_i the current share of bin i, each floored at
`EPSILON` (1e-4) so that an empty bin counts as rare rather than impossible::

    PSI = sum_i (a_i - e_i) * ln(a_i / e_i)

The usual reading, used for the flags: below 0.1 stable, 0.1 to 0.25 a moderate shift
(`MODERATE`), above 0.25 a major shift (`MAJOR`). PSI grows with sampling noise for
small samples: compare periods of at least a few hundred users.

Example::

    dist = training_distribution(X, MODEL_FEATURES)        # card["distribution"]
    counts = {f: bin_counts(dist["features"][f]["edges"], X_now[:, i]) for i, f in ...}
    DriftMonitor.from_card(card).audit_fields(counts)      # {"drift_rows", "drift_max_psi", "drift"}
"""

from __future__ import annotations

import math
import numbers
from typing import Callable, Mapping, Optional, Sequence

import numpy as np

CARD_KEY = "distribution"
N_BINS = 10
EPSILON = 1e-4
MODERATE = 0.1
MAJOR = 0.25
AUDIT_TOP = 5  # features recorded per run_audit row, largest PSI first

STABLE, MODERATE_SHIFT, MAJOR_SHIFT = "stable", "moderate", "major"


def quantile_edges(values: np.ndarray, n_bins: int = N_BINS) -> list[float]:
    """The distinct interior quantiles (1/n .. (n-1)/n) of `values`: the upper edges of the first bins."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return []
    qs = np.quantile(values, np.arange(1, n_bins) / n_bins)
    return sorted({float(q) for q in qs})


def bin_index(edges: Sequence[float], values: np.ndarray) -> np.ndarray:
    """Bin of each value: i such that edges[i-1] < value <= edges[i] (right-closed)."""
    return np.searchsorted(np.asarray(edges, dtype=float), np.asarray(values, dtype=float), side="left")


def bin_counts(edges: Sequence[float], values: np.ndarray) -> list[int]:
    """How many finite values fall in each of the len(edges) + 1 bins."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    return [int(n) for n in np.bincount(bin_index(edges, values), minlength=len(edges) + 1)]


def shares(counts: Sequence[float]) -> np.ndarray:
    counts = np.asarray(counts, dtype=float)
    total = counts.sum()
    return counts / total if total > 0 else np.zeros_like(counts)


def psi(expected: Sequence[float], actual: Sequence[float], epsilon: float = EPSILON) -> float:
    """Population stability index of `actual` against `expected` (shares or counts of the same bins).

    Each side is normalised to shares, then floored at `epsilon` (module docstring).

    Raises:
        ValueError: the two sides have different numbers of bins, or one is empty.
    """
    e, a = shares(expected), shares(actual)
    if e.shape != a.shape:
        raise ValueError(f"{len(e)} expected bins against {len(a)} actual bins")
    if not (e.sum() > 0 and a.sum() > 0):
        raise ValueError("PSI of an empty distribution")
    e, a = np.maximum(e, epsilon), np.maximum(a, epsilon)
    return float(np.sum((a - e) * np.log(a / e)))


def flag(value: Optional[float]) -> Optional[str]:
    """stable (< 0.1), moderate (0.1 to 0.25) or major (> 0.25); None for no value."""
    if value is None:
        return None
    if value > MAJOR:
        return MAJOR_SHIFT
    if value >= MODERATE:
        return MODERATE_SHIFT
    return STABLE


# ----------------------------------------------------------------------------- the card


def feature_distribution(values: np.ndarray, n_bins: int = N_BINS) -> dict:
    """One feature's entry of the card: edges, proportions, mean, sd (population), median."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    edges = quantile_edges(values, n_bins)
    return {
        "edges": edges,
        "proportions": [float(p) for p in shares(bin_counts(edges, values))],
        "mean": float(np.mean(values)) if values.size else 0.0,
        "sd": float(np.std(values)) if values.size else 0.0,
        "median": float(np.median(values)) if values.size else 0.0,
    }


def training_distribution(X: np.ndarray, features: Sequence[str], *, n_bins: int = N_BINS,
                          moves: Optional[dict] = None) -> dict:
    """The card's ``distribution``: per feature (columns of X) bins and moments; the movement baseline."""
    X = np.asarray(X, dtype=float)
    return {
        "rows": int(len(X)),
        "n_bins": int(n_bins),
        "epsilon": EPSILON,
        "thresholds": {MODERATE_SHIFT: MODERATE, MAJOR_SHIFT: MAJOR},
        "binning": "quantile bins of the training rows, closed on the right: (e[i-1], e[i]]",
        "features": {name: feature_distribution(X[:, i], n_bins) for i, name in enumerate(features)},
        "daily_moves": moves,
    }


def daily_moves(snapshots: Sequence[tuple[int, Sequence[str], np.ndarray]],
                assign: Callable[[np.ndarray], np.ndarray]) -> Optional[dict]:
    """The share of users whose segment changed between consecutive days, at training.

    Args:
        snapshots: (as-of time, users, feature matrix) per day, any order; a user counts
            for a pair of consecutive days when they have a row on both.
        assign: the fitted model's segment ids of a feature matrix.

    Returns:
        ``{"days": pairs, "share": mean of the daily shares, "per_day": [{"as_of_us", "users",
        "moved", "share"}]}``, or None with fewer than two days.
    """
    ordered = sorted(snapshots, key=lambda s: s[0])
    if len(ordered) < 2:
        return None
    assigned = [(as_of, dict(zip(users, np.asarray(assign(X)).tolist()))) for as_of, users, X in ordered]
    per_day = []
    for (_, before), (as_of, after) in zip(assigned, assigned[1:]):
        both = [u for u in after if u in before]
        moved = sum(1 for u in both if before[u] != after[u])
        per_day.append({"as_of_us": int(as_of), "users": len(both), "moved": moved,
                        "share": moved / len(both) if both else None})
    known = [d["share"] for d in per_day if d["share"] is not None]
    return {"days": len(per_day), "share": float(np.mean(known)) if known else None, "per_day": per_day}


def _finite(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def validate(block, features: Sequence[str]) -> list[str]:
    """Problems of a card's ``distribution`` (empty when usable): one entry per feature, ascending
    finite edges, one proportion more than edges, proportions that add up to 1."""
    if not isinstance(block, Mapping) or not isinstance(block.get("features"), Mapping):
        return ["distribution is not an object with features"]
    problems = []
    missing = [name for name in features if name not in block["features"]]
    if missing:
        problems.append(f"distribution lacks features {missing[:3]}")
    for name, entry in block["features"].items():
        edges, props = entry.get("edges"), entry.get("proportions")
        if not (isinstance(edges, list) and all(map(_finite, edges))
                and all(lo < hi for lo, hi in zip(edges, edges[1:]))):
            problems.append(f"distribution of {name}: edges are not ascending finite numbers")
        elif not (isinstance(props, list) and len(props) == len(edges) + 1 and all(map(_finite, props))
                  and all(p >= 0 for p in props) and abs(sum(props) - 1.0) < 1e-6):
            problems.append(f"distribution of {name}: proportions are not {len(edges) + 1} shares adding up to 1")
    return problems


class DriftMonitor:
    """The training bins of a model, to judge the current period's bin counts (picklable).

    Args:
        block: the card's ``distribution``.
        features: the model features, in order.
    """

    def __init__(self, block: Mapping, features: Sequence[str]):
        self.features = tuple(features)
        self.edges = {name: tuple(block["features"][name]["edges"]) for name in self.features}
        self.expected = {name: tuple(block["features"][name]["proportions"]) for name in self.features}

    @classmethod
    def from_card(cls, card: Mapping) -> Optional["DriftMonitor"]:
        """The card's monitor; None for a card without a ``distribution`` (trained before it existed)."""
        block = card.get(CARD_KEY)
        if not block or not block.get("features"):
            return None
        return cls(block, card["features"])

    def psi_of_counts(self, counts: Mapping[str, Sequence[int]]) -> dict[str, float]:
        """PSI per feature of the current bin counts (features with no count are left out)."""
        return {name: psi(self.expected[name], counts[name]) for name in self.features
                if name in counts and sum(counts[name]) > 0}

    def psi_of_values(self, X: np.ndarray) -> dict[str, float]:
        """PSI per feature of a current feature matrix (columns in `features` order)."""
        X = np.asarray(X, dtype=float)
        return self.psi_of_counts({name: bin_counts(self.edges[name], X[:, i]) for i, name in enumerate(self.features)})

    def audit_fields(self, counts: Mapping[str, Sequence[int]], rows: int, top: int = AUDIT_TOP) -> dict:
        """The ``run_audit`` drift fields: rows compared, the largest PSI, the `top` features by PSI."""
        if rows <= 0:
            return {"drift_rows": 0, "drift_max_psi": None, "drift": []}
        values = self.psi_of_counts(counts)
        ranked = sorted(values.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
        return {"drift_rows": int(rows), "drift_max_psi": ranked[0][1] if ranked else None,
                "drift": [{"feature": name, "psi": value} for name, value in ranked]}
