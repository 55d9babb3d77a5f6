"""Scoring: feature records -> segment assignments, with Beam's RunInference.

`AssignSegments` is handed the model as a `ModelHandler` (built in `models.handler`:
feature records in, assignment dicts out), so this layer knows nothing of how the
model is stored or computed. Failures anywhere (a record missing a feature, a NaN, an
inconsistent purchase time, a failing batch) become `DeadLetter`s with
`ErrorCode.INFERENCE_FAILED` at `Stage.INFERENCE` through
`RunInference(...).with_exception_handling()`.

Example::

    handler = models.handler.assignment_handler("models/default")
    assigned = features | "AssignSegments" >> AssignSegments(handler)
    assigned.assignments, assigned.dead_letters
"""

from __future__ import annotations

import json
from typing import Any, Iterable, NamedTuple

import apache_beam as beam
from apache_beam.ml.inference.base import ModelHandler, RunInference

from transforms.contracts.outcomes import DeadLetter, ErrorCode, Stage, dead_letter_counter

DEAD_LETTER_SOURCE = "assign_segments"


class Assigned(NamedTuple):
    """Outputs of `AssignSegments`."""

    assignments: beam.PCollection  # assignment dicts
    dead_letters: beam.PCollection  # DeadLetter, one per record that could not be scored


def _payload(record: Any) -> str:
    return json.dumps(record, sort_keys=True, default=str)


def _error_text(error: Any) -> str:
    # Beam's exception handling emits (type, repr, traceback lines).
    if isinstance(error, tuple) and len(error) >= 2:
        return f"{getattr(error[0], '__name__', error[0])}: {error[1]}"
    return str(error)


class FailedToDeadLetters(beam.DoFn):
    """A failed element of RunInference -> one DeadLetter per record.

    Args:
        step: ``preprocess`` (the element is a feature record) or ``inference`` (the
            element is a batch of (record, vector) examples).
        source: the dead letters' `source`.
    """

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
    """Feature records -> `Assigned` (assignments, dead letters).

    Args:
        handler: the model, as `models.handler.assignment_handler` builds it.
        source: the `source` written on dead letters.
    """

    def __init__(self, handler: ModelHandler, source: str = DEAD_LETTER_SOURCE):
        super().__init__()
        self._handler = handler
        self._source = source

    def expand(self, records: beam.PCollection[dict]):  # -> Assigned (not annotated: Beam would take it for an element type)
        assignments, dlq = records | "RunInference" >> RunInference(self._handler).with_exception_handling()
        failed = [dlq.failed_inferences | "InferenceFailures" >> beam.ParDo(
            FailedToDeadLetters("inference", self._source))]
        failed += [pc | f"PreprocessFailures{i}" >> beam.ParDo(FailedToDeadLetters("preprocess", self._source))
                   for i, pc in enumerate(dlq.failed_preprocessing)]
        dead_letters = tuple(failed) | "FlattenDeadLetters" >> beam.Flatten()
        return Assigned(assignments, dead_letters)
