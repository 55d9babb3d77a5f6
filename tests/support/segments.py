"""Synthetic training matrices with known behaviour groups, built feature by feature.

Rows are `MODEL_FEATURES` vectors in original units. Each group has a centre on the
clustering inputs (`CLUSTERING_FEATURES`): heavy-tailed ones (per-session counts,
durations, basket) are drawn in log1p units, the others (shares, rates, entropy) in raw
units; rows scatter around it with a small spread. Evidence is large (200 sessions, 2,000
events, 100 cart sessions, 100 e-mail opens, 50 orders), so the shrinkage moves a rate by
at most about 1 % towards the population's. Every other feature is drawn the same way for
all groups, so it carries no group information.
"""

from __future__ import annotations

import numpy as np

from models.representation import CLUSTERING_FEATURES
from transforms.contracts.feature_spec import EVIDENCE_FEATURES, MODEL_FEATURES, SKEWED_FEATURES

F = len(MODEL_FEATURES)
INDEX = {name: i for i, name in enumerate(MODEL_FEATURES)}
CLUSTERING = np.array([INDEX[name] for name in CLUSTERING_FEATURES])
LOGGED = np.array([name in SKEWED_FEATURES for name in CLUSTERING_FEATURES])
EVIDENCE = {"lifetime_sessions": 200.0, "lifetime_events": 2000.0, "lifetime_cart_sessions": 100.0,
            "lifetime_email_opens": 100.0, "orders": 50.0}


def group_centres(groups: int, seed: int = 0) -> np.ndarray:
    """(groups, len(CLUSTERING_FEATURES)) centres: log1p units where logged, raw elsewhere."""
    rng = np.random.default_rng(seed)
    return np.where(LOGGED, rng.uniform(0.5, 3.0, (groups, len(CLUSTERING_FEATURES))),
                    rng.uniform(0.1, 0.9, (groups, len(CLUSTERING_FEATURES))))


def population(centres: np.ndarray, sizes, seed: int, spread: float = 0.04) -> tuple[np.ndarray, np.ndarray]:
    """(X in original units, group of each row): `sizes[g]` rows around centre g."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(len(centres)), sizes)
    n = len(truth)
    X = np.empty((n, F))
    X[:] = rng.uniform(0.5, 20.0, (n, F))  # features outside the clustering: no group information
    work = centres[truth] + rng.normal(0.0, spread, (n, len(CLUSTERING_FEATURES))) * np.where(LOGGED, 2.0, 1.0)
    X[:, CLUSTERING] = np.where(LOGGED, np.expm1(np.maximum(work, 0.0)), np.clip(work, 0.0, None))
    for name, value in EVIDENCE.items():
        X[:, INDEX[name]] = value
    assert set(EVIDENCE) >= set(EVIDENCE_FEATURES)
    return X, truth


def cluster_means(X: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return np.array([X[labels == g].mean(axis=0) for g in np.unique(labels)])
