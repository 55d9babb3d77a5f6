"""The segmentation model as Beam's RunInference sees it: a `ModelHandler` over a verified artifact.

`assignment_handler(model_dir)` is what a pipeline passes to `transforms.scoring.AssignSegments`::

    record --(preprocess)--> (record, scoring vector)
           --RunInference(AssignmentHandler)--> assignment dict

Each example carries its feature record along with the model input: the record holds
the identity (user_key, as-of time) and everything the output row repeats, so the
prediction is joined back without a shuffle (a CoGroupByKey in streaming would need its
own windowing and would add latency).

The scoring vector is the model input (`MODEL_FEATURES` order) followed by whether the
user is a customer and the three BG/NBD inputs (x, t_x, T in days as of the record's
scoring time, `models.bgnbd.inputs_from_record`), so segment, RFM and BG/NBD scores are
computed vectorised per batch in one place, with the model's own thresholds and
parameters. P(alive), expected purchases, the purchase propensities and churn risk are
NULL for users who have not bought yet: BG/NBD describes customers from their first
purchase on.

The scores of a customer, all as of the record's scoring time:

* ``p_purchase_30d`` / ``p_purchase_90d``: the probability of at least one purchase in the
  next 30 / 90 days (`models.bgnbd.p_purchase`);
* ``churn_risk = 1 - p_purchase_90d``: the probability of NO purchase in the next 90 days
  (`CHURN_HORIZON_DAYS`). It is never 0 and grows with every silent day, for one-time buyers
  too; ``1 - p_alive`` would not (BG/NBD's P(alive) is 1 for anyone without a repeat purchase);
* ``p_alive``: BG/NBD's probability that the customer has not dropped out. Reported as the
  model defines it, but it does not rank who buys next (a one-time buyer is "alive").

`AssignmentHandler` composes `SegmentScorer` (vectors -> `Scores`) and builds the
assignment dicts itself, per batch, counting them (`outcomes.ASSIGNMENTS`): a
RunInference postprocessing function would be a Beam step of its own, per record. Each
assignment also carries the record's moment (`models.moments`, under the thresholds of the
model's card; None for a card without them).
"""

from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple, Optional, Sequence

import numpy as np
from apache_beam.ml.inference.base import ModelHandler

from models import bgnbd, rfm
from models.artifact import LoadedModel, load_artifact
from models.moments import Moment, MomentThresholds, moment_of
from transforms.contracts.feature_spec import FEATURE_VERSION, MODEL_FEATURES, PROFILE_FACTS, model_input_vector
from transforms.contracts.outcomes import ASSIGNMENTS, counter

EXPECTED_PURCHASES_HORIZON_DAYS = 30.0
PROPENSITY_HORIZONS_DAYS = (30.0, 90.0)  # p_purchase_30d, p_purchase_90d
CHURN_HORIZON_DAYS = PROPENSITY_HORIZONS_DAYS[1]  # churn_risk = 1 - p_purchase_90d
DEFAULT_MIN_BATCH_SIZE = 256
DEFAULT_MAX_BATCH_SIZE = 4096
METRICS_NAMESPACE = "segments_inference"


class Scores(NamedTuple):
    """What the handler returns per row (the `inference` of a PredictionResult)."""

    segment_id: int
    segment_name: str
    distance: float
    margin: float
    model_version: str
    rfm_r: int
    rfm_f: int
    rfm_m: int
    rfm_segment: str
    p_alive: Optional[float]  # None: not a customer yet
    expected_purchases_30d: Optional[float]
    p_purchase_30d: Optional[float]  # P(at least one purchase in the next 30 days)
    p_purchase_90d: Optional[float]


# What each customer score means, as the model card states it.
SCORE_DEFINITIONS: dict[str, str] = {
    "p_purchase_30d": "P(at least one purchase in the next 30 days): BG/NBD, closed form "
                      "P(alive) * (1 - ((alpha+T)/(alpha+T+t))^(r+x))",
    "p_purchase_90d": "P(at least one purchase in the next 90 days): BG/NBD, closed form as p_purchase_30d",
    "churn_risk": "P(no purchase in the next 90 days) = 1 - p_purchase_90d; never 0, grows with every silent day",
    "p_alive": "BG/NBD P(not dropped out); 1 for a customer without a repeat purchase, so it does not rank "
               "who buys next",
    "expected_purchases_30d": "BG/NBD expected purchase days in the next 30 days",
}


BGNBD_INPUTS = 4  # is a customer (0/1), x, t_x, T


def scoring_vector(record: Mapping[str, Any]) -> list[float]:
    """Model input (MODEL_FEATURES order) + is a customer (0/1) + BG/NBD (x, t_x, T) in days.

    A plain list: numpy is used per batch (`score_batch`); per record, a small array
    and its checks cost several times the list's.

    Raises:
        KeyError: a model feature is missing.
        ValueError: a value is not finite, or the purchase times are inconsistent.
            Checked per record here so that one bad record is dead-lettered
            alone instead of failing its whole inference batch.
    """
    vector = model_input_vector(record)
    vector.append(float(bgnbd.is_customer(record)))
    vector.extend(bgnbd.inputs_from_record(record))
    if not all(map(math.isfinite, vector)):
        bad = [name for name, v in zip(MODEL_FEATURES, vector) if not math.isfinite(v)]
        raise ValueError(f"non-finite model input: {bad or 'BG/NBD inputs'}")
    return vector


def score_batch(model: LoadedModel, batch: Sequence[Sequence[float]],
                inference_args: Optional[dict[str, Any]] = None) -> list[Scores]:
    """Segment, RFM and BG/NBD scores of a batch of scoring vectors."""
    matrix = np.array(batch, dtype=float)
    if matrix.ndim != 2:
        raise ValueError(f"scoring vectors of unequal lengths: {sorted({len(v) for v in batch})}")
    n = len(model.features)
    if matrix.shape[1] != n + BGNBD_INPUTS:
        raise ValueError(f"scoring vectors have {matrix.shape[1]} columns, expected {n} features + "
                         f"{BGNBD_INPUTS} BG/NBD inputs")
    X = matrix[:, :n]
    assigned = model.assign(X)
    col = {name: i for i, name in enumerate(model.features)}
    r, f, m, rfm_names = rfm.score_arrays(model.rfm, *(X[:, col[name]] for name in rfm.RFM_FEATURES))
    per_unit = bgnbd.DAYS_PER_UNIT[model.bgnbd.time_unit]
    customer = matrix[:, n] > 0
    x, t_x, T = matrix[:, n + 1], matrix[:, n + 2] / per_unit, matrix[:, n + 3] / per_unit
    alive = np.atleast_1d(bgnbd.p_alive(model.bgnbd, x, t_x, T))
    expected = np.atleast_1d(bgnbd.expected_purchases(model.bgnbd, EXPECTED_PURCHASES_HORIZON_DAYS / per_unit,
                                                      x, t_x, T))
    propensity = [np.atleast_1d(bgnbd.p_purchase(model.bgnbd, days / per_unit, x, t_x, T))
                  for days in PROPENSITY_HORIZONS_DAYS]
    if not all(np.all(np.isfinite(v[customer])) for v in (alive, expected, *propensity)):
        raise ValueError("BG/NBD produced a non-finite score")
    customers = customer.tolist()
    # tolist() turns each column into Python scalars at once (indexing numpy per row is slow).
    columns = (np.asarray(assigned.segment_id).astype(int).tolist(), list(assigned.segment_name),
               np.asarray(assigned.distance, dtype=float).tolist(), np.asarray(assigned.margin, dtype=float).tolist(),
               [model.model_version] * len(matrix), np.asarray(r).astype(int).tolist(),
               np.asarray(f).astype(int).tolist(), np.asarray(m).astype(int).tolist(), list(rfm_names),
               [a if c else None for a, c in zip(alive.astype(float).tolist(), customers)],
               [e if c else None for e, c in zip(expected.astype(float).tolist(), customers)],
               *([v if c else None for v, c in zip(p.astype(float).tolist(), customers)] for p in propensity))
    return [Scores(*values) for values in zip(*columns)]


class SegmentScorer(ModelHandler[Sequence[float], Scores, LoadedModel]):
    """Scoring vectors -> `Scores`, with the artifact loaded through `load_artifact` (sha256 verified).

    Args:
        model_dir: artifact folder (local path or gs://).
        expected_sha256: optional pinned digest of model.joblib.
        min_batch_size / max_batch_size: BatchElements bounds. 256..4096 keeps
            per-batch overhead (numpy stacking, one predict call) small against
            the work, while a 4096 x 31 float batch is only about 1 MB.
        max_batch_duration_secs: in streaming, the longest a partial batch waits.
    """

    def __init__(self, model_dir: str, *, expected_sha256: str | None = None,
                 min_batch_size: int = DEFAULT_MIN_BATCH_SIZE, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
                 max_batch_duration_secs: int | None = None):
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size,
                         max_batch_duration_secs=max_batch_duration_secs)
        self._model_dir = model_dir
        self._expected_sha256 = expected_sha256

    @property
    def model_dir(self) -> str:
        return self._model_dir

    def load_model(self) -> LoadedModel:
        return load_artifact(self._model_dir, expected_sha256=self._expected_sha256)

    def run_inference(self, batch: Sequence[Sequence[float]], model: LoadedModel,
                      inference_args: Optional[dict[str, Any]] = None) -> list[Scores]:
        return score_batch(model, batch, inference_args)

    def get_metrics_namespace(self) -> str:
        return METRICS_NAMESPACE

    def get_num_bytes(self, batch: Sequence[Sequence[float]]) -> int:
        # Beam's default pickles the batch to measure it; a vector is 8 bytes a value.
        return 8 * sum(map(len, batch))


ScoringInput = tuple[Mapping[str, Any], list[float]]


class AssignmentHandler(ModelHandler[ScoringInput, dict, LoadedModel]):
    """(feature record, scoring vector) -> assignment dict, by way of a `SegmentScorer`."""

    def __init__(self, scorer: SegmentScorer):
        super().__init__()
        self._scorer = scorer
        self._assignments = counter(ASSIGNMENTS)

    def load_model(self) -> LoadedModel:
        return self._scorer.load_model()

    def run_inference(self, batch: Sequence[ScoringInput], model: LoadedModel,
                      inference_args: Optional[dict[str, Any]] = None) -> list[dict[str, Any]]:
        scores = self._scorer.run_inference([vector for _, vector in batch], model, inference_args)
        assignments = [to_assignment(record, s, moment_or_none(record, model.moments))
                       for (record, _), s in zip(batch, scores)]
        self._assignments.inc(len(assignments))
        return assignments

    def batch_elements_kwargs(self) -> Mapping[str, Any]:
        return self._scorer.batch_elements_kwargs()

    def get_metrics_namespace(self) -> str:
        return self._scorer.get_metrics_namespace()

    def get_num_bytes(self, batch: Sequence[ScoringInput]) -> int:
        # Beam's default pickles every example, feature records included, only to report
        # the byte-count metric; the model inputs alone are counted.
        return self._scorer.get_num_bytes([vector for _, vector in batch])


def to_scoring_input(record: Mapping[str, Any]) -> ScoringInput:
    """A feature record -> (record, scoring vector): the RunInference preprocessing."""
    return record, scoring_vector(record)


def assignment_handler(model_dir: str, *, expected_sha256: str | None = None, **batching: Any) -> ModelHandler:
    """The handler a pipeline hands to `transforms.scoring.AssignSegments`: feature records in,
    assignment dicts out (batching: see `SegmentScorer`)."""
    scorer = SegmentScorer(model_dir, expected_sha256=expected_sha256, **batching)
    return AssignmentHandler(scorer).with_preprocess_fn(to_scoring_input)


def churn_risk(p_purchase_90d: Optional[float]) -> Optional[float]:
    """P(no purchase in the next `CHURN_HORIZON_DAYS` days); None for a prospect."""
    return None if p_purchase_90d is None else 1.0 - p_purchase_90d


def moment_or_none(record: Mapping[str, Any], thresholds: Optional[MomentThresholds]) -> Optional[Moment]:
    """The record's moment under the card's thresholds; None for a card without them."""
    return None if thresholds is None else moment_of(record, thresholds)


def to_assignment(record: Mapping[str, Any], s: Scores, moment: Optional[Moment] = None) -> dict[str, Any]:
    """A feature record, its scores and its moment -> the assignment (the row before its
    timestamps are formatted)."""
    return {
        "user_key": record["user_key"],
        "as_of_us": int(record["as_of_us"]),
        "scoring": record.get("scoring"),
        "segment_id": s.segment_id,
        "segment_name": s.segment_name,
        "distance": s.distance,
        "margin": s.margin,
        "rfm": {"r": s.rfm_r, "f": s.rfm_f, "m": s.rfm_m, "rfm_segment": s.rfm_segment},
        "p_alive": s.p_alive,
        "expected_purchases_30d": s.expected_purchases_30d,
        "p_purchase_30d": s.p_purchase_30d,
        "p_purchase_90d": s.p_purchase_90d,
        "churn_risk": churn_risk(s.p_purchase_90d),
        "features": {name: float(record[name]) for name in MODEL_FEATURES},
        "profile": {name: record.get(name) for name in PROFILE_FACTS},
        "feature_version": FEATURE_VERSION,
        "model_version": s.model_version,
        "event_count": int(record.get("event_count") or 0),
        "moment": None if moment is None else moment.moment,
        "moment_reason": None if moment is None else moment.reason,
    }
