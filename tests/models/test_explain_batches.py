"""Explaining changes in batches gives what explaining them one by one gives.

* The numpy standardisation equals the fitted scikit-learn pipeline's, bit for bit, on
  random rows (the shipped model and a tiny trained one).
* Contributions of a batch equal those of each row alone, bit for bit, and agree with
  `clustering.contributions` (the definition, a BLAS product) to rounding.
* The bounded change step (`DetectSegmentChanges`: grouping, batching, explaining) writes
  exactly the change records that `change_of` makes user by user.
"""

from __future__ import annotations

import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from models import DEFAULT_MODEL_DIR, clustering
from models.artifact import load_artifact, load_card
from models.explain import Standardiser, change_explainer
from tests.support.models import save_small_model
from transforms.changes import DetectSegmentChanges, change_of, last_of
from transforms.contracts.feature_spec import MODEL_FEATURES


@pytest.fixture(scope="module")
def small_model_dir(tmp_path_factory):
    return save_small_model(str(tmp_path_factory.mktemp("model") / "artifact"))


def random_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    """Non-negative feature rows with heavy tails, exact zeros and large values."""
    rows = rng.gamma(0.7, 5.0, size=(n, len(MODEL_FEATURES)))
    rows[rng.random(rows.shape) < 0.2] = 0.0
    rows[rng.random(rows.shape) < 0.02] *= 1e6
    return rows


@pytest.mark.parametrize("which", ["default", "small"])
def test_numpy_standardisation_is_the_pipelines_bit_for_bit(which, small_model_dir):
    model = load_artifact(DEFAULT_MODEL_DIR if which == "default" else small_model_dir).model
    rows = random_rows(np.random.default_rng(1), 400)
    standardise = Standardiser(model.representation)
    batch = standardise(rows)
    assert np.array_equal(batch, model.standardised(rows))
    assert np.array_equal(np.vstack([standardise(row) for row in rows]), batch)
    with pytest.raises(ValueError):
        standardise(np.where(np.arange(rows.shape[1]) == 3, np.inf, rows[:1]))


def test_contributions_of_a_batch_are_each_rows_own():
    explainer = change_explainer(DEFAULT_MODEL_DIR).load()
    card = load_card(DEFAULT_MODEL_DIR)
    segment_ids = [int(s["segment_id"]) for s in card["segments"]]
    rng = np.random.default_rng(2)
    rows = random_rows(rng, 300)
    afters = [dict(zip(MODEL_FEATURES, map(float, row))) for row in rows]
    sources = [None if rng.random() < 0.3 else int(rng.choice(segment_ids)) for _ in afters]
    targets = [int(rng.choice(segment_ids)) for _ in afters]

    batch = explainer.contributions_of_rows(afters, sources, targets)
    assert batch == [explainer.contributions(a, s, t) for a, s, t in zip(afters, sources, targets)]

    model = load_artifact(DEFAULT_MODEL_DIR).model  # the definition, with scikit-learn and BLAS
    z = model.standardised(rows)
    centre = explainer._centre_of
    a = np.array([np.zeros(z.shape[1]) if s is None else centre[s] for s in sources])
    b = np.array([centre[t] for t in targets])
    reference = clustering.contributions(model.metric, z, a, b)
    # A contribution is a difference of two products: rounding is relative to the products.
    M = model.metric
    products = np.abs((z - a) * ((z - a) @ M)) + np.abs((z - b) * ((z - b) @ M))
    assert np.all(np.abs(np.array(batch) - reference) <= 1e-12 * products + 1e-12)

    befores = [dict(zip(MODEL_FEATURES, map(float, row))) for row in random_rows(rng, len(afters))]
    inputs = list(zip(befores, afters, sources, targets))
    assert explainer.drivers_of_rows(inputs) == [explainer.drivers(*row) for row in inputs]


def _assignments(rng: np.random.Generator, users: int, dates: int, card: dict) -> list[dict]:
    segments = card["segments"]
    out = []
    for u in range(users):
        for d in range(int(rng.integers(1, dates + 1))):
            segment = segments[int(rng.integers(len(segments)))]
            features = dict(zip(MODEL_FEATURES, map(float, random_rows(rng, 1)[0])))
            out.append({"user_key": f"u{u}", "as_of_us": (20_000 + d) * 86_400_000_000, "scoring": "daily",
                        "model_version": card["model_version"], "segment_id": int(segment["segment_id"]),
                        "segment_name": segment["name"],
                        "rfm": {"r": 1, "f": 1, "m": 1, "rfm_segment": str(rng.choice(["new", "loyal"]))},
                        "distance": 1.0, "margin": 0.5, "p_alive": None, "churn_risk": None,
                        "expected_purchases_30d": None, "features": features, "event_count": 3})
    return out


def test_the_batch_change_step_writes_what_change_of_makes_user_by_user():
    card = load_card(DEFAULT_MODEL_DIR)
    assignments = _assignments(np.random.default_rng(3), users=60, dates=3, card=card)
    explainer = change_explainer(DEFAULT_MODEL_DIR)
    loaded = explainer.load()
    expected = []
    for user in sorted({a["user_key"] for a in assignments}):
        previous = None
        for assignment in sorted((a for a in assignments if a["user_key"] == user), key=lambda a: a["as_of_us"]):
            change = change_of(previous, assignment, loaded)
            previous = last_of(assignment)
            if change is not None:
                expected.append(change)
    assert {c["kind"] for c in expected} >= {"entered", "segment"}

    with TestPipeline() as p:
        changes = (p | beam_create(assignments)
                   | DetectSegmentChanges(explainer, max_batch_size=16))
        assert_that(changes, equal_to(expected))


def beam_create(items):
    import apache_beam as beam

    return "Assignments" >> beam.Create(items)
