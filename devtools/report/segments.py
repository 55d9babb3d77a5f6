"""What the model card says about each segment: name, description, distinguishing features.

A card lists each segment's distinguishing features when its training wrote them
(`models.naming`); this module reads such a list whatever the exact key names,
and otherwise computes them from the card itself: the standardised difference of the
segment's centroid from the training population,

    z = (centroid value - population mean) / population standard deviation

with the population's mean and standard deviation from the card's training distribution
(`models.drift`, key ``distribution``), in the features' own units. A card with neither
has no distinguishing features to show.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Optional

from models import drift

TOP_FEATURES = 5

# Where a segment entry may keep its distinguishing features, and the names their fields may
# have. The first match is read.
_LIST_KEYS = ("distinguishing_features", "distinguishing", "features_vs_population", "top_features")
_FEATURE_KEYS = ("feature", "name")
_Z_KEYS = ("standardised_difference", "standardized_difference", "std_difference", "z", "difference_sd")
_CENTROID_KEYS = ("centroid", "centroid_value", "segment_value", "segment", "value")
_POPULATION_KEYS = ("population", "population_value", "population_mean", "population_median")


def _first(item: Mapping, keys) -> Any:
    for key in keys:
        if key in item and item[key] is not None:
            return item[key]
    return None


def _number(value) -> Optional[float]:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def listed_features(segment: Mapping) -> Optional[list[dict]]:
    """The segment's own list of distinguishing features, normalised; None when it has none."""
    for key in _LIST_KEYS:
        items = segment.get(key)
        if not isinstance(items, list) or not items:
            continue
        out = []
        for item in items:
            if not isinstance(item, Mapping):
                continue
            name, z = _first(item, _FEATURE_KEYS), _number(_first(item, _Z_KEYS))
            if name is None or z is None:
                continue
            out.append({"feature": str(name), "z": z, "centroid": _number(_first(item, _CENTROID_KEYS)),
                        "population": _number(_first(item, _POPULATION_KEYS))})
        if out:
            return out
    return None


def computed_features(segment: Mapping, card: Mapping, top: Optional[int] = TOP_FEATURES) -> Optional[list[dict]]:
    """The `top` (None: all) features whose centroid lies most standard deviations from the population mean."""
    centroid = segment.get("centroid")
    population = (card.get(drift.CARD_KEY) or {}).get("features")
    if not isinstance(centroid, Mapping) or not isinstance(population, Mapping):
        return None
    out = []
    for name in card.get("features", ()):
        stats, value = population.get(name), _number(centroid.get(name))
        if not stats or value is None or not _number(stats.get("sd")):
            continue
        out.append({"feature": name, "z": (value - stats["mean"]) / stats["sd"], "centroid": value,
                    "population": float(stats["mean"])})
    out.sort(key=lambda f: (-abs(f["z"]), f["feature"]))
    return (out if top is None else out[:top]) or None


def segment_entries(card: Mapping) -> list[dict]:
    """Per segment of the card (by id): id, name, description, distinguishing features and their source."""
    entries = []
    for segment in sorted(card.get("segments", ()), key=lambda s: int(s["segment_id"])):
        features, source = listed_features(segment), "card"
        if features is None:
            features, source = computed_features(segment, card), "centroid"
        # Every feature's standardised difference that can be had, for the heatmap: the computed
        # ones, overridden by the card's own (its full standardised centroid when it has one, so a
        # row of the heatmap is measured one way).
        z = {f["feature"]: f["z"] for f in computed_features(segment, card, top=None) or []}
        standardised = segment.get("standardised_centroid")
        if isinstance(standardised, Mapping):
            z.update({str(name): v for name, v in standardised.items() if _number(v) is not None})
        z.update({f["feature"]: f["z"] for f in features or []})
        entries.append({"segment_id": int(segment["segment_id"]), "name": str(segment["name"]),
                        "description": str(segment.get("description") or ""),
                        "features": features or [], "features_source": source if features else None, "z": z})
    return entries
