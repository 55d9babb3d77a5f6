"""Choosing the number of segments: bootstrap stability times silhouette.

For every candidate k the algorithm is fitted on all rows (the candidate model), and:

* **stability**: the mean adjusted Rand index between the segments of two clusterings,
  each fitted on one half of a random split of the rows and both applied to every row
  (`STABILITY_ROUNDS` splits, the same splits for every k; each half is fitted exactly as
  the full model, restarts included: cheaper half-fits add their own instability and blur
  the comparison). A k that matches real structure is found again from other data; a k
  that cuts a group in two, or merges two, cuts or merges differently from split to split.
* **silhouette** of the candidate's segments on a fixed-seed sample of at most
  `DEFAULT_SILHOUETTE_SAMPLE` rows (it is quadratic in rows), measured for every candidate
  in ONE space: the model space of the largest candidate k. A candidate's own space is
  whitened by its own segments' spread, and when two groups are merged their difference
  becomes within-segment spread and is whitened away, which flatters the smaller k (on
  five well-separated generated groups, the own-space silhouette preferred 4).

The chosen k maximises their product (ties: the smaller k). On generated populations of
5,000 and 20,000 users the product, the stability and the silhouette each peak at the k
that recovers the generator's archetypes best, 20 % above the runner-up
(`models/README.md`); silhouette alone in each candidate's own space picked 4-5, BIC 13-14.
Every candidate's scores go to the model card.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np
from sklearn.metrics import adjusted_rand_score, davies_bouldin_score, silhouette_score

from models.algorithms import KMEANS, UNCLASSIFIED, Clustering, fit_clustering, fixed_sample, predict_quietly

DEFAULT_K_RANGE = (4, 10)
DEFAULT_SILHOUETTE_SAMPLE = 5000
STABILITY_ROUNDS = 5


class KScore(NamedTuple):
    stability: float
    silhouette: float
    davies_bouldin: float
    score: float  # stability x silhouette

    def as_card(self) -> dict:
        """JSON-ready: NaN (undefined with fewer than two segments) becomes None."""
        return {name: None if np.isnan(value) else float(value) for name, value in self._asdict().items()}


def stability(Z: np.ndarray, k: int, algorithm: str = KMEANS, *, seed: int = 0, activity_weight: float = 0.0,
              rounds: int = STABILITY_ROUNDS) -> float:
    """Mean ARI between clusterings fitted on the two halves of `rounds` random splits, on all rows."""
    rng = np.random.default_rng(seed)
    values = []
    for r in range(rounds):
        order = rng.permutation(len(Z))
        halves = np.sort(order[: len(Z) // 2]), np.sort(order[len(Z) // 2:])
        labels = []
        for h, rows in enumerate(halves):
            fit = fit_clustering(Z[rows], k, algorithm, seed=seed + 2 * r + h, activity_weight=activity_weight)
            labels.append(predict_quietly(fit.predictor, Z @ fit.matrix))
        values.append(adjusted_rand_score(*labels))
    return float(np.mean(values))


def separation(W: np.ndarray, labels: np.ndarray, *, seed: int = 0,
               sample_size: int = DEFAULT_SILHOUETTE_SAMPLE) -> tuple[float, float]:
    """(silhouette on a fixed-seed sample, Davies-Bouldin on all rows) of the segmented rows;
    Unclassified rows are left out. NaN when fewer than two segments remain."""
    keep = labels != UNCLASSIFIED
    W, labels = W[keep], labels[keep]
    sample = fixed_sample(len(W), sample_size, seed)
    if len(np.unique(labels[sample])) < 2 or len(np.unique(labels)) < 2:
        return float("nan"), float("nan")
    return (float(silhouette_score(W[sample], labels[sample])), float(davies_bouldin_score(W, labels)))


def score(W: np.ndarray, Z: np.ndarray, fit: Clustering, k: int, algorithm: str = KMEANS, *, seed: int = 0,
          activity_weight: float = 0.0, sample_size: int = DEFAULT_SILHOUETTE_SAMPLE,
          rounds: int = STABILITY_ROUNDS) -> KScore:
    """The scores of one fitted candidate, its separation measured on the rows W (a model space)."""
    silhouette, davies_bouldin = separation(W, fit.labels, seed=seed, sample_size=sample_size)
    stable = stability(Z, k, algorithm, seed=seed, activity_weight=activity_weight, rounds=rounds)
    return KScore(stable, silhouette, davies_bouldin, stable * silhouette)


def select_k(Z: np.ndarray, ks: Sequence[int], algorithm: str = KMEANS, *, seed: int = 0,
             activity_weight: float = 0.0, sample_size: int = DEFAULT_SILHOUETTE_SAMPLE,
             rounds: int = STABILITY_ROUNDS) -> tuple[int, dict[int, KScore], Clustering]:
    """Fits and scores every k in `ks`; returns (chosen k, every candidate's scores, the chosen fit)."""
    fits = {k: fit_clustering(Z, k, algorithm, seed=seed, activity_weight=activity_weight) for k in sorted(ks)}
    common = Z @ fits[max(fits)].matrix
    scores = {k: score(common, Z, fit, k, algorithm, seed=seed, activity_weight=activity_weight,
                       sample_size=sample_size, rounds=rounds) for k, fit in fits.items()}
    valid = [k for k in fits if not np.isnan(scores[k].score)]
    if not valid:
        raise ValueError(f"no k in {list(ks)} gave two or more segments")
    chosen = max(valid, key=lambda k: (scores[k].score, -k))
    return chosen, scores, fits[chosen]
