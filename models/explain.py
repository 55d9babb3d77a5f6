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
from typing import Mapping, Optional, Sequence

import numpy as np

from models import clustering, rfm
from models.artifact import load_artifact

DEFAULT_TOP = 3

# Loaded explainers, per process: the local DirectRunner calls a DoFn's setup for every
# bundle, and an artifact is read and its sha256 checked on every load.
_LOADED: dict[tuple[str, Optional[str]], "LoadedExplainer"] = {}
_LOCK = threading.Lock()


class Standardiser:
    """The model's fitted representation up to the whitening (shrink, select, log1p, scale),
    applied with numpy to an array of rows.

    The same arithmetic, in the same order, as `SegmentModel.standardised`, with the fitted
    parameters read once: scikit-learn's input validation on every call costs far more than
    the transformation of one row, and a change is explained one user at a time.
    """

    def __init__(self, representation):
        steps = representation.named_steps
        shrink, select, log1p, scale = steps["shrink"], steps["select"], steps["log1p"], steps["scale"]
        self.n_features = int(representation.n_features_in_)
        self._shrink = [(rate, evidence, least, weight, float(shrink.priors_[name]))
                        for name, rate, evidence, least, weight in shrink._columns()]
        self._select = np.asarray(select.kw_args["columns"], dtype=int)
        self._log1p = np.asarray((log1p.kw_args or {}).get("columns", ()), dtype=int)
        self._mean = np.asarray(scale.mean_, dtype=float) if scale.with_mean else None
        self._scale = np.asarray(scale.scale_, dtype=float) if scale.with_std else None

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """Rows of record vectors -> rows in the standardised space.

        Raises:
            ValueError: a row has the wrong length, or a value that is not finite.
        """
        out = np.array(X, dtype=float, ndmin=2)  # a copy: shrinkage writes in place
        if out.ndim != 2 or out.shape[1] != self.n_features:
            raise ValueError(f"rows of {out.shape[-1]} features, the model reads {self.n_features}")
        if not np.isfinite(out).all():
            raise ValueError("a feature value is not finite")
        for rate, evidence, least, weight, prior in self._shrink:
            n = np.maximum(out[:, evidence], least)
            out[:, rate] = (out[:, rate] * n + weight * prior) / (n + weight)
        out = out[:, self._select]
        if len(self._log1p):
            out[:, self._log1p] = np.log1p(out[:, self._log1p])
        if self._mean is not None:
            out -= self._mean
        if self._scale is not None:
            out /= self._scale
        return out


def contributions(metric: np.ndarray, z: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """`clustering.contributions`, with the products summed row by row in a fixed order
    (einsum, not a BLAS product), so a row's contributions do not depend on the other rows
    of its batch."""
    to_a, to_b = z - a, z - b
    return to_a * np.einsum("ij,jk->ik", to_a, metric) - to_b * np.einsum("ij,jk->ik", to_b, metric)


class LoadedExplainer:
    """A loaded model, for explaining changes between its segments."""

    def __init__(self, model: clustering.SegmentModel, card: Mapping, top: int = DEFAULT_TOP):
        self.model_version: str = card["model_version"]
        self.features: tuple[str, ...] = tuple(card["features"])  # the record vector the model reads
        self.explained: tuple[str, ...] = tuple(model.features)  # the inputs a contribution is given for
        self._model = model
        self._standardise = Standardiser(model.representation)
        centres = model.standardised_centers
        position = {int(label): i for i, label in enumerate(model.labels)}
        self._centre_of = {int(s["segment_id"]): centres[position[int(s["cluster_index"])]] for s in card["segments"]}
        self._origin = np.zeros(len(self.explained))
        self._population_centre = [float(v) for v in model.to_original(self._origin[None, :])[0]]
        self._population = self.population_centre()
        self._metric = model.metric
        self._top = top

    def population_centre(self) -> dict[str, float]:
        """The population centre (the standardised space's origin) in original units."""
        return dict(zip(self.explained, self._population_centre))

    def contributions(self, after: Mapping[str, float], from_segment_id: Optional[int],
                      to_segment_id: int) -> list[float]:
        """contribution_j for every explained input (module docstring); from the origin when
        `from_segment_id` is None."""
        return self.contributions_of_rows([after], [from_segment_id], [to_segment_id])[0]

    def contributions_of_rows(self, afters: Sequence[Mapping[str, float]], from_segment_ids: Sequence[Optional[int]],
                              to_segment_ids: Sequence[int]) -> list[list[float]]:
        """`contributions` of many rows at once (one numpy pass over the batch)."""
        if not afters:
            return []
        z = self._standardise([[float(after[name]) for name in self.features] for after in afters])
        origin = self._origin
        a = np.array([origin if s is None else self._centre_of[int(s)] for s in from_segment_ids])
        b = np.array([self._centre_of[int(s)] for s in to_segment_ids])
        return contributions(self._metric, z, a, b).tolist()

    def drivers(self, before: Optional[Mapping[str, float]], after: Mapping[str, float],
                from_segment_id: Optional[int], to_segment_id: int) -> list[dict]:
        """The features that moved the user most: ``{feature, before, after, contribution}``.

        For a change of segment (or a first assignment, `from_segment_id` None): the `top`
        largest contributions, largest first (ties by feature name). For the same segment
        (an RFM change): the RFM inputs, contribution None.
        """
        return self.drivers_of_rows([(before, after, from_segment_id, to_segment_id)])[0]

    def drivers_of_rows(self, rows: Sequence[tuple[Optional[Mapping[str, float]], Mapping[str, float],
                                                   Optional[int], int]]) -> list[list[dict]]:
        """`drivers` of many ``(before, after, from_segment_id, to_segment_id)`` at once: the
        contributions of every change of segment in the batch are computed together."""
        moved = [i for i, (_, _, source, target) in enumerate(rows)
                 if source is None or int(source) != int(target)]
        computed = dict(zip(moved, self.contributions_of_rows(
            [rows[i][1] for i in moved], [rows[i][2] for i in moved], [rows[i][3] for i in moved])))
        explained, top = self.explained, self._top
        out = []
        for i, (before, after, source, _) in enumerate(rows):
            contribution = computed.get(i)
            if contribution is None:  # same segment: an RFM change
                out.append([{"feature": name, "before": _value(before, name), "after": float(after[name]),
                             "contribution": None} for name in rfm.RFM_FEATURES])
                continue
            reference = self._population if source is None else before
            order = sorted(range(len(explained)), key=lambda j: (-contribution[j], explained[j]))
            out.append([{"feature": explained[j], "before": _value(reference, explained[j]),
                         "after": float(after[explained[j]]), "contribution": contribution[j]}
                        for j in order[:top]])
        return out


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
