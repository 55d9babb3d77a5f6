"""Behavioural clustering: the scikit-learn pipeline, the choice of k, segment names, stable ids.

Pure numpy / scikit-learn (no Beam): `models.training` calls it on the training
matrix, `models.artifact.LoadedModel` uses `scaled_distances` at serving.

The fitted pipeline is::

    log1p on SKEWED_FEATURES columns -> StandardScaler -> KMeans (default) | GaussianMixture

All distances ("scaled space") are Euclidean after the first two steps: every
feature is a standardised (log-)value, so one unit is one population standard
deviation.

Segment ids and names
---------------------
A fresh model numbers its clusters 0..k-1 by decreasing size. Names come from
the centroid: the rules in `_NAME_RULES` look at the centroid's scaled
coordinates (z = how many population standard deviations the centroid's
(log-)value lies above the population mean) and, for bargain hunting, at the
centroid's basket value against the median basket of purchasers. The
description quotes the most distinctive features in original units against
the population medians.

When a previous model is given (`match_previous`), its centroids (stored in
original units) are mapped into the NEW model's scaled space and matched to the
new centroids by optimal assignment (Hungarian method). A pair is kept only when
the previous centroid lies within half the distance from the new centroid to
its nearest new neighbour: by the triangle inequality that previous centroid is
then strictly closer to its partner than to any other new centroid, i.e. the new
model itself would put the previous cluster's centre into the partner cluster.
Kept pairs inherit the previous id and name; other new clusters get fresh ids
(max previous id + 1, ...).
"""

from __future__ import annotations

from typing import Mapping, NamedTuple, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.spatial.distance import cdist
from sklearn.cluster import KMeans
from sklearn.metrics import davies_bouldin_score, silhouette_score
from sklearn.mixture import GaussianMixture
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from threadpoolctl import threadpool_limits

from transforms.contracts.feature_spec import MODEL_FEATURES, SKEWED_FEATURES

KMEANS = "kmeans"
GMM = "gmm"
ALGORITHMS = (KMEANS, GMM)
KMEANS_N_INIT = 10
GMM_N_INIT = 3
DEFAULT_K_RANGE = (4, 10)
DEFAULT_SILHOUETTE_SAMPLE = 5000


# --- preprocessing -----------------------------------------------------------

def log1p_columns(X: np.ndarray, columns: Sequence[int] = ()) -> np.ndarray:
    """log1p on the given columns, identity elsewhere (module-level: picklable)."""
    out = np.array(X, dtype=float, copy=True)
    idx = list(columns)
    if idx:
        out[:, idx] = np.log1p(out[:, idx])
    return out


def expm1_columns(X: np.ndarray, columns: Sequence[int] = ()) -> np.ndarray:
    """The inverse of `log1p_columns`."""
    out = np.array(X, dtype=float, copy=True)
    idx = list(columns)
    if idx:
        out[:, idx] = np.expm1(out[:, idx])
    return out


def skewed_columns(features: Sequence[str] = MODEL_FEATURES) -> list[int]:
    return [i for i, name in enumerate(features) if name in SKEWED_FEATURES]


def build_pipeline(k: int, *, algorithm: str = KMEANS, seed: int = 0,
                   features: Sequence[str] = MODEL_FEATURES) -> Pipeline:
    """The unfitted model: log1p (skewed columns) -> StandardScaler -> KMeans | GaussianMixture."""
    cols = skewed_columns(features)
    # validate=True rejects NaN / inf: a broken row fails loudly (and is
    # dead-lettered at serving) instead of being silently assigned.
    log1p = FunctionTransformer(log1p_columns, inverse_func=expm1_columns, validate=True,
                                kw_args={"columns": cols}, inv_kw_args={"columns": cols})
    if algorithm == KMEANS:
        model = KMeans(n_clusters=k, n_init=KMEANS_N_INIT, random_state=seed)
    elif algorithm == GMM:
        model = GaussianMixture(n_components=k, covariance_type="full", n_init=GMM_N_INIT, random_state=seed)
    else:
        raise ValueError(f"unknown algorithm {algorithm!r}; expected one of {ALGORITHMS}")
    return Pipeline([("log1p", log1p), ("scale", StandardScaler()), ("cluster", model)])


def scaled_centers(pipeline: Pipeline) -> np.ndarray:
    """The cluster centres in scaled space, indexed by the estimator's cluster label."""
    model = pipeline[-1]
    return np.asarray(model.cluster_centers_ if isinstance(model, KMeans) else model.means_, dtype=float)


def to_scaled(pipeline: Pipeline, X: np.ndarray) -> np.ndarray:
    return np.asarray(pipeline[:-1].transform(np.asarray(X, dtype=float)), dtype=float)


def to_original(pipeline: Pipeline, Z: np.ndarray) -> np.ndarray:
    """Scaled space -> original units (inverse scaling, then expm1 on skewed columns)."""
    return pipeline[:-1].inverse_transform(np.asarray(Z, dtype=float))


def scaled_distances(pipeline: Pipeline, X: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and distances of rows of X.

    Returns:
        (labels, distance to the assigned centre, margin) where margin is the
        distance to the nearest OTHER centre minus the distance to the assigned
        one. For KMeans the assigned centre is the nearest, so margin >= 0; a
        GaussianMixture assigns by posterior, so its margin can be negative.
    """
    Z = to_scaled(pipeline, X)
    labels = np.asarray(pipeline[-1].predict(Z), dtype=int)
    d = cdist(Z, scaled_centers(pipeline))
    rows = np.arange(len(Z))
    assigned = d[rows, labels]
    others = d.copy()
    others[rows, labels] = np.inf
    margin = others.min(axis=1) - assigned if d.shape[1] > 1 else np.full(len(Z), np.inf)
    return labels, assigned, margin


# --- choice of k -------------------------------------------------------------

class KScore(NamedTuple):
    silhouette: float
    davies_bouldin: float


class Fit(NamedTuple):
    pipeline: Pipeline
    k: int
    k_scores: dict[int, KScore]
    labels: np.ndarray  # estimator label per training row


def fit_select_k(X: np.ndarray, *, k_range: tuple[int, int] = DEFAULT_K_RANGE, algorithm: str = KMEANS,
                 seed: int = 0, sample_size: int = DEFAULT_SILHOUETTE_SAMPLE,
                 features: Sequence[str] = MODEL_FEATURES) -> Fit:
    """Fits one model per k in [k_range[0], k_range[1]] and keeps the best silhouette.

    The silhouette is computed on a fixed-seed sample of at most `sample_size`
    rows (it is quadratic in rows); Davies-Bouldin (linear) on all rows. Ties go
    to the smaller k.

    Runs single-threaded (OpenMP / BLAS): the reductions then happen in one fixed
    order, so the fit (and the artifact bytes) cannot depend on the machine's
    core count, and a busy shared machine does not make OpenMP spin. The
    training data (one row per user) is small enough for this.
    """
    with threadpool_limits(limits=1):
        return _fit_select_k(X, k_range=k_range, algorithm=algorithm, seed=seed, sample_size=sample_size,
                             features=features)


def _fit_select_k(X, *, k_range, algorithm, seed, sample_size, features) -> Fit:
    X = np.asarray(X, dtype=float)
    lo, hi = k_range
    if lo < 2 or hi < lo:
        raise ValueError(f"k_range must satisfy 2 <= low <= high, got {k_range}")
    if len(X) <= hi:
        raise ValueError(f"{len(X)} training rows cannot support k up to {hi}")
    rng = np.random.default_rng(seed)
    sample = np.sort(rng.choice(len(X), size=min(sample_size, len(X)), replace=False))
    best: Fit | None = None
    scores: dict[int, KScore] = {}
    for k in range(lo, hi + 1):
        pipeline = build_pipeline(k, algorithm=algorithm, seed=seed, features=features).fit(X)
        Z = to_scaled(pipeline, X)
        labels = np.asarray(pipeline[-1].predict(Z), dtype=int)
        if len(np.unique(labels)) < 2 or len(np.unique(labels[sample])) < 2:
            continue  # degenerate: scores undefined
        score = KScore(float(silhouette_score(Z[sample], labels[sample])), float(davies_bouldin_score(Z, labels)))
        scores[k] = score
        if best is None or score.silhouette > scores[best.k].silhouette:
            best = Fit(pipeline, k, scores, labels)
    if best is None:
        raise ValueError("no k in range produced at least two clusters")
    return best._replace(k_scores=scores)


# --- names -------------------------------------------------------------------

class Segment(NamedTuple):
    segment_id: int
    cluster_index: int  # the estimator's label
    name: str
    description: str
    centroid: dict[str, float]  # original units
    size_share: float


def _z(zc: Mapping[str, float], name: str) -> float:
    return float(zc.get(name, 0.0))


def _bargain(zc, centroid, stats) -> bool:
    return (_z(zc, "orders") >= 0.25
            and centroid.get("avg_order_value", np.inf) <= stats.get("customer_median_avg_order_value", -np.inf))


# (name, phrase, rule(z-centroid, original centroid, population stats)); first match wins.
_NAME_RULES = (
    ("Lapsed", "were active, have not been seen for a long time",
     lambda z, c, s: _z(z, "days_since_last_event") >= 0.75 and _z(z, "active_days_30d") <= -0.5),
    ("High-value loyal", "frequent buyers with high total spend",
     lambda z, c, s: _z(z, "spend_total") >= 0.75 and _z(z, "orders") >= 0.5),
    ("Cart abandoners", "fill carts but rarely complete checkout",
     lambda z, c, s: _z(z, "cart_adds_per_session") >= 0.5 and _z(z, "cart_abandonment_rate") >= 0.5
     and _z(z, "orders") < 0.5),
    ("Bargain hunters", "buy repeatedly with small baskets", _bargain),
    ("Email-engaged", "open and click e-mails but visit little on their own",
     lambda z, c, s: _z(z, "email_opens_30d") >= 0.75 and _z(z, "sessions_30d") < 0.5),
    ("New visitors", "recently acquired, short tenure",
     lambda z, c, s: _z(z, "tenure_days") <= -0.75),
    ("Window shoppers", "browse many products without buying",
     lambda z, c, s: _z(z, "product_views_per_session") >= 0.25 and _z(z, "orders") < 0.25),
    ("Regular customers", "steady purchasing",
     lambda z, c, s: _z(z, "orders") >= 0.25),
    ("Casual visitors", "average, low-intensity engagement", lambda z, c, s: True),
)


def population_stats(X: np.ndarray, features: Sequence[str] = MODEL_FEATURES) -> dict[str, float]:
    """Medians of every feature (original units) plus the customers' median order value."""
    X = np.asarray(X, dtype=float)
    stats = {f"median_{name}": float(np.median(X[:, i])) for i, name in enumerate(features)}
    if "orders" in features and "avg_order_value" in features:
        buyers = X[:, list(features).index("orders")] > 0
        col = X[buyers, list(features).index("avg_order_value")]
        stats["customer_median_avg_order_value"] = float(np.median(col)) if col.size else 0.0
    return stats


def describe_centroid(z_centroid: np.ndarray, centroid: np.ndarray, stats: Mapping[str, float],
                      features: Sequence[str] = MODEL_FEATURES) -> tuple[str, str]:
    """(name, one-line description) of one centroid."""
    zc = dict(zip(features, (float(v) for v in z_centroid)))
    c = dict(zip(features, (float(v) for v in centroid)))
    for name, phrase, rule in _NAME_RULES:
        if rule(zc, c, stats):
            break
    top = sorted(range(len(features)), key=lambda i: (-abs(float(z_centroid[i])), features[i]))[:3]
    parts = [f"{'high' if z_centroid[i] > 0 else 'low'} {features[i]} {centroid[i]:.3g} "
             f"(median {stats.get('median_' + features[i], float('nan')):.3g})" for i in top]
    return name, f"{phrase[0].upper()}{phrase[1:]}: {', '.join(parts)}."


def unique_names(names: Sequence[str], taken: Sequence[str] = ()) -> list[str]:
    """Suffixes repeated names: 'Dormant', 'Dormant (2)', ... (also avoiding `taken`)."""
    used = set(taken)
    out = []
    for name in names:
        candidate, n = name, 1
        while candidate in used:
            n += 1
            candidate = f"{name} ({n})"
        used.add(candidate)
        out.append(candidate)
    return out


# --- segments and stable ids -------------------------------------------------

class IdMapping(NamedTuple):
    pairs: list[dict]  # {segment_id, previous_segment_id|None, distance|None, threshold}
    new_ids: list[int]
    retired_ids: list[int]

    def as_card(self, previous_model_version: str | None) -> dict:
        return {"previous_model_version": previous_model_version, "pairs": self.pairs,
                "new_segment_ids": self.new_ids, "retired_segment_ids": self.retired_ids}


def match_previous(pipeline: Pipeline, previous_segments: Sequence[Mapping],
                   features: Sequence[str] = MODEL_FEATURES) -> dict[int, tuple[Mapping, float, float]]:
    """Optimal assignment of new clusters (estimator labels) to previous segments.

    Args:
        pipeline: the new fitted pipeline.
        previous_segments: the previous model card's `segments` (centroids in
            original units, keyed by feature name).

    Returns:
        {new estimator label: (previous segment, distance, threshold)} for the
        accepted pairs only (distance < threshold; see the module docstring).
    """
    centers = scaled_centers(pipeline)
    if not previous_segments or len(centers) < 2:
        return {}
    prev_original = np.array([[float(seg["centroid"][name]) for name in features] for seg in previous_segments])
    prev_scaled = to_scaled(pipeline, prev_original)
    cost = cdist(centers, prev_scaled)
    between = cdist(centers, centers)
    np.fill_diagonal(between, np.inf)
    thresholds = 0.5 * between.min(axis=1)
    rows, cols = linear_sum_assignment(cost)
    return {int(i): (previous_segments[j], float(cost[i, j]), float(thresholds[i]))
            for i, j in zip(rows, cols) if cost[i, j] < thresholds[i]}


def build_segments(pipeline: Pipeline, X: np.ndarray, labels: np.ndarray, *,
                   previous_segments: Sequence[Mapping] | None = None,
                   features: Sequence[str] = MODEL_FEATURES) -> tuple[list[Segment], IdMapping | None]:
    """Ids, names, descriptions, centroids and size shares of the fitted clusters.

    Returns:
        (segments ordered by segment_id, the id mapping or None without a previous model).
    """
    X = np.asarray(X, dtype=float)
    centers = scaled_centers(pipeline)
    k = len(centers)
    original = to_original(pipeline, centers)
    stats = population_stats(X, features)
    counts = np.bincount(labels, minlength=k)
    shares = counts / counts.sum()
    described = [describe_centroid(centers[i], original[i], stats, features) for i in range(k)]
    # Deterministic order of the fresh clusters: larger first, then by centroid.
    order = sorted(range(k), key=lambda i: (-counts[i], tuple(np.round(centers[i], 9))))

    matched = match_previous(pipeline, previous_segments or (), features) if previous_segments else {}
    ids: dict[int, int] = {}
    names: dict[int, str] = {}
    for label, (prev, _, _) in matched.items():
        ids[label] = int(prev["segment_id"])
        names[label] = str(prev["name"])
    next_id = (max(int(s["segment_id"]) for s in previous_segments) + 1) if previous_segments else 0
    fresh = [i for i in order if i not in matched]
    for label, name in zip(fresh, unique_names([described[i][0] for i in fresh], taken=list(names.values()))):
        ids[label] = next_id
        names[label] = name
        next_id += 1

    segments = sorted(
        (Segment(ids[i], i, names[i], described[i][1],
                 {name: float(v) for name, v in zip(features, original[i])}, float(shares[i])) for i in range(k)),
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


def strip_for_serving(pipeline: Pipeline) -> Pipeline:
    """Drops training-only state so the artifact is small and machine-independent.

    * `labels_` (one int per training row) is not needed to predict;
    * KMeans records the OpenMP thread count of the training machine in
      `_n_threads` and pickles it; pinning 1 makes the artifact bytes the same on
      any machine, and one thread per predict call is what a Beam worker (which
      parallelises across bundles) wants anyway.
    """
    model = pipeline[-1]
    if hasattr(model, "labels_"):
        del model.labels_
    if hasattr(model, "_n_threads"):
        model._n_threads = 1
    return pipeline
