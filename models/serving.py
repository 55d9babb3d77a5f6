"""The model a job serves with, verified once on the launcher and pinned on every worker.

`serving_model(model_dir, expected_sha256)` loads the artifact through
`models.artifact.load_artifact` (card, digest, the optional pin, clusters against the card)
and returns the card with the scoring handler and the change explainer, both pinned to the
digest it verified: a model file replaced after the job was submitted (even with a card
rewritten to match) is refused by every worker load, pinned by the user or not.

    model = serving_model("models/default", expected_sha256=None)
    batch.build_pipeline(p, options, key, model, target, run_id)
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

from apache_beam.ml.inference.base import ModelHandler

from models.artifact import load_artifact
from models.explain import ChangeExplainer, change_explainer
from models.handler import assignment_handler


class ServingModel(NamedTuple):
    """A verified artifact, as a job's graph needs it."""

    card: dict  # the verified model card
    handler: ModelHandler  # scores feature records (`models.handler.assignment_handler`)
    explainer: ChangeExplainer  # explains segment changes (`models.explain.change_explainer`)

    @property
    def sha256(self) -> str:
        return self.card["model_sha256"]


def serving_model(model_dir: str, expected_sha256: Optional[str] = None, **batching: Any) -> ServingModel:
    """Verifies the artifact in `model_dir` now and pins every later load to its digest.

    Args:
        model_dir: the artifact folder (local or gs://).
        expected_sha256: the digest the user pinned (``--model_sha256``); None checks the
            model file against its card only.
        batching: `models.handler.SegmentScorer` batching bounds.

    Raises:
        ArtifactError: the artifact is missing, malformed, tampered with or not the pinned one.
    """
    card = load_artifact(model_dir, expected_sha256=expected_sha256).card
    digest = card["model_sha256"]
    return ServingModel(card, assignment_handler(model_dir, expected_sha256=digest, **batching),
                        change_explainer(model_dir, digest))
