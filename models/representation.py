"""The model space: from a profile record's vector to where segments are found and served.

Every algorithm (`models.algorithms`) clusters in the same space, built by these fitted,
picklable scikit-learn steps (`representation_pipeline`)::

    MODEL_FEATURES vector
      -> ShrinkRates       each rate shrunk towards the population's rate by its evidence:
                           (rate * n + m * prior) / (n + m); the priors are learned from the
                           training rows and kept, so serving shrinks as training did
      -> select            the clustering inputs (`CLUSTERING_FEATURES` the training data
                           carry, `unused_features`; plus the activity block when it has a
                           weight)
      -> log1p             on the heavy-tailed ones
      -> StandardScaler    the "standardised space": one unit is one population standard
                           deviation, the population mean is 0
      -> Whitening         a fixed linear map W^-1/2 learned with the clusters (the pooled
                           within-segment covariance W), so that Euclidean distance is the
                           Mahalanobis distance of the segments: correlated features (page
                           views and session duration, say) do not count twice, and a
                           feature that varies a lot inside every segment counts less

Why these choices (measured on generated populations; `models/README.md`):

* lifetime rates, not 30-day ones: with churn, many users' recent windows are empty;
* rates per session and shares of events, not counts: how active a user is (a multiplier
  shared by every archetype) is the largest spread in the data and not a kind of user.
  The activity block (`ACTIVITY_FEATURES`) can be appended with a weight; it is 0 by
  default because any weight lowered the recovery of the behaviour types;
* shrinkage: a rate measured on one session is mostly noise; with the prior weights
  `PRIOR_WEIGHTS` (2 sessions, 10 events) a one-session user sits two thirds of the way
  to the population's rate, a 50-session user 4 % of the way. The average order value is
  not shrunk: 0 for a user who never bought keeps "buys or not" in the space (shrinking
  it by orders blurred the choice of k between 4, 5 and 8 on generated populations).

Example::

    pipe = representation_pipeline()
    Z = pipe[:-1].fit_transform(X)          # standardised space
    pipe.set_params(whiten__matrix=whitening_matrix(within_covariance(Z, labels)))
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.utils.validation import check_array, check_is_fitted

from transforms.contracts.feature_spec import (ACTIVITY_FEATURES, LIFETIME_BEHAVIOUR_FEATURES, MODEL_FEATURES,
                                               RATE_EVIDENCE, SKEWED_FEATURES)

# What kind of user: the lifetime behaviour and the basket size.
CLUSTERING_FEATURES: tuple[str, ...] = LIFETIME_BEHAVIOUR_FEATURES + ("avg_order_value",)
# The purchase figures an analyst segments a purchase log by (frequency, recency, value):
# clustered only when the data carry fewer than `MIN_BEHAVIOUR_FEATURES` behaviour inputs.
PURCHASE_FEATURES: tuple[str, ...] = ("orders", "recency_days", "spend_total")
MIN_BEHAVIOUR_FEATURES = 2
# A rate rests on too little evidence when its evidence feature (sessions, events, e-mail
# opens: `RATE_EVIDENCE`) is below `MIN_EVIDENCE` for more than `SCANT_EVIDENCE_SHARE` of the
# training users: for them it is the shrinkage's prior, the same number for everyone.
MIN_EVIDENCE = 1.0
SCANT_EVIDENCE_SHARE = 0.5
# m of the shrinkage, in units of each evidence feature.
PRIOR_WEIGHTS: dict[str, float] = {
    "lifetime_sessions": 2.0,
    "lifetime_cart_sessions": 2.0,
    "lifetime_email_opens": 2.0,
    "lifetime_events": 10.0,
}
# No direction of the standardised space is stretched by more than 1 / sqrt(this): a feature
# that is constant inside every segment (or in the whole training set) would otherwise get an
# unbounded weight, and one serving row that differs there would be infinitely far from all.
MIN_WITHIN_VARIANCE = 1e-2


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


def select_columns(X: np.ndarray, columns: Sequence[int] = ()) -> np.ndarray:
    return np.asarray(X, dtype=float)[:, list(columns)]


class ShrinkRates(TransformerMixin, BaseEstimator):
    """Empirical-Bayes shrinkage of rates towards the population's rate, by their evidence.

    For a rate r with evidence n (its denominator, at least `least`) and prior weight m,
    ``(r * n + m * prior) / (n + m)``; `prior` is learned by `fit` as the pooled rate of the
    training rows (sum of numerators / sum of denominators). Other columns pass through.

    Args:
        features: the names of the input columns, in order.
        rate_evidence: rate -> (evidence feature, least evidence), e.g. `RATE_EVIDENCE`.
        prior_weights: evidence feature -> m.

    Attributes:
        priors_: rate -> learned prior, in the order of `rate_evidence`.
    """

    def __init__(self, features: Sequence[str] = MODEL_FEATURES,
                 rate_evidence: Mapping[str, tuple[str, float]] = RATE_EVIDENCE,
                 prior_weights: Mapping[str, float] = PRIOR_WEIGHTS):
        self.features = features
        self.rate_evidence = rate_evidence
        self.prior_weights = prior_weights

    def _columns(self) -> list[tuple[str, int, int, float, float]]:
        index = {name: i for i, name in enumerate(self.features)}
        return [(rate, index[rate], index[evidence], float(least), float(self.prior_weights[evidence]))
                for rate, (evidence, least) in self.rate_evidence.items()]

    def fit(self, X, y=None):
        X = check_array(X, dtype=float)
        priors = {}
        for name, rate, evidence, least, _ in self._columns():
            n = np.maximum(X[:, evidence], least)
            total = float(n.sum())
            priors[name] = float((X[:, rate] * n).sum() / total) if total > 0 else float(X[:, rate].mean())
        self.priors_ = priors
        self.n_features_in_ = X.shape[1]
        return self

    def transform(self, X):
        check_is_fitted(self, "priors_")
        out = check_array(X, dtype=float, copy=True)
        for name, rate, evidence, least, m in self._columns():
            n = np.maximum(out[:, evidence], least)
            out[:, rate] = (out[:, rate] * n + m * self.priors_[name]) / (n + m)
        return out


class Whitening(TransformerMixin, BaseEstimator):
    """A fixed linear map ``X @ matrix`` (learned with the clusters, set before serving).

    `fit` learns nothing: the matrix comes from `whitening_matrix` of a clustering's
    within-segment covariance (`models.algorithms`). None means the identity.
    """

    def __init__(self, matrix: np.ndarray | None = None):
        self.matrix = matrix

    def fit(self, X, y=None):
        self.n_features_in_ = np.asarray(X).shape[1]
        return self

    def transform(self, X):
        X = np.asarray(X, dtype=float)
        return X if self.matrix is None else X @ self.matrix


def within_covariance(Z: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """The pooled within-segment covariance of the rows of Z (rows labelled < 0 are left out)."""
    Z = np.asarray(Z, dtype=float)
    keep = np.asarray(labels) >= 0
    Z, labels = Z[keep], np.asarray(labels)[keep]
    residuals = Z.copy()
    for label in np.unique(labels):
        members = labels == label
        residuals[members] -= Z[members].mean(axis=0)
    return residuals.T @ residuals / max(len(Z), 1)


def whitening_matrix(covariance: np.ndarray, min_variance: float = MIN_WITHIN_VARIANCE) -> np.ndarray:
    """The symmetric inverse square root of a covariance, its eigenvalues floored at `min_variance`."""
    values, vectors = np.linalg.eigh(np.asarray(covariance, dtype=float))
    return (vectors * (1.0 / np.sqrt(np.maximum(values, min_variance)))) @ vectors.T


def block_whitening(Z: np.ndarray, labels: np.ndarray, behaviour_columns: int, activity_weight: float) -> np.ndarray:
    """Whitening of the behaviour block by its within-segment covariance; the activity block
    (the columns after it, if any) is only multiplied by `activity_weight`."""
    behaviour = whitening_matrix(within_covariance(Z[:, :behaviour_columns], labels))
    d = Z.shape[1]
    matrix = np.zeros((d, d))
    matrix[:behaviour_columns, :behaviour_columns] = behaviour
    if d > behaviour_columns:
        matrix[behaviour_columns:, behaviour_columns:] = activity_weight * np.eye(d - behaviour_columns)
    return matrix


def unused_features(X: np.ndarray, features: Sequence[str] = MODEL_FEATURES) -> dict[str, str]:
    """The behaviour inputs the training rows do not carry, each with the reason.

    * constant: one value for every training row (purchase logs: no app, e-mail or
      channel data);
    * scant evidence: its evidence feature is below `MIN_EVIDENCE` for more than
      `SCANT_EVIDENCE_SHARE` of the rows (no sessions: every per-session rate is the prior).
    """
    X = np.asarray(X, dtype=float)
    index = {name: i for i, name in enumerate(features)}
    unused = {}
    for name in CLUSTERING_FEATURES:
        column = X[:, index[name]]
        if name in RATE_EVIDENCE:
            evidence_name = RATE_EVIDENCE[name][0]
            scant = float(np.mean(X[:, index[evidence_name]] < MIN_EVIDENCE))
            if scant > SCANT_EVIDENCE_SHARE:
                unused[name] = (f"scant evidence: {evidence_name} below {MIN_EVIDENCE:g} for {scant:.0%} of "
                                f"the training users")
                continue
        if column.size and np.all(column == column[0]):
            unused[name] = f"constant ({column[0]:g} for every training user)"
    return unused


def behaviour_columns(unused: Sequence[str] = ()) -> tuple[str, ...]:
    """The behaviour block: `CLUSTERING_FEATURES` the data carry, and the purchase figures
    (`PURCHASE_FEATURES`) when fewer than `MIN_BEHAVIOUR_FEATURES` remain."""
    kept = tuple(name for name in CLUSTERING_FEATURES if name not in unused)
    if len(kept) < MIN_BEHAVIOUR_FEATURES:
        kept += tuple(name for name in PURCHASE_FEATURES if name not in kept)
    return kept


def clustering_columns(activity_weight: float = 0.0, unused: Sequence[str] = ()) -> tuple[str, ...]:
    """The features the segments are found on: behaviour (`behaviour_columns`), then the
    activity block if weighted (always its last `len(ACTIVITY_FEATURES)` columns)."""
    return behaviour_columns(unused) + (ACTIVITY_FEATURES if activity_weight > 0 else ())


def representation_pipeline(activity_weight: float = 0.0, features: Sequence[str] = MODEL_FEATURES,
                            unused: Sequence[str] = ()) -> Pipeline:
    """The unfitted steps from a record vector to the model space (whitening: identity until set)."""
    columns = clustering_columns(activity_weight, unused)
    index = {name: i for i, name in enumerate(features)}
    skewed = [i for i, name in enumerate(columns) if name in SKEWED_FEATURES]
    return Pipeline([
        ("shrink", ShrinkRates(tuple(features))),
        ("select", FunctionTransformer(select_columns, kw_args={"columns": [index[n] for n in columns]})),
        # validate=True rejects NaN / inf: a broken row fails loudly (and is dead-lettered at
        # serving) instead of being silently assigned.
        ("log1p", FunctionTransformer(log1p_columns, inverse_func=expm1_columns, validate=True,
                                      kw_args={"columns": skewed}, inv_kw_args={"columns": skewed})),
        ("scale", StandardScaler()),
        ("whiten", Whitening()),
    ])
