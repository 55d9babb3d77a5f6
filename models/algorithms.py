"""The four families of segmentation algorithms, all found and served in one model space.

Each takes the standardised clustering inputs Z (`models.representation`) and returns a
`Clustering`: the linear map from Z to its model space, a fitted scikit-learn predictor
of the segment label there, and the label of every training row. The predictor is what
the artifact serves, so every algorithm is served the same way (`models.clustering`).

* ``kmeans`` (default): Mahalanobis k-means. KMeans and the whitening alternate: cluster,
  estimate the pooled within-segment covariance W of those clusters, whiten by W^-1/2,
  cluster again (`WHITENING_ITERATIONS` rounds). The predictor is the last KMeans.
* ``gmm``: a GaussianMixture with one covariance shared by all components ("tied"), in the
  k-means model space (whitening first only helps its k-means initialisation; a tied
  mixture is itself a Mahalanobis model). Soft membership, assignment by posterior.
* ``hierarchical``: Ward linkage on a fixed-seed sample of at most `HIERARCHY_SAMPLE` rows
  of the k-means model space (Ward is quadratic in memory); served by the nearest of the
  sample segments' centroids (`NearestCentroid`).
* ``density``: HDBSCAN (leaf clusters) on a fixed-seed sample of at most `DENSITY_SAMPLE`
  rows, in the k-means model space projected on its k - 1 leading principal directions (the
  directions that separate segments: in 17 whitened dimensions the behaviour types overlap
  too much for any density to show). It finds the number of segments itself and marks
  points in no dense region as noise: label `UNCLASSIFIED`, served as the "Unclassified"
  segment.
  Served by a `RadiusNeighborsClassifier` fitted on the sample's clustered points: a user
  takes the majority segment of the clustered points within the reach of a dense region
  (the 95th percentile of the clustered points' core distances), and is Unclassified when
  no clustered point is within reach.

All of them run single-threaded (`models.clustering` pins the thread pools), so the fit,
and the artifact bytes, do not depend on the machine.
"""

from __future__ import annotations

import warnings
from typing import Any, NamedTuple

import numpy as np
from sklearn.cluster import HDBSCAN, AgglomerativeClustering, KMeans
from sklearn.decomposition import PCA
from sklearn.mixture import GaussianMixture
from sklearn.neighbors import NearestCentroid, NearestNeighbors, RadiusNeighborsClassifier

from models.representation import block_whitening
from transforms.contracts.feature_spec import ACTIVITY_FEATURES

KMEANS = "kmeans"
GMM = "gmm"
HIERARCHICAL = "hierarchical"
DENSITY = "density"
ALGORITHMS = (KMEANS, GMM, HIERARCHICAL, DENSITY)
UNCLASSIFIED = -1  # the density clustering's noise label

KMEANS_N_INIT = 10
WHITENING_ITERATIONS = 5
GMM_N_INIT = 3
HIERARCHY_SAMPLE = 5000
DENSITY_SAMPLE = 5000
DENSITY_MIN_CLUSTER_SHARE = 0.01  # of the sample: the smallest group HDBSCAN calls a segment
DENSITY_MIN_SAMPLES = 10
DENSITY_REACH_QUANTILE = 0.95


class Clustering(NamedTuple):
    """One fitted clustering."""

    matrix: np.ndarray  # standardised space -> model space (Z @ matrix)
    predictor: Any  # fitted scikit-learn estimator: model-space rows -> labels
    labels: np.ndarray  # the predictor's label of every training row


def fixed_sample(rows: int, size: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded sample of min(size, rows) rows."""
    if rows <= size:
        return np.arange(rows)
    return np.sort(np.random.default_rng(seed).choice(rows, size=size, replace=False))


def mahalanobis_kmeans(Z: np.ndarray, k: int, *, seed: int = 0, activity_weight: float = 0.0,
                       iterations: int = WHITENING_ITERATIONS, n_init: int = KMEANS_N_INIT
                       ) -> tuple[KMeans, np.ndarray]:
    """KMeans alternated with whitening by the clusters' pooled within covariance.

    Returns:
        (the KMeans fitted in the final model space, the map from Z to that space).
        Only the behaviour block is whitened; an activity block after it (the last
        `len(ACTIVITY_FEATURES)` columns, present when `activity_weight` > 0) is multiplied
        by `activity_weight`.
    """
    behaviour = Z.shape[1] - (len(ACTIVITY_FEATURES) if activity_weight > 0 else 0)
    matrix = np.eye(Z.shape[1])
    if Z.shape[1] > behaviour:
        matrix[behaviour:, behaviour:] *= activity_weight
    for _ in range(iterations):
        labels = KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(Z @ matrix).labels_
        matrix = block_whitening(Z, labels, behaviour, activity_weight)
    return KMeans(n_clusters=k, n_init=n_init, random_state=seed).fit(Z @ matrix), matrix


def fit_clustering(Z: np.ndarray, k: int, algorithm: str = KMEANS, *, seed: int = 0,
                   activity_weight: float = 0.0) -> Clustering:
    """Fits `algorithm` on the standardised rows Z.

    Args:
        k: the number of segments (density: sets the projection, k - 1 directions).
        seed: random_state of every estimator and sample.

    Raises:
        ValueError: unknown algorithm, or the density clustering found no segment.
    """
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown algorithm {algorithm!r}; expected one of {ALGORITHMS}")
    kmeans, matrix = mahalanobis_kmeans(Z, k, seed=seed, activity_weight=activity_weight)
    W = Z @ matrix
    if algorithm == KMEANS:
        predictor = kmeans
    elif algorithm == GMM:
        predictor = GaussianMixture(n_components=k, covariance_type="tied", n_init=GMM_N_INIT,
                                    random_state=seed).fit(W)
    elif algorithm == HIERARCHICAL:
        sample = fixed_sample(len(W), HIERARCHY_SAMPLE, seed)
        ward = AgglomerativeClustering(n_clusters=k, linkage="ward").fit(W[sample])
        predictor = NearestCentroid().fit(W[sample], ward.labels_)
    else:
        # The projection is folded into the map: PCA's mean is the training mean of W, which
        # is 0 (standardised rows times a linear map), so projecting is a product too.
        projection = PCA(n_components=max(1, min(k - 1, W.shape[1])), random_state=seed).fit(W)
        matrix = matrix @ projection.components_.T
        W = Z @ matrix
        sample = fixed_sample(len(W), DENSITY_SAMPLE, seed)
        # "leaf": the finest clusters of the hierarchy. The default ("eom") picked 2 clusters
        # at 5,000 users and 7 at 20,000 on the same kind of population; leaf gave 7-8 at both.
        density = HDBSCAN(min_cluster_size=max(5, round(DENSITY_MIN_CLUSTER_SHARE * len(sample))),
                          min_samples=DENSITY_MIN_SAMPLES, cluster_selection_method="leaf", copy=True).fit(W[sample])
        predictor = _serve_density(W, W[sample], density.labels_)
    return Clustering(matrix, predictor, predict_quietly(predictor, W))


def _serve_density(W: np.ndarray, sample: np.ndarray, labels: np.ndarray) -> RadiusNeighborsClassifier:
    """The classifier serving a density clustering of the `sample` rows of W (see the module docstring).

    A dense group that the served vote gives to no training row (outvoted by a neighbouring
    group) cannot be a segment: its points are left out and the vote is taken again.
    """
    labels = np.array(labels, dtype=int)
    while True:
        clustered, groups = sample[labels >= 0], labels[labels >= 0]
        if len(clustered) <= DENSITY_MIN_SAMPLES:
            raise ValueError("the density clustering found no dense group: every user would be Unclassified")
        # The reach of a dense region: how far a clustered point's DENSITY_MIN_SAMPLES-th neighbour
        # lies (its HDBSCAN core distance), for all but the sparsest 5 % of clustered points.
        reach = NearestNeighbors(n_neighbors=DENSITY_MIN_SAMPLES + 1).fit(clustered).kneighbors(clustered)[0][:, -1]
        predictor = RadiusNeighborsClassifier(radius=float(np.quantile(reach, DENSITY_REACH_QUANTILE)),
                                              outlier_label=UNCLASSIFIED).fit(clustered, groups)
        served = set(np.asarray(predict_quietly(predictor, W), dtype=int).tolist())
        unserved = [c for c in np.unique(groups) if c not in served]
        if not unserved:
            return predictor
        labels[np.isin(labels, unserved)] = UNCLASSIFIED


def predict_quietly(predictor: Any, W: np.ndarray) -> np.ndarray:
    """`predictor.predict(W)`; for the density classifier, without the warning that its outlier
    label is not one of the classes it was fitted on (it is not, by design)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Outlier label", category=UserWarning)
        return np.asarray(predictor.predict(W), dtype=int)


def predictor_centres(predictor: Any, W: np.ndarray, labels: np.ndarray, label_set: np.ndarray) -> np.ndarray:
    """Model-space centre of each label in `label_set`: the predictor's own centres where it has
    them (KMeans, GaussianMixture, NearestCentroid: then a row is served to its nearest centre,
    GMM aside), else the mean of the training rows it assigns to the label."""
    if isinstance(predictor, KMeans):
        return np.asarray(predictor.cluster_centers_, dtype=float)[label_set]
    if isinstance(predictor, GaussianMixture):
        return np.asarray(predictor.means_, dtype=float)[label_set]
    if isinstance(predictor, NearestCentroid):
        position = {int(c): i for i, c in enumerate(predictor.classes_)}
        return np.asarray(predictor.centroids_, dtype=float)[[position[int(c)] for c in label_set]]
    # A label no training row got (density's Unclassified, when nothing is noise): the
    # population centre, the origin of the model space.
    return np.array([W[labels == c].mean(axis=0) if (labels == c).any() else np.zeros(W.shape[1])
                     for c in label_set])


def predictor_labels(predictor: Any, k: int) -> np.ndarray:
    """Every label the predictor can give, sorted (density: `UNCLASSIFIED` first, always)."""
    if isinstance(predictor, RadiusNeighborsClassifier):
        return np.array(sorted({UNCLASSIFIED} | {int(c) for c in predictor.classes_}))
    classes = getattr(predictor, "classes_", None)
    return np.sort(np.asarray(classes, dtype=int)) if classes is not None else np.arange(k)
