"""The model space, the four algorithms, the choice of k, the served model, stable ids across retrains."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, homogeneity_score

from models import clustering
from models.algorithms import ALGORITHMS, DENSITY, UNCLASSIFIED
from models.representation import (CLUSTERING_FEATURES, MIN_WITHIN_VARIANCE, PRIOR_WEIGHTS, ShrinkRates,
                                   whitening_matrix)
from tests.support.segments import F, INDEX, group_centres, population
from transforms.contracts.feature_spec import MODEL_FEATURES, RATE_EVIDENCE, SKEWED_FEATURES

QUICK = dict(sample_size=400, stability_rounds=2)


# --- the representation ----------------------------------------------------------------

def test_shrinkage_learns_the_pooled_rate_and_shrinks_by_evidence():
    X = np.zeros((3, F))
    pv, sessions = INDEX["lifetime_page_views_per_session"], INDEX["lifetime_sessions"]
    opens = INDEX["lifetime_email_opens_per_session"]
    X[:, pv] = [4.0, 1.0, 0.0]
    X[:, sessions] = [10.0, 2.0, 0.0]
    X[:, opens] = [0.5, 0.0, 3.0]  # a user without sessions counts as one session here
    X[:, INDEX["tenure_days"]] = [7.0, 8.0, 9.0]
    shrink = ShrinkRates().fit(X)
    prior = (4.0 * 10 + 1.0 * 2 + 0.0) / 12  # page views / sessions over everyone
    assert shrink.priors_["lifetime_page_views_per_session"] == pytest.approx(prior)
    opens_prior = (0.5 * 10 + 0.0 * 2 + 3.0 * 1) / 13
    assert shrink.priors_["lifetime_email_opens_per_session"] == pytest.approx(opens_prior)
    m = PRIOR_WEIGHTS["lifetime_sessions"]
    out = shrink.transform(X)
    np.testing.assert_allclose(out[:, pv], [(40 + m * prior) / (10 + m), (2 + m * prior) / (2 + m), prior])
    np.testing.assert_allclose(out[2, opens], (3.0 + m * opens_prior) / (1 + m))
    shrunk = [INDEX[rate] for rate in RATE_EVIDENCE]
    untouched = [i for i in range(F) if i not in shrunk]
    np.testing.assert_array_equal(out[:, untouched], X[:, untouched])


def test_whitening_makes_the_covariance_the_identity_and_bounds_the_stretch():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 4))
    covariance = a @ a.T + np.eye(4)
    T = whitening_matrix(covariance)
    np.testing.assert_allclose(T @ covariance @ T, np.eye(4), atol=1e-10)
    # A direction without spread is stretched by 1 / sqrt(MIN_WITHIN_VARIANCE), not infinitely.
    np.testing.assert_allclose(whitening_matrix(np.diag([4.0, 0.0])),
                               np.diag([0.5, 1 / np.sqrt(MIN_WITHIN_VARIANCE)]))


# --- the algorithms ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def five_groups():
    return population(group_centres(5, seed=1), [150, 120, 100, 80, 60], seed=2)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_each_algorithm_recovers_separated_groups(algorithm, five_groups):
    X, truth = five_groups
    fit = clustering.fit_segments(X, algorithm=algorithm, k_range=(3, 7), **QUICK)
    assert fit.k == 5 and set(fit.k_scores) == {3, 4, 5, 6, 7}
    assert fit.k_scores[5].score == max(s.score for s in fit.k_scores.values())
    classified = fit.labels != UNCLASSIFIED
    assert classified.mean() >= 0.9
    if algorithm == DENSITY:
        # It finds its own number of segments: dense groups, never two groups in one (a group
        # may come out as two leaves of the density hierarchy).
        assert homogeneity_score(truth[classified], fit.labels[classified]) >= 0.95
        assert len(set(fit.labels[classified])) >= 5
    else:
        assert adjusted_rand_score(truth, fit.labels) >= 0.95
        assert len(set(fit.labels)) == 5


def _standardised_by_hand(X: np.ndarray) -> np.ndarray:
    """Shrink (pooled priors), select the clustering inputs, log1p, z-score: with numpy alone."""
    S = X.copy()
    for rate, (evidence, least) in RATE_EVIDENCE.items():
        n = np.maximum(X[:, INDEX[evidence]], least)
        prior = (X[:, INDEX[rate]] * n).sum() / n.sum()
        m = PRIOR_WEIGHTS[evidence]
        S[:, INDEX[rate]] = (X[:, INDEX[rate]] * n + m * prior) / (n + m)
    C = S[:, [INDEX[name] for name in CLUSTERING_FEATURES]]
    C = np.where([name in SKEWED_FEATURES for name in CLUSTERING_FEATURES], np.log1p(C), C)
    return (C - C.mean(axis=0)) / C.std(axis=0)


def test_kmeans_whitens_by_the_groups_within_covariance_and_serves_distances_there(five_groups):
    X, truth = five_groups
    fit = clustering.fit_segments(X, k=5, **QUICK)
    assert adjusted_rand_score(truth, fit.labels) == 1.0
    Z = _standardised_by_hand(X)
    residuals = Z - np.array([Z[truth == g].mean(axis=0) for g in range(5)])[truth]
    values, vectors = np.linalg.eigh(residuals.T @ residuals / len(Z))
    T = vectors @ np.diag(1 / np.sqrt(np.maximum(values, MIN_WITHIN_VARIANCE))) @ vectors.T
    np.testing.assert_allclose(fit.model.matrix, T, rtol=1e-6, atol=1e-8)
    W = Z @ T
    centres = np.array([W[fit.labels == label].mean(axis=0) for label in fit.model.labels])
    d = np.sqrt(((W[:, None, :] - centres[None, :, :]) ** 2).sum(axis=2))
    labels, distance, margin = fit.model.assign(X)
    np.testing.assert_array_equal(labels, fit.model.labels[d.argmin(axis=1)])
    np.testing.assert_allclose(distance, d.min(axis=1), rtol=1e-6)
    np.testing.assert_allclose(margin, np.sort(d, axis=1)[:, 1] - d.min(axis=1), rtol=1e-5, atol=1e-9)


def test_rejects_nan_rows(five_groups):
    X, _ = five_groups
    model = clustering.fit_segments(X, k=5, **QUICK).model
    bad = X[:1].copy()
    bad[0, INDEX["lifetime_bounce_rate"]] = np.nan
    with pytest.raises(ValueError):
        model.assign(bad)


def test_density_marks_users_between_the_groups_unclassified():
    centres = group_centres(4, seed=3)
    X, truth = population(centres, [250, 250, 250, 250], seed=4)
    # 30 users each near the middle of the way between two groups' centres (40 to 60 % of it): in
    # no group, and too few on any one way to be a group (HDBSCAN's smallest: 1 % of 1,030 rows).
    rng = np.random.default_rng(5)
    pairs = rng.choice(4, size=(30, 2))
    pairs[pairs[:, 0] == pairs[:, 1], 1] = (pairs[pairs[:, 0] == pairs[:, 1], 1] + 1) % 4
    w = rng.uniform(0.4, 0.6, (30, 1))
    between, _ = population(w * centres[pairs[:, 0]] + (1 - w) * centres[pairs[:, 1]], [1] * 30, seed=6)
    rows = np.vstack([X, between])
    fit = clustering.fit_segments(rows, algorithm=DENSITY, k=4, **QUICK)
    segments, _ = clustering.build_segments(fit, rows)
    # Most of the in-between users are Unclassified (some sit within a group's reach in the
    # projected space); few of the groups' users are (those at the fringe, beyond the reach).
    assert (fit.labels[len(X):] == UNCLASSIFIED).mean() >= 0.6
    assert (fit.labels[:len(X)] == UNCLASSIFIED).mean() <= 0.1
    grouped = fit.labels[:len(X)] != UNCLASSIFIED
    assert homogeneity_score(truth[grouped], fit.labels[:len(X)][grouped]) >= 0.95  # no segment mixes groups
    unclassified = [s for s in segments if s.cluster_index == UNCLASSIFIED]
    assert [s.name for s in unclassified] == ["Unclassified"]
    assert unclassified[0].size_share == pytest.approx((fit.labels == UNCLASSIFIED).mean())
    # A user far from every group, in the model space, is Unclassified too (no sample point within reach).
    outlier = X[:1].copy()
    outlier[0, INDEX["lifetime_bounce_rate"]] = 50.0
    assert fit.model.assign(outlier)[0].tolist() == [UNCLASSIFIED]


# --- segments and stable ids -------------------------------------------------------------

def _train(X, seed=0, k=None, previous=None, algorithm="kmeans"):
    fit = clustering.fit_segments(X, algorithm=algorithm, k=k, k_range=(3, 7), seed=seed, **QUICK)
    segments, mapping = clustering.build_segments(
        fit, X, previous_segments=[s._asdict() for s in previous] if previous else None)
    return fit, segments, mapping


def _ids(fit, segments, X):
    by_label = {s.cluster_index: s.segment_id for s in segments}
    labels, _, _ = fit.model.assign(X)
    return np.array([by_label[int(label)] for label in labels])


def test_fresh_segments_are_numbered_by_size_and_named_uniquely(five_groups):
    X, _ = five_groups
    fit, segments, mapping = _train(X, k=5)
    assert mapping is None
    assert [s.segment_id for s in segments] == [0, 1, 2, 3, 4]
    assert [s.size_share for s in segments] == pytest.approx([150 / 510, 120 / 510, 100 / 510, 80 / 510, 60 / 510])
    assert len({s.name for s in segments}) == 5
    for s in segments:
        assert set(s.centroid) == set(MODEL_FEATURES)
        members = X[fit.labels == s.cluster_index]
        assert s.centroid["lifetime_bounce_rate"] == pytest.approx(members[:, INDEX["lifetime_bounce_rate"]].mean())
        assert [d["feature"] for d in s.distinguishing_features] and "\n" not in s.description


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_stable_ids_after_retraining_on_a_different_sample(algorithm):
    population_, _ = population(group_centres(5, seed=11), [200] * 5, seed=12)
    rng = np.random.default_rng(13)
    sample_a = population_[rng.choice(len(population_), 600, replace=False)]
    sample_b = population_[rng.permutation(rng.choice(len(population_), 600, replace=False))]
    fit_a, seg_a, _ = _train(sample_a, seed=0, algorithm=algorithm)
    fit_b, seg_b, mapping = _train(sample_b, seed=1, previous=seg_a, algorithm=algorithm)
    old, new = _ids(fit_a, seg_a, population_), _ids(fit_b, seg_b, population_)
    if algorithm == DENSITY:
        # Density finds its own segments (here the groups, some as two leaves, differently per
        # sample): the segments it finds again keep their ids for their users.
        matched = {p["segment_id"] for p in mapping.pairs if p["previous_segment_id"] is not None}
        again = np.isin(new, list(matched))
        assert len(matched) >= 4 and again.mean() >= 0.6
        assert np.mean(old[again] == new[again]) >= 0.9
        assert all(p["previous_segment_id"] in (None, p["segment_id"]) for p in mapping.pairs)
        return
    assert np.mean(old == new) >= 0.9
    assert {s.name for s in seg_b} == {s.name for s in seg_a}
    assert mapping.new_ids == [] and mapping.retired_ids == []
    assert all(p["previous_segment_id"] == p["segment_id"] for p in mapping.pairs)


def test_new_group_gets_a_new_id_and_a_vanished_one_is_retired():
    centres = group_centres(6, seed=21)
    old, _ = population(centres[:5], [80] * 5, seed=22)  # groups 0..4
    new, _ = population(centres[1:], [80] * 5, seed=23)  # groups 1..5: group 0 gone, group 5 new
    fit_a, seg_a, _ = _train(old, k=5)
    fit_b, seg_b, mapping = _train(new, k=5, previous=seg_a)
    probe = population(centres[1:5], [20] * 4, seed=24)[0]
    np.testing.assert_array_equal(_ids(fit_a, seg_a, probe), _ids(fit_b, seg_b, probe))  # groups 1..4 keep ids
    group0_id = int(_ids(fit_a, seg_a, population(centres[:1], [5], seed=25)[0])[0])
    group5_id = int(_ids(fit_b, seg_b, population(centres[5:], [5], seed=26)[0])[0])
    assert mapping.retired_ids == [group0_id]
    assert mapping.new_ids == [group5_id] == [max(s.segment_id for s in seg_a) + 1]
    unmatched = [p for p in mapping.pairs if p["previous_segment_id"] is None]
    assert [p["segment_id"] for p in unmatched] == [group5_id]
