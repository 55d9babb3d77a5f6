"""Applying the model in Beam: RunInference over a verified artifact, RFM and BG/NBD scores.

`AssignSegments` turns feature records into segment assignments::

    record --(preprocess)--> (record, scoring vector)
           --RunInference(KeyedModelHandler(SegmentModelHandler))--> assignment dict

The key is the feature record itself: it carries the identity (user_key,
window, pane) and everything the output row repeats, so the prediction is
joined back without a shuffle (a CoGroupByKey in streaming would need its own
windowing and would add latency).

The scoring vector is the model input (`MODEL_FEATURES` order) followed by the
three BG/NBD inputs (x, t_x, T in days, `models.bgnbd.inputs_from_record`), so
segment, RFM and BG/NBD scores are computed vectorised per batch in one place,
with the model's own thresholds and parameters.

The keyed handler builds the assignment dicts itself, per batch, and counts them
(`outcomes.ASSIGNMENTS`). A postprocessing step would add a Beam step and an
exception-handling wrapper per record, for a conversion that reads only what the
preprocessing has checked; should it fail, its batch is dead-lettered like any failed
inference.

Failures anywhere (a record missing a feature, a NaN, an inconsistent purchase
time, a failing batch) become `DeadLetter`s with `ErrorCode.INFERENCE_FAILED`
at `Stage.INFERENCE` through `RunInference(...).with_exception_handling()`.

Example::

    assignments, dead_letters = features | "AssignSegments" >> AssignSegments("models/default")
"""

from __future__ import annotations

import enum
import json
import math
from typing import Any, Iterable, Mapping, NamedTuple, Optional, Sequence

import apache_beam as beam
import numpy as np
from apache_beam.ml.inference.base import KeyedModelHandler, PredictionResult, RunInference
from apache_beam.ml.inference.sklearn_inference import SklearnModelHandlerNumpy

from models import bgnbd, rfm
from models.artifact import LoadedModel, load_artifact
from transforms.feature_spec import FEATURE_VERSION, MODEL_FEATURES, model_input_vector
from transforms.outcomes import ASSIGNMENTS, DeadLetter, ErrorCode, Stage, counter, dead_letter_counter

EXPECTED_PURCHASES_HORIZON_DAYS = 30.0
DEFAULT_MIN_BATCH_SIZE = 256
DEFAULT_MAX_BATCH_SIZE = 4096
DEAD_LETTER_SOURCE = "assign_segments"


class AssignOutput(str, enum.Enum):
    """Output tags of `AssignSegments`."""

    ASSIGNMENTS = "assignments"
    DEAD_LETTERS = "dead_letters"


class AssignResult(NamedTuple):
    """The tagged outputs of `AssignSegments` (field names = `AssignOutput` values)."""

    assignments: beam.PCollection
    dead_letters: beam.PCollection


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
    p_alive: float
    expected_purchases_30d: float


def scoring_vector(record: Mapping[str, Any]) -> list[float]:
    """Model input (MODEL_FEATURES order) + BG/NBD (x, t_x, T) in days.

    A plain list: numpy is used per batch (`score_batch`); per record, a small array
    and its checks cost several times the list's.

    Raises:
        KeyError: a model feature is missing.
        ValueError: a value is not finite, or the purchase times are inconsistent.
            Checked per record here so that one bad record is dead-lettered
            alone instead of failing its whole inference batch.
    """
    vector = model_input_vector(record)
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
    if matrix.shape[1] != n + 3:
        raise ValueError(f"scoring vectors have {matrix.shape[1]} columns, expected {n} features + 3 BG/NBD inputs")
    X = matrix[:, :n]
    assigned = model.assign(X)
    col = {name: i for i, name in enumerate(model.features)}
    r, f, m, rfm_names = rfm.score_arrays(model.rfm, X[:, col["recency_days"]], X[:, col["frequency"]],
                                          X[:, col["monetary_total"]])
    per_unit = bgnbd.DAYS_PER_UNIT[model.bgnbd.time_unit]
    x, t_x, T = matrix[:, n], matrix[:, n + 1] / per_unit, matrix[:, n + 2] / per_unit
    alive = np.atleast_1d(bgnbd.p_alive(model.bgnbd, x, t_x, T))
    expected = np.atleast_1d(bgnbd.expected_purchases(model.bgnbd, EXPECTED_PURCHASES_HORIZON_DAYS / per_unit,
                                                      x, t_x, T))
    if not (np.all(np.isfinite(alive)) and np.all(np.isfinite(expected))):
        raise ValueError("BG/NBD produced a non-finite score")
    # tolist() turns each column into Python scalars at once (indexing numpy per row is slow).
    columns = (np.asarray(assigned.segment_id).astype(int).tolist(), list(assigned.segment_name),
               np.asarray(assigned.distance, dtype=float).tolist(), np.asarray(assigned.margin, dtype=float).tolist(),
               [model.model_version] * len(matrix), np.asarray(r).astype(int).tolist(),
               np.asarray(f).astype(int).tolist(), np.asarray(m).astype(int).tolist(), list(rfm_names),
               alive.astype(float).tolist(), expected.astype(float).tolist())
    return [Scores(*values) for values in zip(*columns)]


class SegmentModelHandler(SklearnModelHandlerNumpy):
    """Beam's sklearn numpy handler, loading through `load_artifact` (sha256 verified on the worker).

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
        super().__init__(model_uri=model_dir, inference_fn=score_batch, min_batch_size=min_batch_size,
                         max_batch_size=max_batch_size, max_batch_duration_secs=max_batch_duration_secs)
        self._expected_sha256 = expected_sha256

    def load_model(self) -> LoadedModel:
        return load_artifact(self._model_uri, expected_sha256=self._expected_sha256)

    def run_inference(self, batch: Sequence[Sequence[float]], model: LoadedModel,
                      inference_args: Optional[dict[str, Any]] = None) -> Iterable[PredictionResult]:
        scores = self._model_inference_fn(model, batch, inference_args)
        return [PredictionResult(example, score, model_id=model.model_version) for example, score in zip(batch, scores)]

    def get_metrics_namespace(self) -> str:
        return "segments_inference"

    def get_num_bytes(self, batch: Sequence[Sequence[float]]) -> int:
        # Beam's default pickles the batch to measure it; a vector is 8 bytes a value.
        return 8 * sum(map(len, batch))


class _RecordKeyedHandler(KeyedModelHandler):
    """Beam's keyed handler, keyed by the feature record, returning assignment dicts
    (see the module docstring)."""

    def __init__(self, unkeyed: SegmentModelHandler):
        super().__init__(unkeyed)
        self._assignments = counter(ASSIGNMENTS)

    def run_inference(self, batch: Sequence[tuple[Mapping[str, Any], Sequence[float]]], model: LoadedModel,
                      inference_args: Optional[dict[str, Any]] = None) -> list[dict[str, Any]]:
        assignments = list(map(to_assignment, super().run_inference(batch, model, inference_args)))
        self._assignments.inc(len(assignments))
        return assignments

    def get_num_bytes(self, batch: Sequence[tuple[Mapping[str, Any], Sequence[float]]]) -> int:
        # Beam's default pickles every key of the batch only to report the byte-count
        # metric; here the keys are the feature records, and that was a third of the
        # inference step. The metric counts the model inputs alone.
        return self._unkeyed.get_num_bytes([vector for _, vector in batch])


def _to_keyed(record: Mapping[str, Any]) -> tuple[Mapping[str, Any], list[float]]:
    return record, scoring_vector(record)


def to_assignment(keyed: tuple[Mapping[str, Any], PredictionResult]) -> dict[str, Any]:
    """(record, prediction) -> the assignment row."""
    record, result = keyed
    s: Scores = result.inference
    return {
        "user_key": record["user_key"],
        "window_start_us": int(record["window_start_us"]),
        "window_end_us": int(record["window_end_us"]),
        "pane": record.get("pane"),
        "segment_id": s.segment_id,
        "segment_name": s.segment_name,
        "distance": s.distance,
        "margin": s.margin,
        "rfm": {"r": s.rfm_r, "f": s.rfm_f, "m": s.rfm_m, "rfm_segment": s.rfm_segment},
        "p_alive": s.p_alive,
        "expected_purchases_30d": s.expected_purchases_30d,
        "churn_risk": 1.0 - s.p_alive,
        "features": {name: float(record[name]) for name in MODEL_FEATURES},
        "feature_version": FEATURE_VERSION,
        "model_version": s.model_version,
        "event_count": int(record.get("event_count") or 0),
    }


def _payload(record: Any) -> str:
    return json.dumps(record, sort_keys=True, default=str)


def _error_text(error: Any) -> str:
    # Beam's exception handling emits (type, repr, traceback lines).
    if isinstance(error, tuple) and len(error) >= 2:
        return f"{getattr(error[0], '__name__', error[0])}: {error[1]}"
    return str(error)


class _ToDeadLetters(beam.DoFn):
    """A failed element (a record, a keyed record or a batch of them) -> one DeadLetter per record."""

    def __init__(self, step: str, source: str):
        self._step = step
        self._source = source

    def setup(self):
        self._counter = dead_letter_counter(ErrorCode.INFERENCE_FAILED)

    def process(self, failed: tuple[Any, Any]) -> Iterable[DeadLetter]:
        element, error = failed
        records = [element] if self._step != "inference" else [item[0] for item in element]
        for record in records:
            self._counter.inc()
            yield DeadLetter.of(_payload(record), ErrorCode.INFERENCE_FAILED, f"{self._step}: {_error_text(error)}",
                                self._source, Stage.INFERENCE)


class AssignSegments(beam.PTransform):
    """Feature records -> (assignments, dead letters).

    Args:
        model_dir: artifact folder (local or gs://), loaded and verified on the workers.
        expected_sha256: optional pinned digest of model.joblib.
        min_batch_size / max_batch_size / max_batch_duration_secs: see `SegmentModelHandler`.
        source: the `source` written on dead letters.
    """

    def __init__(self, model_dir: str, *, expected_sha256: str | None = None,
                 min_batch_size: int = DEFAULT_MIN_BATCH_SIZE, max_batch_size: int = DEFAULT_MAX_BATCH_SIZE,
                 max_batch_duration_secs: int | None = None, source: str = DEAD_LETTER_SOURCE):
        super().__init__()
        self._handler = SegmentModelHandler(model_dir, expected_sha256=expected_sha256,
                                            min_batch_size=min_batch_size, max_batch_size=max_batch_size,
                                            max_batch_duration_secs=max_batch_duration_secs)
        self._source = source

    def model_handler(self):
        """The keyed handler with its preprocessing, as RunInference uses it."""
        return _RecordKeyedHandler(self._handler).with_preprocess_fn(_to_keyed)

    def expand(self, records: beam.PCollection) -> AssignResult:
        assignments, dlq = records | "RunInference" >> RunInference(self.model_handler()).with_exception_handling()
        failed = [dlq.failed_inferences | "InferenceFailures" >> beam.ParDo(_ToDeadLetters("inference", self._source))]
        failed += [pc | f"PreprocessFailures{i}" >> beam.ParDo(_ToDeadLetters("preprocess", self._source))
                   for i, pc in enumerate(dlq.failed_preprocessing)]
        dead_letters = tuple(failed) | "FlattenDeadLetters" >> beam.Flatten()
        return AssignResult(assignments, dead_letters)
