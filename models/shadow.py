"""Shadow scoring: the same users' feature values through the current model and a candidate.

Pure numpy / scikit-learn. `compare` assigns every row with both models and says which
rows the candidate would move (another segment id: what downstream systems key on), and,
for each move, the features driving it.

Drivers of a move from the current segment A to the candidate's segment B: in the
candidate's scaled space (`models.clustering`), with z the user's features, b the centre
of B and a the centre of A (A's centre in original units, mapped through the candidate's
scaling)::

    contribution_j = (z_j - a_j)^2 - (z_j - b_j)^2

positive when feature j puts the user nearer the candidate's segment than the centre of
the one they are in now, the measure `models.explain` uses for a change of segment within
one model. The `top` largest are kept, with the user's value and both centres in original
units.

Example::

    result = compare(load_artifact("models/default"), load_artifact("models/candidate"), X)
    result.moved.mean()   # the share of users the candidate would move
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from models import clustering
from models.artifact import LoadedModel

DEFAULT_TOP = 3


class Scored(NamedTuple):
    """One model's assignment of the rows."""

    segment_id: np.ndarray
    segment_name: list[str]


class Comparison(NamedTuple):
    """`compare`'s result, one entry per row."""

    current: Scored
    candidate: Scored
    moved: np.ndarray  # bool: the candidate gives another segment id
    drivers: list[list[dict]]  # per row: [{feature, value, current_centroid, candidate_centroid, contribution}]; [] unless moved


def _segments_by_label(model: LoadedModel) -> tuple[np.ndarray, list[str]]:
    segments = sorted(model.card["segments"], key=lambda s: int(s["cluster_index"]))
    return np.array([int(s["segment_id"]) for s in segments]), [str(s["name"]) for s in segments]


def _scored(model: LoadedModel, X: np.ndarray) -> tuple[np.ndarray, Scored]:
    labels, _, _ = clustering.scaled_distances(model.pipeline, X)
    ids, names = _segments_by_label(model)
    return labels, Scored(ids[labels], [names[i] for i in labels])


def compare(current: LoadedModel, candidate: LoadedModel, X: np.ndarray, top: int = DEFAULT_TOP) -> Comparison:
    """Both models' segments for the rows of X (columns in the models' feature order), and what drives each move.

    Raises:
        ValueError: the two models read different features.
    """
    if tuple(current.features) != tuple(candidate.features):
        raise ValueError("the candidate model reads other features than the current one: they cannot score the "
                         "same rows")
    X = np.asarray(X, dtype=float)
    current_labels, now = _scored(current, X)
    candidate_labels, then = _scored(candidate, X)
    moved = np.asarray(now.segment_id != then.segment_id)
    drivers: list[list[dict]] = [[] for _ in range(len(X))]
    rows = np.flatnonzero(moved)
    if rows.size:
        current_original = clustering.to_original(current.pipeline, clustering.scaled_centers(current.pipeline))
        candidate_scaled = clustering.scaled_centers(candidate.pipeline)
        candidate_original = clustering.to_original(candidate.pipeline, candidate_scaled)
        z = clustering.to_scaled(candidate.pipeline, X[rows])
        a = clustering.to_scaled(candidate.pipeline, current_original[current_labels[rows]])
        b = candidate_scaled[candidate_labels[rows]]
        contributions = (z - a) ** 2 - (z - b) ** 2
        features = current.features
        for k, row in enumerate(rows):
            order = sorted(range(len(features)), key=lambda j: (-contributions[k, j], features[j]))[:top]
            drivers[row] = [{
                "feature": features[j],
                "value": float(X[row, j]),
                "current_centroid": float(current_original[current_labels[row], j]),
                "candidate_centroid": float(candidate_original[candidate_labels[row], j]),
                "contribution": float(contributions[k, j]),
            } for j in order]
    return Comparison(now, then, moved, drivers)


def move_counts(comparison: Comparison) -> dict[tuple[int, int], int]:
    """(current segment id, candidate segment id) -> users moved that way."""
    counts: dict[tuple[int, int], int] = {}
    for row in np.flatnonzero(comparison.moved):
        key = (int(comparison.current.segment_id[row]), int(comparison.candidate.segment_id[row]))
        counts[key] = counts.get(key, 0) + 1
    return counts


def feature_matrix(records: Sequence[dict], features: Sequence[str]) -> np.ndarray:
    """Rows of feature dicts -> the matrix in `features` order."""
    return np.array([[float(r[name]) for name in features] for r in records], dtype=float).reshape(-1, len(features))
