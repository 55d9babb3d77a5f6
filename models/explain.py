"""Why a user changed segment: per-feature contributions in the model's standardised space.

`transforms.changes` detects segment changes and is handed a `ChangeExplainer` (built
here, loaded in ``DoFn.setup``), as `transforms.scoring` is handed a model handler: the
transforms layer never reads a model itself.

The model measures distance in its standardised space (`models.representation`: each rate
shrunk by its evidence, the clustering inputs log1p'd and z-scored) with the metric M of
its whitening (the Mahalanobis distance of its segments, `models.clustering`). With z the
user's features now in that space and a, b the centres of segments A and B there, the
contribution of clustering input j to a move from A to B is (`clustering.contributions`)::

    contribution_j = (z - a)_j (M (z - a))_j - (z - b)_j (M (z - b))_j

Positive means the feature pulls the user towards B; the contributions add up to
``d(z, A)^2 - d(z, B)^2``, which is positive whenever the model put the user in B because
B is nearer. A user's first assignment ("entered") is measured from the population
centre (the origin of the standardised space: every input at its population mean), so
"before" is then the population centre's value of the feature in original units (for a
rate, after the shrinkage). A change of the named RFM segment alone (same behavioural
segment) is explained by the R, F and M inputs (`models.rfm`), their values before and
after, with no distance contribution (RFM segments are cut points, not distances).

Example::

    explainer = change_explainer("models/default").load()
    explainer.drivers(before, after, from_segment_id=1, to_segment_id=3)
    # [{"feature": "lifetime_cart_adds_per_session", "before": 0.1, "after": 2.0, "contribution": 3.2}, ...]
"""

from __future__ import annotations

import threading
from typing import Mapping, Optional

import numpy as np

from models import clustering, rfm
from models.artifact import load_artifact

DEFAULT_TOP = 3

# Loaded explainers, per process: the local DirectRunner calls a DoFn's setup for every
# bundle, and an artifact is read and its sha256 checked on every load.
_LOADED: dict[tuple[str, Optional[str]], "LoadedExplainer"] = {}
_LOCK = threading.Lock()


class LoadedExplainer:
    """A loaded model, for explaining changes between its segments."""

    def __init__(self, model: clustering.SegmentModel, card: Mapping, top: int = DEFAULT_TOP):
        self.model_version: str = card["model_version"]
        self.features: tuple[str, ...] = tuple(card["features"])  # the record vector the model reads
        self.explained: tuple[str, ...] = tuple(model.features)  # the inputs a contribution is given for
        self._model = model
        centres = model.standardised_centers
        position = {int(label): i for i, label in enumerate(model.labels)}
        self._centre_of = {int(s["segment_id"]): centres[position[int(s["cluster_index"])]] for s in card["segments"]}
        origin = np.zeros((1, len(self.explained)))
        self._population_centre = [float(v) for v in model.to_original(origin)[0]]
        self._metric = model.metric
        self._top = top

    def population_centre(self) -> dict[str, float]:
        """The population centre (the standardised space's origin) in original units."""
        return dict(zip(self.explained, self._population_centre))

    def contributions(self, after: Mapping[str, float], from_segment_id: Optional[int],
                      to_segment_id: int) -> list[float]:
        """contribution_j for every explained input (module docstring); from the origin when
        `from_segment_id` is None."""
        z = self._model.standardised(np.array([[float(after[name]) for name in self.features]]))[0]
        a = np.zeros(len(self.explained)) if from_segment_id is None else self._centre_of[int(from_segment_id)]
        b = self._centre_of[int(to_segment_id)]
        return [float(v) for v in clustering.contributions(self._metric, z, a, b)[0]]

    def drivers(self, before: Optional[Mapping[str, float]], after: Mapping[str, float],
                from_segment_id: Optional[int], to_segment_id: int) -> list[dict]:
        """The features that moved the user most: ``{feature, before, after, contribution}``.

        For a change of segment (or a first assignment, `from_segment_id` None): the `top`
        largest contributions, largest first (ties by feature name). For the same segment
        (an RFM change): the RFM inputs, contribution None.
        """
        if from_segment_id is not None and int(from_segment_id) == int(to_segment_id):
            return [{"feature": name, "before": _value(before, name), "after": float(after[name]),
                     "contribution": None} for name in rfm.RFM_FEATURES]
        contributions = self.contributions(after, from_segment_id, to_segment_id)
        reference = self.population_centre() if from_segment_id is None else before
        order = sorted(range(len(self.explained)), key=lambda j: (-contributions[j], self.explained[j]))
        return [{"feature": self.explained[j], "before": _value(reference, self.explained[j]),
                 "after": float(after[self.explained[j]]), "contribution": contributions[j]}
                for j in order[:self._top]]


def _value(values: Optional[Mapping[str, float]], name: str) -> Optional[float]:
    return None if values is None or values.get(name) is None else float(values[name])


class ChangeExplainer:
    """What a pipeline hands to `transforms.changes.DetectSegmentChanges`: loads on the worker.

    Args:
        model_dir: the artifact folder (local or gs://), the one the scoring uses.
        expected_sha256: optional pinned digest of model.joblib.
        top: how many features explain a change of segment.
    """

    def __init__(self, model_dir: str, expected_sha256: Optional[str] = None, top: int = DEFAULT_TOP):
        self.model_dir = model_dir
        self._expected_sha256 = expected_sha256
        self._top = top

    def load(self) -> LoadedExplainer:
        key = (self.model_dir, self._expected_sha256)
        with _LOCK:
            loaded = _LOADED.get(key)
            if loaded is None or loaded._top != self._top:
                model = load_artifact(self.model_dir, expected_sha256=self._expected_sha256)
                loaded = _LOADED[key] = LoadedExplainer(model.model, model.card, self._top)
        return loaded


def change_explainer(model_dir: str, expected_sha256: Optional[str] = None,
                     top: int = DEFAULT_TOP) -> ChangeExplainer:
    """The explainer of the model in `model_dir` (loaded lazily, on the worker)."""
    return ChangeExplainer(model_dir, expected_sha256, top)
