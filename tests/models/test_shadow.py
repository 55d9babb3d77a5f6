"""`models.shadow.compare`: who a candidate model would move, and the drivers of each move.

The small model's three groups each sit exactly on their centroid (`tests.support.models`),
so which rows move is known: a candidate that is the same model with two segment ids
swapped moves exactly the users of those two segments, each to the same cluster under
another id, with every contribution 0 (the user is at both centres).
"""

from __future__ import annotations

import numpy as np
import pytest

from models.artifact import LoadedModel, load_artifact
from models.shadow import compare
from tests.support.models import save_small_model, training_records
from transforms.contracts.feature_spec import model_input_vector


@pytest.fixture(scope="module")
def current(tmp_path_factory) -> LoadedModel:
    return load_artifact(save_small_model(str(tmp_path_factory.mktemp("shadow") / "model")))


@pytest.fixture(scope="module")
def X() -> np.ndarray:
    return np.array([model_input_vector(r) for r in training_records()])


def _with_ids_swapped(model: LoadedModel, first: int, second: int) -> LoadedModel:
    card = dict(model.card)
    swap = {first: second, second: first}
    card["segments"] = [dict(s, segment_id=swap.get(int(s["segment_id"]), int(s["segment_id"])))
                        for s in model.card["segments"]]
    return LoadedModel(model.model, card, model.path)


def test_the_same_model_moves_nobody(current, X):
    result = compare(current, current, X)
    assert not result.moved.any()
    assert result.drivers == [[] for _ in range(len(X))]
    np.testing.assert_array_equal(result.current.segment_id, result.candidate.segment_id)


def test_swapped_ids_move_exactly_the_users_of_those_segments(current, X):
    candidate = _with_ids_swapped(current, 0, 1)
    result = compare(current, candidate, X, top=2)
    ids = result.current.segment_id
    np.testing.assert_array_equal(result.moved, np.isin(ids, [0, 1]))
    np.testing.assert_array_equal(result.candidate.segment_id[result.moved], 1 - ids[result.moved])
    assert result.moved.sum() == np.isin(ids, [0, 1]).sum() > 0
    for row in np.flatnonzero(result.moved):
        drivers = result.drivers[row]
        assert len(drivers) == 2
        for d in drivers:
            assert d["contribution"] == pytest.approx(0.0, abs=1e-9)
            assert d["current_centroid"] == pytest.approx(d["candidate_centroid"])
            assert d["value"] == pytest.approx(X[row, current.features.index(d["feature"])])


def test_models_reading_other_features_cannot_be_compared(current, X):
    other = LoadedModel(current.model, current.card, current.path)
    other.features = tuple(reversed(current.features))
    with pytest.raises(ValueError, match="other features"):
        compare(current, other, X)
