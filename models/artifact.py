"""The model artifact folder: `model.joblib` + `model_card.json`, local or `gs://`.

Layout::

    <dir>/model.joblib      the fitted `models.clustering.SegmentModel` (joblib, protocol 5, uncompressed):
                            the representation pipeline, the predictor and the segment centres
    <dir>/model_card.json   what the model is, how it was trained, and the sha256 of model.joblib

Loading reads the card first, checks its format and `feature_version`, then
reads the model bytes and compares their sha256 with the card BEFORE
unpickling: pickle and joblib execute code, so only a file whose digest matches
the card (and, when the caller pins one, `expected_sha256`) is ever unpickled.
The card itself is trusted as much as the folder is: keep artifacts where only
the training job can write, or pin the digest.

Saving is deterministic: the same fitted model and card fields give the same
bytes (sorted JSON keys, no wall-clock time; `model_version` is the end date of
the training data plus a prefix of the model digest).

Example::

    card = save_artifact("gs://bucket/models/2024-06-01", model, card_fields)
    model = load_artifact("gs://bucket/models/2024-06-01")
    assigned = model.assign(X)
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import platform
from typing import Any, Mapping, NamedTuple

import joblib
import numpy as np
import scipy
import sklearn
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from models import clustering
from models.bgnbd import BgNbdParams
from models.rfm import RfmThresholds
from transforms.contracts.feature_spec import FEATURE_VERSION, MODEL_FEATURES

MODEL_FILE = "model.joblib"
CARD_FILE = "model_card.json"
CARD_FORMAT = "segments-model-card/1"
KNOWN_FEATURE_VERSIONS = frozenset({FEATURE_VERSION})
PICKLE_PROTOCOL = 5

_REQUIRED_CARD_KEYS = ("format", "model_version", "feature_version", "features", "algorithm", "k", "segments",
                       "rfm", "bgnbd", "model_sha256")


class ArtifactError(Exception):
    """The artifact is missing, malformed, tampered with, or made for other features."""


def library_versions() -> dict[str, str]:
    return {"sklearn": sklearn.__version__, "numpy": np.__version__, "scipy": scipy.__version__,
            "python": platform.python_version()}


def _dump(obj: Any) -> bytes:
    buffer = io.BytesIO()
    joblib.dump(obj, buffer, compress=0, protocol=PICKLE_PROTOCOL)
    return buffer.getvalue()


def serialize_model(model: Any) -> bytes:
    """Canonical joblib bytes of a fitted model.

    Pickle memoises by object identity, so a freshly fitted model (whose
    arrays share one dtype object) and the same model after a load (one dtype
    object per array) pickle to different bytes. Dumping the round-tripped copy
    removes that difference: the same model always gives the same bytes, whether
    it was just fitted or loaded from an artifact. (Loading our own fresh bytes
    is safe.)
    """
    return _dump(joblib.load(io.BytesIO(_dump(model))))


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def model_version_for(data_end: str, model_sha256: str) -> str:
    """`YYYYMMDD-<12 hex>`: the training data's end date and the model digest prefix."""
    date = "".join(ch for ch in str(data_end)[:10] if ch.isdigit())
    return f"{date or 'undated'}-{model_sha256[:12]}"


def card_to_bytes(card: Mapping) -> bytes:
    return (json.dumps(card, sort_keys=True, indent=2, ensure_ascii=True, allow_nan=False) + "\n").encode("ascii")


def build_card(card_fields: Mapping, model_bytes: bytes) -> dict:
    """The complete card: `card_fields` plus digest, version, feature contract and library versions."""
    digest = sha256_hex(model_bytes)
    card = dict(card_fields)
    card.update(
        format=CARD_FORMAT,
        model_sha256=digest,
        model_version=model_version_for(card.get("training", {}).get("data_end", ""), digest),
        feature_version=card.get("feature_version", FEATURE_VERSION),
        features=list(card.get("features", MODEL_FEATURES)),
        library_versions=library_versions(),
    )
    return card


def _write(path: str, data: bytes) -> None:
    with FileSystems.create(path, mime_type="application/octet-stream",
                            compression_type=CompressionTypes.UNCOMPRESSED) as f:
        f.write(data)


def _read(path: str) -> bytes:
    try:
        with FileSystems.open(path, mime_type="application/octet-stream",
                              compression_type=CompressionTypes.UNCOMPRESSED) as f:
            return f.read()
    except Exception as e:  # FileSystems raises a variety (IOError, BeamIOError, ...)
        raise ArtifactError(f"cannot read {path}: {e}") from e


def save_artifact(directory: str, model: Any, card_fields: Mapping) -> dict:
    """Writes model.joblib and then model_card.json (the card last: it is the commit marker).

    Args:
        directory: local path or gs:// URI of the artifact folder.
        model: the fitted `models.clustering.SegmentModel`.
        card_fields: everything of the card except the digest, model_version and
            library versions (see `models.training.train_model`).

    Returns:
        The card as written.
    """
    model_bytes = serialize_model(model)
    card = build_card(card_fields, model_bytes)
    if not FileSystems.exists(directory):
        FileSystems.mkdirs(directory)
    _write(FileSystems.join(directory, MODEL_FILE), model_bytes)
    _write(FileSystems.join(directory, CARD_FILE), card_to_bytes(card))
    return card


def load_card(directory: str) -> dict:
    """Reads and validates model_card.json (no unpickling)."""
    raw = _read(FileSystems.join(directory, CARD_FILE))
    try:
        card = json.loads(raw)
    except ValueError as e:
        raise ArtifactError(f"{directory}: model card is not valid JSON: {e}") from e
    if not isinstance(card, dict):
        raise ArtifactError(f"{directory}: model card is not a JSON object")
    missing = [key for key in _REQUIRED_CARD_KEYS if key not in card]
    if missing:
        raise ArtifactError(f"{directory}: model card lacks {missing}")
    if card["format"] != CARD_FORMAT:
        raise ArtifactError(f"{directory}: unknown model card format {card['format']!r} (expected {CARD_FORMAT!r})")
    if card["feature_version"] not in KNOWN_FEATURE_VERSIONS:
        raise ArtifactError(
            f"{directory}: model was trained on feature_version {card['feature_version']!r}, this code computes "
            f"{sorted(KNOWN_FEATURE_VERSIONS)}; retrain the model (segments train) or use a matching release")
    if tuple(card["features"]) != MODEL_FEATURES:
        raise ArtifactError(f"{directory}: model card feature list differs from MODEL_FEATURES of "
                            f"feature_version {FEATURE_VERSION}")
    return card


class Assigned(NamedTuple):
    """Per-row results of `LoadedModel.assign` (arrays / lists of equal length)."""

    segment_id: np.ndarray
    segment_name: list[str]
    distance: np.ndarray
    margin: np.ndarray


class LoadedModel:
    """A verified artifact: the fitted `SegmentModel` plus its card."""

    def __init__(self, model: clustering.SegmentModel, card: Mapping, path: str = ""):
        self.model = model
        self.card = dict(card)
        self.path = path
        self.model_version: str = card["model_version"]
        self.features: tuple[str, ...] = tuple(card["features"])
        segments = sorted(card["segments"], key=lambda s: int(s["cluster_index"]))
        if [int(s["cluster_index"]) for s in segments] != model.labels.tolist():
            raise ArtifactError(f"{path}: model card segments do not cover the model's {len(model.labels)} labels")
        self._ids = np.array([int(s["segment_id"]) for s in segments])
        self._names = [str(s["name"]) for s in segments]
        self.rfm = RfmThresholds.from_card(card["rfm"])
        self.bgnbd = BgNbdParams.from_card(card["bgnbd"])

    def assign(self, X: np.ndarray) -> Assigned:
        """Segments of the rows of X (columns in `self.features` order)."""
        labels, distance, margin = self.model.assign(np.asarray(X, dtype=float))
        position = np.searchsorted(self.model.labels, labels)
        return Assigned(self._ids[position], [self._names[i] for i in position.tolist()], distance, margin)


def load_artifact(directory: str, *, expected_sha256: str | None = None) -> LoadedModel:
    """Loads an artifact after verifying the model file's sha256 against the card.

    Args:
        directory: local path or gs:// URI of the artifact folder.
        expected_sha256: optionally pin the digest (e.g. from a deployment config);
            then the card must carry exactly this digest too.

    Raises:
        ArtifactError: missing files, bad card, unknown feature_version, or a digest mismatch.
    """
    card = load_card(directory)
    if expected_sha256 is not None and card["model_sha256"] != expected_sha256:
        raise ArtifactError(f"{directory}: model card digest {card['model_sha256']} is not the pinned "
                            f"{expected_sha256}; refusing to load")
    data = _read(FileSystems.join(directory, MODEL_FILE))
    actual = sha256_hex(data)
    if actual != card["model_sha256"]:
        raise ArtifactError(f"{directory}: {MODEL_FILE} has sha256 {actual} but the model card says "
                            f"{card['model_sha256']}; the file was modified or replaced, refusing to unpickle it")
    versions = card.get("library_versions", {})
    if versions.get("sklearn") and versions["sklearn"].split(".")[:2] != sklearn.__version__.split(".")[:2]:
        logging.warning("model %s was saved with scikit-learn %s, running %s", card["model_version"],
                        versions["sklearn"], sklearn.__version__)
    model = joblib.load(io.BytesIO(data))
    if not isinstance(model, clustering.SegmentModel):
        raise ArtifactError(f"{directory}: {MODEL_FILE} holds a {type(model).__name__}, not a SegmentModel")
    return LoadedModel(model, card, directory)
