"""AssignSegments with a tiny real model saved to tmp_path, run through TestPipeline; the model handler."""

from __future__ import annotations

import math

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from models.artifact import load_card
from models.handler import SegmentScorer, assignment_handler, score_batch, scoring_vector
from tests.support.bgnbd_reference import expected_direct, p_alive_direct, p_purchase_direct
from tests.support.rfm_reference import tie_aware_cuts_direct
from tests.support.models import DAY_US, END_US, PARAMS, SIZES, group_vectors, record, save_small_model
from models.representation import CLUSTERING_FEATURES, MIN_WITHIN_VARIANCE, PRIOR_WEIGHTS
from transforms.contracts.feature_spec import (FEATURE_VERSION, MODEL_FEATURES, PROFILE_FACTS, RATE_EVIDENCE,
                                               SKEWED_FEATURES)
from transforms.contracts.outcomes import DeadLetter, ErrorCode, Stage
from transforms.scoring import AssignSegments, FailedToDeadLetters

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_small_model(str(tmp_path_factory.mktemp("model") / "artifact"))


F = len(MODEL_FEATURES)
INDEX = {name: i for i, name in enumerate(MODEL_FEATURES)}
CLUSTERING = [INDEX[name] for name in CLUSTERING_FEATURES]
LOGGED = np.array([name in SKEWED_FEATURES for name in CLUSTERING_FEATURES])


def scaled(X: np.ndarray) -> np.ndarray:
    """The model space computed here from the training rows: each rate shrunk towards the rows'
    pooled rate, the clustering inputs log1p'd where heavy-tailed and z-scored; then the
    whitening, which is the floor 1 / sqrt(MIN_WITHIN_VARIANCE) times the identity, since the
    rows of a group are identical (no spread within the segments)."""
    train = np.repeat(group_vectors(), SIZES, axis=0)

    def shrink(rows):
        out = rows.copy()
        for rate, (evidence, least) in RATE_EVIDENCE.items():
            n_train = np.maximum(train[:, INDEX[evidence]], least)
            prior = (train[:, INDEX[rate]] * n_train).sum() / n_train.sum()
            n, m = np.maximum(rows[:, INDEX[evidence]], least), PRIOR_WEIGHTS[evidence]
            out[:, INDEX[rate]] = (rows[:, INDEX[rate]] * n + m * prior) / (n + m)
        chosen = out[:, CLUSTERING]
        return np.where(LOGGED, np.log1p(chosen), chosen)

    reference = shrink(train)
    z = (shrink(np.asarray(X, dtype=float)) - reference.mean(axis=0)) / reference.std(axis=0)
    return z / np.sqrt(MIN_WITHIN_VARIANCE)


def rfm_scores(values: np.ndarray) -> tuple[int, int, int]:
    """R, F, M with the tie-aware cut points of the training CUSTOMERS (groups 0, 1)."""
    if values[MODEL_FEATURES.index("orders")] <= 0:
        return 0, 0, 0
    train = np.repeat(group_vectors()[:2], SIZES[:2], axis=0)
    scores = []
    for name in ("recency_days", "orders", "spend_total"):
        i = MODEL_FEATURES.index(name)
        cuts = tie_aware_cuts_direct(train[:, i])
        scores.append(1 + sum(1 for c in cuts if c < values[i]))
    return 6 - scores[0], scores[1], scores[2]


# The documented RF grid, rows R = 5..1, columns F = 1..5 (models/rfm.py docstring).
RF_TABLE = {
    5: ["New", "Potential loyalist", "Potential loyalist", "Champions", "Champions"],
    4: ["Promising", "Potential loyalist", "Potential loyalist", "Loyal", "Loyal"],
    3: ["About to sleep", "About to sleep", "Need attention", "Loyal", "Loyal"],
    2: ["Hibernating", "Hibernating", "At risk", "At risk", "Can't lose"],
    1: ["Lost", "Lost", "At risk", "At risk", "Can't lose"],
}


def expected_assignment(rec: dict, card: dict) -> dict:
    values = np.array([rec[n] for n in MODEL_FEATURES], dtype=float)
    centroids = scaled(group_vectors())
    d = np.sqrt(((scaled(values[None, :])[0] - centroids) ** 2).sum(axis=1))
    nearest = int(d.argmin())
    r, f, m = rfm_scores(values)
    customer = rec["purchase_days"] > 0
    if customer:
        x = rec["purchase_days"] - 1
        t_x = (rec["last_purchase_us"] - rec["first_purchase_us"]) / DAY_US
        T = (rec["as_of_us"] - rec["first_purchase_us"]) / DAY_US
        alive, expected = p_alive_direct(PARAMS, x, t_x, T), expected_direct(PARAMS, 30.0, x, t_x, T)
        p30, p90 = p_purchase_direct(PARAMS, 30.0, x, t_x, T), p_purchase_direct(PARAMS, 90.0, x, t_x, T)
    else:
        alive = expected = p30 = p90 = None  # BG/NBD describes customers only
    names = {s["segment_id"]: s["name"] for s in card["segments"]}
    return {
        "user_key": rec["user_key"], "as_of_us": rec["as_of_us"], "scoring": "daily",
        "segment_id": nearest,  # group g has the g-th largest size, so its fresh id is g
        "segment_name": names[nearest],
        "distance": float(d[nearest]),
        "margin": float(np.sort(d)[1] - d[nearest]),
        "rfm": {"r": r, "f": f, "m": m, "rfm_segment": RF_TABLE[r][f - 1] if r else "Prospect"},
        "p_alive": alive,
        "expected_purchases_30d": expected,
        "p_purchase_30d": p30,
        "p_purchase_90d": p90,
        "churn_risk": None if p90 is None else 1.0 - p90,  # P(no purchase in 90 days)
        "features": {n: float(rec[n]) for n in MODEL_FEATURES},
        "profile": {n: rec[n] for n in PROFILE_FACTS},
        "feature_version": FEATURE_VERSION,
        "model_version": card["model_version"],
        "event_count": 7,
        # The test model's card has no moments (its records lack the moment facts): none scored.
        "moment": None,
        "moment_reason": None,
    }


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)
    return a == b


def approx_rows(expected: list[dict]):
    def matcher(actual):
        actual = sorted(actual, key=lambda row: row["user_key"])
        want = sorted(expected, key=lambda row: row["user_key"])
        assert len(actual) == len(want), (actual, want)
        for got, exp in zip(actual, want):
            assert _close(got, exp), (got, exp)
    return matcher


def inputs() -> list[dict]:
    v = group_vectors()
    between = 0.7 * v[0] + 0.3 * v[1]
    return [
        record("at-0", v[0], 4, first_day=2.0, last_day=25.5),
        record("at-1", v[1], 2, first_day=10.0, last_day=12.0, as_of_us=END_US + 40 * DAY_US),  # silent 40 days more
        record("at-2", v[2], 0),  # never bought
        record("between", between, 3, first_day=0.0, last_day=29.0),
    ]


def test_assignments_exact(model_dir):
    card = load_card(model_dir)
    good = inputs()
    expected = [expected_assignment(rec, card) for rec in good]
    assert [e["segment_id"] for e in expected] == [0, 1, 2, 0]
    assert expected[0]["distance"] == pytest.approx(0.0, abs=1e-9)  # the points sit on the centroids
    missing = {k: v for k, v in good[0].items() if k != "sessions_30d"}
    missing["user_key"] = "missing-feature"
    nan = dict(good[1], user_key="nan-feature", lifetime_bounce_rate=float("nan"))
    with TestPipeline() as p:
        assignments, dead_letters = (
            p | beam.Create(good + [missing, nan]) | "AssignSegments" >> AssignSegments(assignment_handler(model_dir)))
        assert_that(assignments, approx_rows(expected))
        assert_that(dead_letters | beam.Map(lambda d: (d.error_code, d.stage, d.error_detail.split(":")[0],
                                                       '"user_key": "' in d.raw_payload)),
                    equal_to([("inference_failed", "inference", "preprocess", True)] * 2), label="CheckDeadLetters")


def test_score_batch_directly(model_dir):
    card = load_card(model_dir)
    handler = SegmentScorer(model_dir)
    model = handler.load_model()
    got = score_batch(model, [scoring_vector(rec) for rec in inputs()])
    for rec, row in zip(inputs(), got):
        r, f, m = rfm_scores(np.array([rec[n] for n in MODEL_FEATURES]))
        assert (row.rfm_r, row.rfm_f, row.rfm_m) == (r, f, m)
        assert row.rfm_segment == (RF_TABLE[r][f - 1] if r else "Prospect")
        assert (row.p_alive is None) == (rec["purchase_days"] == 0)
        assert (row.p_purchase_30d is None, row.p_purchase_90d is None) == (row.p_alive is None,) * 2
        assert row.model_version == card["model_version"]


def test_handler_batching_and_verified_loading(model_dir, tmp_path):
    handler = SegmentScorer(model_dir)
    kwargs = handler.batch_elements_kwargs()
    assert kwargs["min_batch_size"] == 256 and kwargs["max_batch_size"] == 4096
    assert assignment_handler(model_dir).batch_elements_kwargs() == kwargs  # what RunInference batches by
    with pytest.raises(Exception, match="pinned"):
        SegmentScorer(model_dir, expected_sha256="0" * 64).load_model()


def test_failed_batch_becomes_one_dead_letter_per_record():
    fn = FailedToDeadLetters("inference", "test")
    fn.setup()
    batch = [({"user_key": "a"}, np.zeros(3)), ({"user_key": "b"}, np.zeros(3))]
    out = list(fn.process((batch, (ValueError, "ValueError('boom')", []))))
    assert [type(d) for d in out] == [DeadLetter, DeadLetter]
    assert [d.raw_payload for d in out] == ['{"user_key": "a"}', '{"user_key": "b"}']
    assert all(d.error_code == ErrorCode.INFERENCE_FAILED.value and d.stage == Stage.INFERENCE.value for d in out)
    assert out[0].error_detail == "inference: ValueError: ValueError('boom')"
