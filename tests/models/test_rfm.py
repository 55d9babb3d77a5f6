"""RFM: quantile thresholds, 1-5 scores and the named RF grid, with hand-computed numbers."""

from __future__ import annotations

import numpy as np
import pytest

from models.rfm import RfmSegment, RfmThresholds, fit_thresholds, score, score_arrays, segment_for

RECENCY = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
FREQUENCY = [0, 0, 0, 0, 0, 1, 2, 3, 4, 10]
MONETARY = [0, 10, 20, 30, 40, 50, 60, 70, 80, 90]

# Linear-interpolation quantiles at 20/40/60/80 %, by hand: position q*(n-1) = 1.8, 3.6, 5.4, 7.2.
# recency: 2 + .8*1, 4 + .6*1, 6 + .4*1, 8 + .2*1
# frequency: 0, 0, 1 + .4*(2-1), 3 + .2*(4-3)
# monetary: 10 + .8*10, 30 + .6*10, 50 + .4*10, 70 + .2*10
EXPECTED = RfmThresholds((2.8, 4.6, 6.4, 8.2), (0.0, 0.0, 1.4, 3.2), (18.0, 36.0, 54.0, 72.0))


def test_thresholds_are_training_quantiles():
    got = fit_thresholds(RECENCY, FREQUENCY, MONETARY)
    for name in ("recency_days", "frequency", "monetary_total"):
        assert getattr(got, name) == pytest.approx(getattr(EXPECTED, name))


@pytest.mark.parametrize("recency,frequency,monetary,expected", [
    (2.8, 0, 0, (5, 1, 1)),  # on the first cut: lowest bucket -> R 5 (recent), F 1, M 1
    (3.0, 1, 54, (4, 3, 3)),  # F: two cuts (0, 0) strictly below; M: 54 sits on the third cut
    (6.5, 1.4, 55, (2, 3, 4)),
    (9.0, 4, 1000, (1, 5, 5)),
    (0.0, 3.2, 18.0, (5, 4, 1)),
])
def test_scores(recency, frequency, monetary, expected):
    got = score(EXPECTED, recency, frequency, monetary)
    assert (got.r, got.f, got.m) == expected
    assert got.segment == segment_for(expected[0], expected[1]).value


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
    rec, freq, mon = [0.5, 5.0, 9.9], [0.0, 2.0, 11.0], [5.0, 40.0, 80.0]
    r, f, m, names = score_arrays(EXPECTED, rec, freq, mon)
    scalar = [score(EXPECTED, *row) for row in zip(rec, freq, mon)]
    assert r.tolist() == [s.r for s in scalar] == [5, 3, 1]
    assert f.tolist() == [s.f for s in scalar] == [1, 4, 5]
    assert m.tolist() == [s.m for s in scalar] == [1, 3, 5]
    assert names == [s.segment for s in scalar] == ["New", "Loyal", "Can't lose"]


def test_card_round_trip_and_validation():
    card = EXPECTED.as_card()
    assert card["quantiles"] == [0.2, 0.4, 0.6, 0.8]
    assert RfmThresholds.from_card(card) == EXPECTED
    with pytest.raises(ValueError):
        RfmThresholds.from_card({**card, "frequency": [3, 2, 1, 0]})


def test_thresholds_on_constant_feature():
    got = fit_thresholds(np.ones(5), np.zeros(5), np.zeros(5))
    assert got.frequency == (0.0, 0.0, 0.0, 0.0)
    assert score(got, 1.0, 0.0, 0.0)[:3] == (5, 1, 1)
    assert score(got, 2.0, 1.0, 1.0)[:3] == (1, 5, 5)
