"""What the report shows of each segment: the card's own standardised differences when it has them."""

from __future__ import annotations

from devtools.report.segments import segment_entries


def _card(segment: dict) -> dict:
    return {"features": ["a", "b", "c"], "segments": [segment],
            "distribution": {"features": {name: {"mean": 1.0, "sd": 2.0} for name in ("a", "b", "c")}}}


def test_the_cards_list_and_standardised_centroid_win_over_raw_units():
    segment = {"segment_id": 0, "name": "S", "description": "d", "centroid": {"a": 5.0, "b": 1.0, "c": 3.0},
               "distinguishing_features": [{"feature": "a", "z": 1.5, "value": 4.0, "population_value": 2.0}],
               "standardised_centroid": {"a": 1.5, "b": -0.7}}
    (entry,) = segment_entries(_card(segment))
    assert entry["features_source"] == "card"
    assert [(f["feature"], f["z"], f["centroid"], f["population"]) for f in entry["features"]] == [
        ("a", 1.5, 4.0, 2.0)]
    # b from the card's standardised centroid; c, which the card does not measure, from raw units:
    # (3 - 1) / 2.
    assert entry["z"] == {"a": 1.5, "b": -0.7, "c": 1.0}


def test_without_a_list_the_differences_are_computed_from_the_centroid():
    (entry,) = segment_entries(_card({"segment_id": 0, "name": "S", "centroid": {"a": 5.0, "b": 1.0, "c": 3.0}}))
    assert entry["features_source"] == "centroid"
    assert entry["z"] == {"a": 2.0, "b": 0.0, "c": 1.0}
