"""The model artifact folder: `model.joblib` + `model_card.json`, local or `gs://`.

Layout::

    <dir>/model.joblib      the fitted `models.clustering.SegmentModel` (joblib, protocol 5, uncompressed):
                            the representation pipeline, the predictor and the segment centres
    <dir>/model_card.json   what the model is, how it was trained, and the sha256 of model.joblib

Loading reads the card first, checks its format and `feature_version`, then
reads the model bytes and compares their sha256 with the card BEFORE
unpickling: pickle and joblib execute code, so only a file whose digest matches
the card (and, when the caller pins one, `expected_sha256`) is ever unpickled.
The card itself is trusted as much as the folder is: a model folder is code (whoever can
write it can make every job that loads it run anything), so keep artifacts where only
the training job can write, and pin the digest (`expected_sha256`, ``--model_sha256``).

Before anything is unpickled the card is validated (`validate_card`): the feature list
equals the serving contract, every number is finite, the BG/NBD parameters are positive,
the RFM thresholds ascend, and the segments are one per cluster with distinct ids and
names; after unpickling, the segments must match the model's clusters.

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
import math
import numbers
import platform
from typing import Any, Mapping, NamedTuple

import joblib
import numpy as np
import scipy
import sklearn
from apache_beam.io.filesystem import CompressionTypes
from apache_beam.io.filesystems import FileSystems

from models import clustering, drift, moments
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
    if not isinstance(card["features"], list) or tuple(card["features"]) != MODEL_FEATURES:
        raise ArtifactError(f"{directory}: model card feature list differs from MODEL_FEATURES of "
                            f"feature_version {FEATURE_VERSION}")
    problems = validate_card(card)
    if problems:
        raise ArtifactError(f"{directory}: model card is not usable: {'; '.join(problems[:5])}"
                            + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""))
    return card


def _finite(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)


def validate_card(card: Mapping) -> list[str]:
    """Every way the card's numbers and segments make it unusable; empty when it is fine.

    Checked: ``model_sha256`` is 64 hex digits; ``k`` is a positive integer; ``segments`` has
    ``segment_count`` entries (k when the card has no count: cards before the density
    algorithm) with distinct cluster indexes, 0..k-1 unless the card has a count (the
    density clustering adds its Unclassified segment, label -1, and finds its own number),
    each with an integer ``segment_id`` (distinct), a
    non-empty ``name`` (distinct) and, when present, a ``centroid`` with a finite value for
    exactly the model features; the BG/NBD parameters r, alpha, a, b are finite and > 0
    with a known time unit; the RFM thresholds are four finite ascending numbers per
    feature; the training distribution, when the card has one, has ascending bin edges and
    shares adding up to 1 (`models.drift.validate`). (Whether the segments match the model's clusters needs the model:
    `LoadedModel`.)
    """
    from models.bgnbd import DAYS_PER_UNIT
    from models.rfm import RFM_FEATURES

    problems = []
    digest = card.get("model_sha256")
    if not (isinstance(digest, str) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)):
        problems.append("model_sha256 is not 64 lower-case hex digits")
    k = card.get("k")
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        problems.append(f"k is not a positive integer: {k!r}")
        k = None
    segments = card.get("segments")
    if not isinstance(segments, list) or not all(isinstance(s, dict) for s in segments):
        problems.append("segments is not a list of objects")
        segments = []
    count = card.get("segment_count", k)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        problems.append(f"segment_count is not a positive integer: {count!r}")
    elif len(segments) != count:
        problems.append(f"{len(segments)} segments for segment_count = {count}")
    indexes = [s.get("cluster_index") for s in segments]
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= -1 for i in indexes) \
            or len(set(indexes)) != len(indexes):
        problems.append(f"segment cluster_index values {indexes} are not distinct integers from -1 up")
    elif "segment_count" not in card and k is not None and sorted(indexes) != list(range(k)):
        problems.append(f"segment cluster_index values {indexes} are not 0..{k - 1}")
    ids = [s.get("segment_id") for s in segments]
    if not all(isinstance(i, int) and not isinstance(i, bool) for i in ids) or len(set(ids)) != len(ids):
        problems.append(f"segment_id values {ids} are not distinct integers")
    names = [s.get("name") for s in segments]
    if not all(isinstance(n, str) and n.strip() for n in names) or len(set(names)) != len(names):
        problems.append(f"segment names {names} are not distinct non-empty texts")
    for s in segments:
        centroid = s.get("centroid")
        if centroid is None:
            continue
        if not isinstance(centroid, dict) or set(centroid) != set(MODEL_FEATURES):
            problems.append(f"segment {s.get('segment_id')!r}: centroid does not list exactly the model features")
        elif not all(map(_finite, centroid.values())):
            problems.append(f"segment {s.get('segment_id')!r}: centroid has non-finite values")
    bgnbd = card.get("bgnbd")
    if not isinstance(bgnbd, dict):
        problems.append("bgnbd is not an object")
    else:
        for name in ("r", "alpha", "a", "b"):
            if not (_finite(bgnbd.get(name)) and bgnbd[name] > 0):
                problems.append(f"BG/NBD parameter {name} is {bgnbd.get(name)!r}, not a finite positive number")
        if bgnbd.get("time_unit", "day") not in DAYS_PER_UNIT:
            problems.append(f"BG/NBD time_unit {bgnbd.get('time_unit')!r} is not one of {sorted(DAYS_PER_UNIT)}")
    rfm = card.get("rfm")
    if not isinstance(rfm, dict):
        problems.append("rfm is not an object")
    else:
        for name in RFM_FEATURES:
            cuts = rfm.get(name)
            if not (isinstance(cuts, list) and len(cuts) == 4 and all(map(_finite, cuts))
                    and all(lo <= hi for lo, hi in zip(cuts, cuts[1:]))):
                problems.append(f"RFM thresholds for {name} are {cuts!r}, not four finite ascending numbers")
    if card.get(drift.CARD_KEY) is not None:  # cards trained before it have none
        problems.extend(drift.validate(card[drift.CARD_KEY], MODEL_FEATURES))
    if card.get(moments.CARD_KEY) is not None:  # cards trained before it score no moment
        problems.extend(moments.validate(card[moments.CARD_KEY]))
    return problems


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
            raise ArtifactError(f"{path}: model card segments ({len(segments)}) do not match the model's "
                                f"{len(model.labels)} segment labels")
        n_features = model.n_features_in_
        if n_features != len(MODEL_FEATURES):
            raise ArtifactError(f"{path}: the model takes {n_features} features, the card lists "
                                f"{len(MODEL_FEATURES)}")
        self._ids = np.array([int(s["segment_id"]) for s in segments])
        self._names = [str(s["name"]) for s in segments]
        self.rfm = RfmThresholds.from_card(card["rfm"])
        self.bgnbd = BgNbdParams.from_card(card["bgnbd"])
        self.moments = moments.MomentThresholds.from_card(card.get(moments.CARD_KEY))

    def assign(self, X: np.ndarray) -> Assigned:
        """Segments of the rows of X (columns in `self.features` order)."""
        labels, distance, margin = self.model.assign(np.asarray(X, dtype=float))
        position = np.searchsorted(self.model.labels, labels)
        return Assigned(self._ids[position], [self._names[i] for i in position.tolist()], distance, margin)


def _verified_bytes(directory: str, expected_sha256: str | None) -> tuple[dict, bytes]:
    """The card and the model bytes, after every check that needs no unpickling."""
    card = load_card(directory)
    if expected_sha256 is not None and card["model_sha256"] != expected_sha256:
        raise ArtifactError(f"{directory}: model card digest {card['model_sha256']} is not the pinned "
                            f"{expected_sha256}; refusing to load")
    data = _read(FileSystems.join(directory, MODEL_FILE))
    actual = sha256_hex(data)
    if actual != card["model_sha256"]:
        raise ArtifactError(f"{directory}: {MODEL_FILE} has sha256 {actual} but the model card says "
                            f"{card['model_sha256']}; the file was modified or replaced, refusing to unpickle it")
    return card, data


def verified_card(directory: str, *, expected_sha256: str | None = None) -> dict:
    """The card of an artifact whose model file passes every check of `load_artifact` but
    the unpickling: for a caller that reads the card only (the report)."""
    return _verified_bytes(directory, expected_sha256)[0]


def load_artifact(directory: str, *, expected_sha256: str | None = None) -> LoadedModel:
    """Loads an artifact after verifying the model file's sha256 against the card.

    Every load of a model goes through here (or `verified_card`): the scorer's and the
    explainer's on the workers (`models.serving`), shadow, report, live mode and training
    with a previous model.

    Args:
        directory: local path or gs:// URI of the artifact folder.
        expected_sha256: optionally pin the digest (e.g. from a deployment config);
            then the card must carry exactly this digest too.

    Raises:
        ArtifactError: missing files, bad card, unknown feature_version, or a digest mismatch.
    """
    card, data = _verified_bytes(directory, expected_sha256)
    versions = card.get("library_versions", {})
    if versions.get("sklearn") and versions["sklearn"].split(".")[:2] != sklearn.__version__.split(".")[:2]:
        logging.warning("model %s was saved with scikit-learn %s, running %s", card["model_version"],
                        versions["sklearn"], sklearn.__version__)
    model = joblib.load(io.BytesIO(data))
    if not isinstance(model, clustering.SegmentModel):
        raise ArtifactError(f"{directory}: {MODEL_FILE} holds a {type(model).__name__}, not a SegmentModel")
    return LoadedModel(model, card, directory)
