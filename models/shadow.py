"""Shadow scoring: the same users' feature values through the current model and a candidate.

Pure numpy / scikit-learn. `compare` assigns every row with both models and says which
rows the candidate would move (another segment id: what downstream systems key on), and,
for each move, the features driving it.

Drivers of a move from the current segment A to the candidate's segment B, in the
candidate's standardised space with its metric M (`models.explain` measures a change of
segment within one model the same way), with z the user's features, b the candidate's
centre of B and a the current segment's centroid (the mean of its training users' records,
from the current card) mapped through the candidate's standardisation
(`clustering.contributions`)::

    contribution_j = (z - a)_j (M (z - a))_j - (z - b)_j (M (z - b))_j

positive when input j puts the user nearer the candidate's segment than the centroid of
the one they are in now. The `top` largest are kept, with the user's value and both
segments' centroids (the cards') in original units.

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
    """Segment ids and names in the order of the model's labels."""
    segments = sorted(model.card["segments"], key=lambda s: int(s["cluster_index"]))
    return np.array([int(s["segment_id"]) for s in segments]), [str(s["name"]) for s in segments]


def _scored(model: LoadedModel, X: np.ndarray) -> tuple[np.ndarray, Scored]:
    """(position of each row's label in the model's labels, the segments)."""
    position = np.searchsorted(model.model.labels, model.model.predict(X))
    ids, names = _segments_by_label(model)
    return position, Scored(ids[position], [names[i] for i in position.tolist()])


def _centroids(model: LoadedModel) -> np.ndarray:
    """Each segment's centroid from the card (original units, every model feature), in label order."""
    segments = sorted(model.card["segments"], key=lambda s: int(s["cluster_index"]))
    return np.array([[float(s["centroid"][name]) for name in model.features] for s in segments])


def compare(current: LoadedModel, candidate: LoadedModel, X: np.ndarray, top: int = DEFAULT_TOP) -> Comparison:
    """Both models' segments for the rows of X (columns in the models' feature order), and what drives each move.

    Raises:
        ValueError: the two models read different features.
    """
    if tuple(current.features) != tuple(candidate.features):
        raise ValueError("the candidate model reads other features than the current one: they cannot score the "
                         "same rows")
    X = np.asarray(X, dtype=float)
    current_at, now = _scored(current, X)
    candidate_at, then = _scored(candidate, X)
    moved = np.asarray(now.segment_id != then.segment_id)
    drivers: list[list[dict]] = [[] for _ in range(len(X))]
    rows = np.flatnonzero(moved)
    if rows.size:
        model = candidate.model
        current_centroids, candidate_centroids = _centroids(current), _centroids(candidate)
        z = model.standardised(X[rows])
        a = model.standardised(current_centroids[current_at[rows]])
        b = model.standardised_centers[candidate_at[rows]]
        contributions = clustering.contributions(model.metric, z, a, b)
        explained = model.features
        column = {name: i for i, name in enumerate(candidate.features)}
        for k, row in enumerate(rows):
            order = sorted(range(len(explained)), key=lambda j: (-contributions[k, j], explained[j]))[:top]
            drivers[row] = [{
                "feature": explained[j],
                "value": float(X[row, column[explained[j]]]),
                "current_centroid": float(current_centroids[current_at[row], column[explained[j]]]),
                "candidate_centroid": float(candidate_centroids[candidate_at[row], column[explained[j]]]),
                "contribution": float(contributions[k, j]),
            } for j in order]
    return Comparison(now, then, moved, drivers)


def feature_matrix(records: Sequence[dict], features: Sequence[str]) -> np.ndarray:
    """Rows of feature dicts -> the matrix in `features` order."""
    return np.array([[float(r[name]) for name in features] for r in records], dtype=float).reshape(-1, len(features))
