"""Segments: fitting, the served model, segment ids and names, stable ids across retrains.

Pure numpy / scikit-learn (no Beam): `models.training` calls `fit_segments` and
`build_segments` on the training matrix; the artifact (`models.artifact`) stores the
`SegmentModel` and serves it with `SegmentModel.assign`.

Fitting (`fit_segments`): the representation (`models.representation`) is fitted on the
training rows, the number of segments is chosen (`models.k_selection`, or given), the
algorithm (`models.algorithms`) is fitted, and its whitening is set into the
representation. The result is one `SegmentModel` whatever the algorithm: the
representation pipeline, the fitted predictor and the centre of each label in the model
space, so every algorithm is served, and measured, the same way.

Segment ids and names
---------------------
A fresh model numbers its segments 0..n-1 by decreasing size (the density clustering's
Unclassified segment included). Names and descriptions come from `models.naming`.

Each segment's `centroid` in the card is the mean of its training rows' record values,
for every model feature (original units). When a previous model is given
(`match_previous`), its centroids and the new ones are both mapped into the NEW model's
space and matched by optimal assignment (Hungarian method). A pair is kept only when the
previous centroid lies within half the distance from the new centroid to its nearest new
neighbour: by the triangle inequality that previous centroid is then strictly closer to
its partner than to any other new centroid. Kept pairs inherit the previous id and name;
other new segments get fresh ids (max previous id + 1, ...). An Unclassified segment keeps
the previous Unclassified segment's id.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

from models import algorithms, k_selection, naming
from models.algorithms import DENSITY, KMEANS, UNCLASSIFIED
from models.k_selection import KScore
from models.representation import clustering_columns, representation_pipeline
from transforms.contracts.feature_spec import MODEL_FEATURES

ALGORITHMS = algorithms.ALGORITHMS
DEFAULT_K_RANGE = k_selection.DEFAULT_K_RANGE
DEFAULT_SILHOUETTE_SAMPLE = k_selection.DEFAULT_SILHOUETTE_SAMPLE


class SegmentModel:
    """What `model.joblib` holds: record vectors in, segment labels, distances and margins out.

    Attributes:
        representation: fitted pipeline from a `MODEL_FEATURES` vector to the model space
            (`models.representation`: shrink, select, log1p, scale, whiten).
        predictor: the fitted scikit-learn estimator of the label in the model space.
        labels: every label the predictor can give, sorted.
        centers: model-space centre of each label (rows follow `labels`).
        features: the clustering inputs (the standardised space's columns), in order.
    """

    def __init__(self, representation: Pipeline, predictor: Any, labels: np.ndarray, centers: np.ndarray,
                 features: Sequence[str]):
        self.representation = representation
        self.predictor = predictor
        self.labels = np.asarray(labels, dtype=int)
        self.centers = np.asarray(centers, dtype=float)
        self.features = tuple(features)

    @property
    def n_features_in_(self) -> int:
        """How many features a row must have (`MODEL_FEATURES` when trained by `fit_segments`)."""
        return int(self.representation.n_features_in_)

    def standardised(self, X: np.ndarray) -> np.ndarray:
        """Rows in the standardised space (before the whitening): one column per clustering input."""
        return np.asarray(self.representation[:-1].transform(np.asarray(X, dtype=float)), dtype=float)

    @property
    def matrix(self) -> np.ndarray:
        """The map from the standardised space to the model space."""
        return np.asarray(self.representation[-1].matrix, dtype=float)

    @property
    def metric(self) -> np.ndarray:
        """M with d(x, y)^2 = (x - y)^T M (x - y) in the standardised space: the model space's
        Euclidean distance, read in the clustering inputs' own coordinates."""
        return self.matrix @ self.matrix.T

    def model_space(self, X: np.ndarray) -> np.ndarray:
        return self.standardised(X) @ self.matrix

    @property
    def standardised_centers(self) -> np.ndarray:
        """Each label's centre in the standardised space (rows follow `labels`): the model-space
        centre mapped back through the whitening's pseudo-inverse (the whitening has full
        column rank, so mapping these forward again gives the model-space centres exactly)."""
        return self.centers @ np.linalg.pinv(self.matrix)

    def predict(self, X: np.ndarray) -> np.ndarray:
        """The label of each row of X (what `assign` returns first)."""
        return algorithms.predict_quietly(self.predictor, self.model_space(X))

    def to_original(self, Z: np.ndarray) -> np.ndarray:
        """Standardised rows back to the clustering inputs' units (inverse scaling, then expm1
        on the log1p columns; rates stay shrunk)."""
        return self.representation[2:4].inverse_transform(np.asarray(Z, dtype=float))

    def assign(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(label, distance to its centre, margin) of each row of X, in the model space.

        The margin is the distance to the nearest OTHER centre minus the distance to the
        assigned one: >= 0 for k-means and hierarchical (served to the nearest centre),
        possibly negative for a mixture (assigned by posterior) and density (by neighbours).
        """
        W = self.model_space(X)
        labels = algorithms.predict_quietly(self.predictor, W)
        d = cdist(W, self.centers)
        rows = np.arange(len(W))
        assigned = d[rows, np.searchsorted(self.labels, labels)]
        others = d.copy()
        others[rows, np.searchsorted(self.labels, labels)] = np.inf
        margin = others.min(axis=1) - assigned if d.shape[1] > 1 else np.full(len(W), np.inf)
        return labels, assigned, margin


def contributions(metric: np.ndarray, z: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per feature, how much it pulls each row z nearer B than A, in the standardised space.

    With the model's metric M (d(x, y)^2 = (x - y)^T M (x - y), `SegmentModel.metric`)::

        contribution_j = (z - a)_j (M (z - a))_j - (z - b)_j (M (z - b))_j

    They add up, over the features, to d(z, A)^2 - d(z, B)^2: positive totals mean the row
    is nearer B. Rows of z, a and b are matched; a 1-d argument is one row.
    """
    z, a, b = (np.atleast_2d(np.asarray(v, dtype=float)) for v in (z, a, b))
    to_a, to_b = z - a, z - b
    return to_a * (to_a @ metric) - to_b * (to_b @ metric)


class Fit(NamedTuple):
    model: SegmentModel
    k: int  # the k chosen or given (density: the k of its model space)
    k_scores: dict[int, KScore]
    quality: KScore  # of the fitted model
    labels: np.ndarray  # label of every training row
    Z: np.ndarray  # training rows in the standardised space


def fit_segments(X: np.ndarray, *, algorithm: str = KMEANS, k: int | None = None,
                 k_range: tuple[int, int] = DEFAULT_K_RANGE, seed: int = 0, activity_weight: float = 0.0,
                 sample_size: int = DEFAULT_SILHOUETTE_SAMPLE,
                 stability_rounds: int = k_selection.STABILITY_ROUNDS, unused: Sequence[str] = ()) -> Fit:
    """Fits the representation, chooses k (unless given) and fits `algorithm`.

    The density algorithm finds its number of segments itself; its model space is the
    k-means one at the chosen (or given) k.

    Runs single-threaded (OpenMP / BLAS): the reductions then happen in one fixed order,
    so the fit (and the artifact bytes) cannot depend on the machine's core count.

    Raises:
        ValueError: bad k or k range, too few rows, unknown algorithm.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; expected one of {ALGORITHMS}")
    ks = [k] if k is not None else list(range(k_range[0], k_range[1] + 1))
    if min(ks, default=0) < 2 or (k is None and k_range[1] < k_range[0]):
        raise ValueError(f"k must be at least 2 and k_range must satisfy 2 <= low <= high, got "
                         f"{k if k is not None else k_range}")
    X = np.asarray(X, dtype=float)
    if len(X) <= 2 * max(ks):
        raise ValueError(f"{len(X)} training rows cannot support k up to {max(ks)}")
    with threadpool_limits(limits=1):
        representation = representation_pipeline(activity_weight, unused=unused)
        Z = np.asarray(representation[:-1].fit_transform(X), dtype=float)
        options = dict(seed=seed, activity_weight=activity_weight)
        chosen, scores, fit = k_selection.select_k(Z, ks, KMEANS if algorithm == DENSITY else algorithm,
                                                   sample_size=sample_size, rounds=stability_rounds, **options)
        quality = scores[chosen]
        if algorithm == DENSITY:
            fit = algorithms.fit_clustering(Z, chosen, DENSITY, **options)
            quality = k_selection.score(Z @ fit.matrix, Z, fit, chosen, DENSITY, sample_size=sample_size,
                                        rounds=stability_rounds, **options)
        representation.set_params(whiten__matrix=fit.matrix)
        representation[-1].fit(Z)
        labels = algorithms.predictor_labels(fit.predictor, chosen)
        empty = sorted(set(labels.tolist()) - set(fit.labels.tolist()) - {UNCLASSIFIED})
        if empty:
            raise ValueError(f"{algorithm} leaves segment label(s) {empty} without any training user; "
                             f"try another --k or --random_state")
        centers = algorithms.predictor_centres(fit.predictor, Z @ fit.matrix, fit.labels, labels)
        model = SegmentModel(representation, fit.predictor, labels, centers,
                             clustering_columns(activity_weight, unused))
    return Fit(model, chosen, scores, quality, fit.labels, Z)


# --- segments and stable ids -------------------------------------------------

class Segment(NamedTuple):
    segment_id: int
    cluster_index: int  # the predictor's label
    name: str
    description: str
    centroid: dict[str, float]  # mean of the training rows, original units, every model feature
    size_share: float
    distinguishing_features: list[dict]  # models.naming.distinguishing
    standardised_centroid: dict[str, float]  # every clustering input's standardised difference (z)


class IdMapping(NamedTuple):
    pairs: list[dict]  # {segment_id, previous_segment_id|None, distance|None, threshold}
    new_ids: list[int]
    retired_ids: list[int]

    def as_card(self, previous_model_version: str | None) -> dict:
        return {"previous_model_version": previous_model_version, "pairs": self.pairs,
                "new_segment_ids": self.new_ids, "retired_segment_ids": self.retired_ids}


def _centroid_vector(centroid: Mapping[str, float], features: Sequence[str] = MODEL_FEATURES) -> list[float]:
    return [float(centroid[name]) for name in features]


def match_previous(model: SegmentModel, centroids: np.ndarray, previous_segments: Sequence[Mapping],
                   features: Sequence[str] = MODEL_FEATURES) -> dict[int, tuple[Mapping, float, float]]:
    """Optimal assignment of the new segments to previous ones, in the new model's space.

    Args:
        model: the new model.
        centroids: the new segments' centroids (original units), rows follow `model.labels`.
        previous_segments: the previous card's `segments` (centroids in original units).

    Returns:
        {new label: (previous segment, distance, threshold)} for the accepted pairs only
        (distance < threshold; see the module docstring). Unclassified pairs with
        Unclassified, outside the assignment.
    """
    matched: dict[int, tuple[Mapping, float, float]] = {}
    behaviour = [i for i, label in enumerate(model.labels) if label != UNCLASSIFIED]
    previous = [s for s in previous_segments if s["name"] != naming.UNCLASSIFIED]
    previous_noise = [s for s in previous_segments if s["name"] == naming.UNCLASSIFIED]
    if previous_noise and UNCLASSIFIED in model.labels:
        matched[UNCLASSIFIED] = (previous_noise[0], 0.0, 0.0)
    if not previous or len(behaviour) < 2:
        return matched
    new = model.model_space(centroids[behaviour])
    old = model.model_space(np.array([_centroid_vector(s["centroid"], features) for s in previous]))
    cost = cdist(new, old)
    between = cdist(new, new)
    np.fill_diagonal(between, np.inf)
    thresholds = 0.5 * between.min(axis=1)
    rows, cols = linear_sum_assignment(cost)
    for i, j in zip(rows, cols):
        if cost[i, j] < thresholds[i]:
            matched[int(model.labels[behaviour[i]])] = (previous[j], float(cost[i, j]), float(thresholds[i]))
    return matched


def _clean(values: np.ndarray) -> np.ndarray:
    """Round-off (expm1 of a log-mean of zeros is 1e-14, not 0) to 0, so descriptions read 0."""
    values = np.asarray(values, dtype=float)
    return np.where(np.abs(values) < 1e-9, 0.0, values)


def segment_profiles(fit: Fit, X: np.ndarray, features: Sequence[str] = MODEL_FEATURES) -> list[naming.Profile]:
    """How each label's training users differ from the population (`models.naming.Profile`)."""
    model = fit.model
    population = model.to_original(np.zeros((1, fit.Z.shape[1])))[0]
    spend = np.asarray(X, dtype=float)[:, list(features).index("spend_total")]
    events = np.asarray(X, dtype=float)[:, list(features).index("lifetime_events")]
    mean_spend = float(spend.mean())
    profiles = []
    for label in model.labels:
        members = fit.labels == label
        z = fit.Z[members].mean(axis=0) if members.any() else np.zeros(fit.Z.shape[1])
        value = model.to_original(z[None, :])[0]
        ratio = float(spend[members].mean()) / mean_spend if members.any() and mean_spend > 0 else 0.0
        history = (float(np.median(events[members])), float(np.median(events))) if members.any() else None
        profiles.append(naming.Profile(dict(zip(model.features, map(float, z))),
                                       dict(zip(model.features, map(float, _clean(value)))),
                                       dict(zip(model.features, map(float, _clean(population)))), ratio, history))
    return profiles


def build_segments(fit: Fit, X: np.ndarray, *, previous_segments: Sequence[Mapping] | None = None,
                   features: Sequence[str] = MODEL_FEATURES) -> tuple[list[Segment], IdMapping | None]:
    """Ids, names, descriptions, centroids, size shares and distinguishing features of the segments.

    Returns:
        (segments ordered by segment_id, the id mapping or None without a previous model).
    """
    X = np.asarray(X, dtype=float)
    model = fit.model
    labels = [int(label) for label in model.labels]
    counts = np.array([(fit.labels == label).sum() for label in labels])
    shares = counts / counts.sum()
    # An Unclassified segment without training users (nothing was noise) gets the population's mean.
    centroids = np.array([X[fit.labels == label].mean(axis=0) if counts[i] else X.mean(axis=0)
                          for i, label in enumerate(labels)])
    profiles = segment_profiles(fit, X, features)
    matched = match_previous(model, centroids, previous_segments or (), features) if previous_segments else {}

    behaviour = [i for i, label in enumerate(labels) if label != UNCLASSIFIED]
    inherited = {pos: str(matched[labels[i]][0]["name"]) for pos, i in enumerate(behaviour) if labels[i] in matched}
    named = naming.name_segments([profiles[i] for i in behaviour], taken=inherited)
    name_of = {labels[i]: named[pos] for pos, i in enumerate(behaviour)}
    if UNCLASSIFIED in labels:
        name_of[UNCLASSIFIED] = (naming.UNCLASSIFIED, naming.UNCLASSIFIED_DESCRIPTION)

    ids = {label: int(prev["segment_id"]) for label, (prev, _, _) in matched.items()}
    next_id = (max(int(s["segment_id"]) for s in previous_segments) + 1) if previous_segments else 0
    # Fresh ids: larger segments first, then by centroid (deterministic).
    fresh = sorted((i for i, label in enumerate(labels) if label not in matched),
                   key=lambda i: (-counts[i], tuple(np.round(centroids[i], 9))))
    for i in fresh:
        ids[labels[i]] = next_id
        next_id += 1

    segments = sorted(
        (Segment(ids[label], label, name_of[label][0], name_of[label][1],
                 {name: float(v) for name, v in zip(features, centroids[i])}, float(shares[i]),
                 [] if label == UNCLASSIFIED else naming.distinguishing(profiles[i]),
                 {name: float(z) for name, z in profiles[i].z.items()})
         for i, label in enumerate(labels)),
        key=lambda s: s.segment_id)
    if not previous_segments:
        return segments, None
    pairs = []
    for seg in segments:
        hit = matched.get(seg.cluster_index)
        pairs.append({"segment_id": seg.segment_id,
                      "previous_segment_id": int(hit[0]["segment_id"]) if hit else None,
                      "distance": hit[1] if hit else None,
                      "threshold": hit[2] if hit else None})
    kept = {int(p["segment_id"]) for p, _, _ in matched.values()}
    mapping = IdMapping(pairs, [s.segment_id for s in segments if s.cluster_index not in matched],
                        sorted(int(s["segment_id"]) for s in previous_segments if int(s["segment_id"]) not in kept))
    return segments, mapping


def strip_for_serving(model: SegmentModel) -> SegmentModel:
    """Drops training-only state so the artifact is small and machine-independent.

    * `labels_` (one int per training row) is not needed to predict;
    * KMeans records the OpenMP thread count of the training machine in `_n_threads` and
      pickles it; pinning 1 makes the artifact bytes the same on any machine, and one
      thread per predict call is what a Beam worker (which parallelises across bundles)
      wants anyway.
    """
    predictor = model.predictor
    if hasattr(predictor, "labels_"):
        del predictor.labels_
    if hasattr(predictor, "_n_threads"):
        predictor._n_threads = 1
    return model
