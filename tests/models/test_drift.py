"""Drift: bins, PSI against a calculation written out by hand, flags on a shifted input, the card's block."""

from __future__ import annotations

import math

import numpy as np
import pytest

from models import drift
from models.artifact import validate_card
from tests.support.models import training_records
from tests.support.psi import reference_psi
from models.training import train_model
from transforms.contracts.feature_spec import MODEL_FEATURES


def test_psi_of_two_known_distributions():
    # Written out: (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5)
    assert drift.psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5))
    assert drift.psi([10, 10], [5, 15]) == pytest.approx(0.25 * math.log(2) + 0.25 * math.log(1.5))  # counts
    assert drift.psi([3, 1, 6], [3, 1, 6]) == 0.0
    # An empty bin counts as rare (1e-4), not impossible.
    assert drift.psi([0.5, 0.5, 0.0], [0.5, 0.25, 0.25]) == pytest.approx(
        (0.25 - 0.5) * math.log(0.5) + (0.25 - 1e-4) * math.log(0.25 / 1e-4))
    with pytest.raises(ValueError):
        drift.psi([1, 1], [1, 1, 1])


def test_bins_are_closed_on_the_right_so_a_point_mass_stays_in_one_bin():
    values = np.array([0.0] * 70 + list(range(1, 31)), dtype=float)  # 70 % zeros
    edges = drift.quantile_edges(values)
    assert edges[0] == 0.0 and len(edges) == len(set(edges))
    counts = drift.bin_counts(edges, values)
    assert counts[0] == 70 and sum(counts) == 100
    assert drift.bin_counts([1.0, 2.0], np.array([1.0, 1.5, 2.0, 2.5, 0.5])) == [2, 2, 1]


@pytest.mark.parametrize("shift, expected_flag", [(0.0, "stable"), (0.35, "moderate"), (1.0, "major")])
def test_psi_equals_the_written_out_calculation_and_a_shift_raises_the_flag(shift, expected_flag):
    rng = np.random.default_rng(5)
    training = rng.normal(0.0, 1.0, 4000)
    current = rng.normal(shift, 1.0, 3000)
    block = drift.training_distribution(training[:, None], ["x"])
    monitor = drift.DriftMonitor(block, ["x"])
    value = monitor.psi_of_values(current[:, None])["x"]
    edges = block["features"]["x"]["edges"]
    assert value == pytest.approx(reference_psi(training.tolist(), current.tolist(), edges), rel=1e-9)
    assert drift.flag(value) == expected_flag


def test_flags_at_the_thresholds():
    assert [drift.flag(v) for v in (None, 0.0, 0.0999, 0.1, 0.25, 0.2501)] == [
        None, "stable", "stable", "moderate", "moderate", "major"]


def test_audit_fields_rank_features_by_psi():
    rng = np.random.default_rng(1)
    X = rng.normal(0, 1, (2000, 3))
    block = drift.training_distribution(X, ["a", "b", "c"])
    monitor = drift.DriftMonitor(block, ["a", "b", "c"])
    now = np.column_stack([rng.normal(0, 1, 1000), rng.normal(2, 1, 1000), rng.normal(0.5, 1, 1000)])
    counts = {name: drift.bin_counts(monitor.edges[name], now[:, i]) for i, name in enumerate("abc")}
    fields = monitor.audit_fields(counts, rows=1000, top=2)
    expected = {name: reference_psi(X[:, i].tolist(), now[:, i].tolist(), block["features"][name]["edges"])
                for i, name in enumerate("abc")}
    assert [d["feature"] for d in fields["drift"]] == ["b", "c"]
    assert fields["drift_max_psi"] == pytest.approx(expected["b"])
    assert fields["drift"][1]["psi"] == pytest.approx(expected["c"])
    assert fields["drift_rows"] == 1000
    assert monitor.audit_fields({}, rows=0) == {"drift_rows": 0, "drift_max_psi": None, "drift": []}


def test_daily_moves_counts_users_on_both_days():
    def assign(X):
        return (X[:, 0] > 0.5).astype(int)

    snapshots = [
        (2, ["a", "b", "c"], np.array([[1.0], [1.0], [0.0]])),
        (1, ["a", "b"], np.array([[0.0], [1.0]])),
        (3, ["a", "b", "c", "d"], np.array([[0.0], [1.0], [1.0], [1.0]])),
    ]
    moves = drift.daily_moves(snapshots, assign)
    # day 1 -> 2: a moved, b stayed (c is new); day 2 -> 3: a and c moved, b stayed (d is new)
    assert [(d["users"], d["moved"]) for d in moves["per_day"]] == [(2, 1), (3, 2)]
    assert moves["share"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert drift.daily_moves(snapshots[:1], assign) is None


def test_training_keeps_the_distribution_in_the_card():
    records = training_records()
    # The same users a day earlier, with the first group's features moved to the second's:
    # those users change segment from one day to the next, the others do not.
    earlier = [dict(r, as_of_us=r["as_of_us"] - 86_400_000_000) for r in records]
    second = next(r for r in records if r["user_key"].startswith("t1-"))
    for r in earlier:
        if r["user_key"].startswith("t0-"):
            r.update({name: second[name] for name in MODEL_FEATURES})
    trained = train_model(records + earlier, k_range=(3, 3), silhouette_sample=100)
    block = trained.card_fields[drift.CARD_KEY]
    assert block["rows"] == len(records)
    X = np.array([[r[name] for name in MODEL_FEATURES] for r in records])
    for i, name in enumerate(MODEL_FEATURES):
        entry = block["features"][name]
        assert entry["mean"] == pytest.approx(float(np.mean(X[:, i])))
        assert entry["sd"] == pytest.approx(float(np.std(X[:, i])))
        assert sum(entry["proportions"]) == pytest.approx(1.0)
    group_sizes = {g: sum(1 for r in records if r["user_key"].startswith(f"t{g}-")) for g in range(3)}
    assert block["daily_moves"]["per_day"] == [{"as_of_us": records[0]["as_of_us"], "users": len(records),
                                                 "moved": group_sizes[0], "share": group_sizes[0] / len(records)}]
    assert validate_card({**trained.card_fields, "model_sha256": "0" * 64, "k": 3}) == []


def test_a_broken_distribution_is_refused():
    records = training_records()
    card = dict(train_model(records, k_range=(3, 3), silhouette_sample=100).card_fields, model_sha256="0" * 64, k=3)
    broken = {**card[drift.CARD_KEY], "features": dict(card[drift.CARD_KEY]["features"])}
    name = MODEL_FEATURES[0]
    broken["features"][name] = dict(broken["features"][name], proportions=[0.5] * 3, edges=[2.0, 1.0])
    problems = validate_card({**card, drift.CARD_KEY: broken})
    assert problems == [f"distribution of {name}: edges are not ascending finite numbers"]
