"""Clustering: recovery of a known structure, choice of k, names, stable ids across retrains."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from models import clustering
from transforms.contracts.feature_spec import MODEL_FEATURES, SKEWED_FEATURES

F = len(MODEL_FEATURES)
SKEWED = np.array([name in SKEWED_FEATURES for name in MODEL_FEATURES])


def make_centers(groups: int, seed: int = 0) -> np.ndarray:
    """Group centres in the model's working space: log1p units for skewed features, raw otherwise."""
    rng = np.random.default_rng(seed)
    return np.where(SKEWED, rng.uniform(0.5, 5.0, (groups, F)), rng.uniform(0.0, 10.0, (groups, F)))


def make_blobs(centers: np.ndarray, n_per: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows around each centre (sd 0.15 in log space, 0.3 raw), returned in original units."""
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(len(centers)), n_per)
    work = centers[truth] + rng.normal(0.0, 1.0, (len(truth), F)) * np.where(SKEWED, 0.15, 0.3)
    original = np.where(SKEWED, np.expm1(np.maximum(work, 0.0)), work)
    return original, truth


def test_log1p_only_on_skewed_columns_and_invertible():
    X = np.arange(2 * F, dtype=float).reshape(2, F)
    cols = clustering.skewed_columns()
    out = clustering.log1p_columns(X, cols)
    expected = X.copy()
    expected[:, SKEWED] = np.log(1.0 + X[:, SKEWED])
    np.testing.assert_allclose(out, expected)
    np.testing.assert_allclose(clustering.expm1_columns(out, cols), X)


@pytest.mark.parametrize("algorithm", [clustering.KMEANS, clustering.GMM])
def test_recovers_well_separated_groups(algorithm):
    centers = make_centers(5)
    X, truth = make_blobs(centers, 120, seed=1)
    fit = clustering.fit_select_k(X, k_range=(3, 7), algorithm=algorithm, seed=0, sample_size=400)
    assert fit.k == 5
    assert set(fit.k_scores) == {3, 4, 5, 6, 7}
    assert fit.k_scores[5].silhouette == max(s.silhouette for s in fit.k_scores.values())
    assert adjusted_rand_score(truth, fit.labels) >= 0.9


def test_distances_and_margin_in_scaled_space():
    X, _ = make_blobs(make_centers(4), 50, seed=2)
    fit = clustering.fit_select_k(X, k_range=(4, 4), seed=0)
    pipeline = fit.pipeline
    # Independent scaled space: log1p skewed columns, then z-scores of the training data.
    W = np.where(SKEWED, np.log1p(X), X)
    Z = (W - W.mean(axis=0)) / W.std(axis=0)
    centers = pipeline[-1].cluster_centers_
    d = np.sqrt(((Z[:, None, :] - centers[None, :, :]) ** 2).sum(axis=2))
    labels, dist, margin = clustering.scaled_distances(pipeline, X)
    np.testing.assert_array_equal(labels, d.argmin(axis=1))
    np.testing.assert_allclose(dist, d.min(axis=1), rtol=1e-9)
    np.testing.assert_allclose(margin, np.sort(d, axis=1)[:, 1] - d.min(axis=1), rtol=1e-9, atol=1e-12)


def test_rejects_nan_rows():
    X, _ = make_blobs(make_centers(4), 30, seed=3)
    pipeline = clustering.fit_select_k(X, k_range=(4, 4)).pipeline
    bad = X[:1].copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError):
        clustering.scaled_distances(pipeline, bad)


def _z(**named: float) -> np.ndarray:
    z = np.zeros(F)
    for name, value in named.items():
        z[MODEL_FEATURES.index(name)] = value
    return z


@pytest.mark.parametrize("z,expected", [
    (_z(days_since_last_event=1.5, active_days_30d=-1.0), "Lapsed"),
    (_z(spend_total=1.2, orders=0.9), "High-value loyal"),
    (_z(cart_adds_per_session=1.0, cart_abandonment_rate=1.0), "Cart abandoners"),
    (_z(email_opens_30d=1.5), "Email-engaged"),
    (_z(tenure_days=-1.5, sessions_30d=-1.0), "New visitors"),
    (_z(product_views_per_session=0.8), "Window shoppers"),
    (_z(orders=0.5), "Regular customers"),
    (_z(), "Casual visitors"),
])
def test_segment_name_rules(z, expected):
    centroid = np.ones(F)
    stats = {f"median_{n}": 1.0 for n in MODEL_FEATURES} | {"customer_median_avg_order_value": 0.5}
    name, description = clustering.describe_centroid(z, centroid, stats)
    assert name == expected
    assert description and "\n" not in description


def test_bargain_hunters_use_customers_median_order_value():
    z = _z(orders=0.8)
    centroid = np.ones(F)
    centroid[MODEL_FEATURES.index("avg_order_value")] = 12.0
    stats = {f"median_{n}": 1.0 for n in MODEL_FEATURES}
    assert clustering.describe_centroid(z, centroid, stats | {"customer_median_avg_order_value": 20.0})[0] == \
        "Bargain hunters"
    assert clustering.describe_centroid(z, centroid, stats | {"customer_median_avg_order_value": 10.0})[0] == \
        "Regular customers"


def test_unique_names():
    assert clustering.unique_names(["Dormant", "Dormant", "New visitors", "Dormant"], taken=["Dormant (2)"]) == [
        "Dormant", "Dormant (3)", "New visitors", "Dormant (4)"]


def _train(X, seed=0, k_range=(3, 7), previous=None):
    fit = clustering.fit_select_k(X, k_range=k_range, seed=seed, sample_size=500)
    segments, mapping = clustering.build_segments(
        fit.pipeline, X, fit.labels, previous_segments=[s._asdict() for s in previous] if previous else None)
    return fit, segments, mapping


def _ids(fit, segments, X):
    by_label = {s.cluster_index: s.segment_id for s in segments}
    labels, _, _ = clustering.scaled_distances(fit.pipeline, X)
    return np.array([by_label[int(label)] for label in labels])


def test_fresh_segments_are_numbered_by_size_and_named_uniquely():
    centers = make_centers(4, seed=5)
    X = np.concatenate([make_blobs(centers[i:i + 1], n, seed=i)[0] for i, n in enumerate([40, 100, 70, 20])])
    fit, segments, mapping = _train(X, k_range=(4, 4))
    assert mapping is None
    assert [s.segment_id for s in segments] == [0, 1, 2, 3]
    shares = [s.size_share for s in segments]
    assert shares == pytest.approx([100 / 230, 70 / 230, 40 / 230, 20 / 230])
    assert len({s.name for s in segments}) == 4
    assert all(set(s.centroid) == set(MODEL_FEATURES) for s in segments)


def test_stable_ids_after_retraining_on_a_different_sample():
    centers = make_centers(5, seed=11)
    population, _ = make_blobs(centers, 200, seed=12)
    rng = np.random.default_rng(13)
    sample_a = population[rng.choice(len(population), 600, replace=False)]
    sample_b = population[rng.permutation(rng.choice(len(population), 600, replace=False))]
    fit_a, seg_a, _ = _train(sample_a, seed=0)
    fit_b, seg_b, mapping = _train(sample_b, seed=1, previous=seg_a)  # another seed: labels come out permuted
    # The new fit numbers its clusters differently; only the matching keeps the ids.
    assert [s.cluster_index for s in seg_b] != [s.cluster_index for s in seg_a]
    kept = np.mean(_ids(fit_a, seg_a, population) == _ids(fit_b, seg_b, population))
    assert kept >= 0.9
    assert {s.name for s in seg_b} == {s.name for s in seg_a}
    assert mapping.new_ids == [] and mapping.retired_ids == []
    assert all(p["previous_segment_id"] == p["segment_id"] for p in mapping.pairs)


def test_new_cluster_gets_a_new_id_and_a_vanished_one_is_retired():
    centers = make_centers(6, seed=21)
    old, _ = make_blobs(centers[:5], 80, seed=22)  # groups 0..4
    new, truth_new = make_blobs(centers[1:], 80, seed=23)  # groups 1..5: group 0 gone, group 5 new
    fit_a, seg_a, _ = _train(old, k_range=(5, 5))
    fit_b, seg_b, mapping = _train(new, k_range=(5, 5), previous=seg_a)
    ids_old_model = _ids(fit_a, seg_a, make_blobs(centers[1:5], 20, seed=24)[0])
    ids_new_model = _ids(fit_b, seg_b, make_blobs(centers[1:5], 20, seed=24)[0])
    np.testing.assert_array_equal(ids_old_model, ids_new_model)  # groups 1..4 keep their ids
    group0_id = int(_ids(fit_a, seg_a, make_blobs(centers[:1], 5, seed=25)[0])[0])
    group5_id = int(_ids(fit_b, seg_b, make_blobs(centers[5:], 5, seed=26)[0])[0])
    assert mapping.retired_ids == [group0_id]
    assert mapping.new_ids == [group5_id] == [max(s.segment_id for s in seg_a) + 1]
    unmatched = [p for p in mapping.pairs if p["previous_segment_id"] is None]
    assert [p["segment_id"] for p in unmatched] == [group5_id]
