"""RFM: tie-aware thresholds, 1-5 scores and the named RF grid, with hand-computed numbers."""

from __future__ import annotations

import numpy as np
import pytest

from models.rfm import (PROSPECT, RfmSegment, RfmThresholds, bucket, fit_thresholds, score, score_arrays, segment_for,
                        tie_aware_cuts)
from tests.support.rfm_reference import tie_aware_cuts_direct

# Ten customers and five prospects (no order): thresholds are learned over the customers only.
RECENCY = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10] + [50, 60, 70, 80, 90]
ORDERS = [1, 1, 1, 1, 1, 2, 2, 3, 4, 10] + [0, 0, 0, 0, 0]
SPEND = [5, 10, 20, 30, 40, 50, 60, 70, 80, 90] + [0, 0, 0, 0, 0]

# The tie-aware cut points of the ten customers, by hand (each: the smallest value with at
# least 1/(buckets left) of the customers above the previous cut at or below it):
# recency 1..10 and spend, no ties: every second value, two customers a bucket.
# orders: 1 (5 of 10 >= 2); of [2, 2, 3, 4, 10]: 2 (2 >= 1.25); of [3, 4, 10]: 3; of [4, 10]: 4.
FITTED = RfmThresholds((2.0, 4.0, 6.0, 8.0), (1.0, 2.0, 3.0, 4.0), (10.0, 30.0, 50.0, 70.0))
# Cut points given to the scoring tests (ties between cut points included).
EXPECTED = RfmThresholds((2.8, 4.6, 6.4, 8.2), (1.0, 1.0, 2.0, 3.2), (18.0, 36.0, 54.0, 72.0))


def test_thresholds_are_tie_aware_cuts_of_the_customers_only():
    got = fit_thresholds(RECENCY, ORDERS, SPEND)
    assert got == FITTED


def test_the_documented_example():
    orders = [1] * 60 + [2] * 15 + [3] * 8 + [4] * 5 + list(range(5, 17))
    cuts = tie_aware_cuts(orders)
    assert cuts == (1.0, 2.0, 4.0, 10.0)
    assert np.bincount(bucket(orders, cuts), minlength=6)[1:].tolist() == [60, 15, 13, 6, 6]


def test_every_score_is_reachable_when_most_customers_bought_once():
    """60 % one-time buyers, a long tail of repeaters, recency with ties (whole days) and
    spend: every R, F and M score from 1 to 5 is given, and F 5 means many orders."""
    rng = np.random.default_rng(3)
    n = 5000
    orders = np.where(rng.random(n) < 0.6, 1.0, 1.0 + rng.geometric(0.3, n))
    recency = np.where(orders == 1, rng.integers(180, 274, n), rng.integers(0, 274, n)).astype(float)
    spend = orders * np.round(rng.lognormal(3.0, 0.6, n), 2)
    thresholds = fit_thresholds(recency, orders, spend)
    r, f, m, names = score_arrays(thresholds, recency, orders, spend)
    for scores in (r, f, m):
        assert set(scores.tolist()) == {1, 2, 3, 4, 5}
    assert np.all(f[orders == 1] == 1) and np.all(f[orders >= 2] >= 2)  # ties never split
    assert orders[f == 5].min() > np.quantile(orders[orders > 1], 0.5)  # F 5: the upper half of the repeaters
    shares = {name: names.count(name) / n for name in set(names)}
    assert max(shares.values()) <= 0.25
    assert shares["Champions"] < 0.1


@pytest.mark.parametrize("seed", range(5))
def test_cuts_match_the_rule_written_out(seed):
    rng = np.random.default_rng(seed)
    values = np.concatenate([np.ones(rng.integers(0, 300)), rng.geometric(0.4, 200), rng.integers(0, 30, 50)])
    assert list(tie_aware_cuts(values)) == tie_aware_cuts_direct(values)


def test_fewer_distinct_values_than_scores_leave_the_top_empty():
    assert tie_aware_cuts([1.0] * 60 + [2.0] * 40) == (1.0, 2.0, 2.0, 2.0)
    assert tie_aware_cuts([3.0] * 5) == (3.0, 3.0, 3.0, 3.0)


@pytest.mark.parametrize("recency,orders,spend,expected", [
    (2.8, 1, 5, (5, 1, 1)),  # on the first cut: lowest bucket -> R 5 (recent), F 1, M 1
    (3.0, 2, 54, (4, 3, 3)),  # F: two cuts (1, 1) strictly below; M: 54 sits on the third cut
    (6.5, 2.5, 55, (2, 4, 4)),
    (9.0, 4, 1000, (1, 5, 5)),
    (0.0, 3.2, 18.0, (5, 4, 1)),
])
def test_scores(recency, orders, spend, expected):
    got = score(EXPECTED, recency, orders, spend)
    assert (got.r, got.f, got.m) == expected
    assert got.segment == segment_for(expected[0], expected[1]).value


def test_a_user_without_an_order_is_a_prospect_not_about_to_sleep():
    assert score(EXPECTED, 3.0, 0, 0) == (0, 0, 0, PROSPECT)
    r, f, m, names = score_arrays(EXPECTED, [3.0, 3.0], [0, 1], [0.0, 5.0])
    assert (r.tolist(), f.tolist(), m.tolist(), names) == ([0, 4], [0, 1], [0, 1], [PROSPECT, "Promising"])


def test_every_named_segment_is_reachable():
    """A population of customers spread over recency and orders reaches all eleven names."""
    rng = np.random.default_rng(0)
    recency = rng.uniform(0, 365, 2000)
    orders = rng.geometric(0.35, 2000).astype(float)  # 1, 2, 3, ... orders, many with one
    spend = orders * rng.lognormal(3.5, 0.5, 2000)
    thresholds = fit_thresholds(recency, orders, spend)
    _, _, _, names = score_arrays(thresholds, recency, orders, spend)
    assert set(names) == {segment.value for segment in RfmSegment}


@pytest.mark.parametrize("r,f,name", [
    (5, 5, "Champions"), (5, 4, "Champions"), (4, 4, "Loyal"), (3, 5, "Loyal"),
    (5, 2, "Potential loyalist"), (4, 3, "Potential loyalist"), (5, 1, "New"), (4, 1, "Promising"),
    (3, 3, "Need attention"), (3, 1, "About to sleep"), (3, 2, "About to sleep"),
    (2, 3, "At risk"), (1, 4, "At risk"), (1, 5, "Can't lose"), (2, 5, "Can't lose"),
    (2, 1, "Hibernating"), (2, 2, "Hibernating"), (1, 1, "Lost"), (1, 2, "Lost"),
])
def test_named_segments(r, f, name):
    assert segment_for(r, f).value == name


def test_grid_covers_every_cell_and_every_name():
    names = {segment_for(r, f) for r in range(1, 6) for f in range(1, 6)}
    assert names == set(RfmSegment)
    with pytest.raises(ValueError):
        segment_for(0, 3)


def test_vectorised_scores_equal_scalar():
    rec, orders, spend = [0.5, 5.0, 9.9, 4.0], [1.0, 3.0, 11.0, 0.0], [5.0, 40.0, 80.0, 0.0]
    r, f, m, names = score_arrays(EXPECTED, rec, orders, spend)
    scalar = [score(EXPECTED, *row) for row in zip(rec, orders, spend)]
    assert r.tolist() == [s.r for s in scalar] == [5, 3, 1, 0]
    assert f.tolist() == [s.f for s in scalar] == [1, 4, 5, 0]
    assert m.tolist() == [s.m for s in scalar] == [1, 3, 5, 0]
    assert names == [s.segment for s in scalar] == ["New", "Loyal", "Can't lose", PROSPECT]


def test_card_round_trip_and_validation():
    card = EXPECTED.as_card()
    assert card["quantiles"] == [0.2, 0.4, 0.6, 0.8]
    assert RfmThresholds.from_card(card) == EXPECTED
    with pytest.raises(ValueError):
        RfmThresholds.from_card({**card, "orders": [3, 2, 1, 0]})


def test_thresholds_need_a_customer():
    with pytest.raises(ValueError, match="customers"):
        fit_thresholds(np.ones(5), np.zeros(5), np.zeros(5))
    got = fit_thresholds(np.ones(5), np.ones(5), np.ones(5))  # identical customers: every cut equal
    assert got.orders == (1.0, 1.0, 1.0, 1.0)
    assert score(got, 1.0, 1.0, 1.0)[:3] == (5, 1, 1)
    assert score(got, 2.0, 2.0, 2.0)[:3] == (1, 5, 5)
