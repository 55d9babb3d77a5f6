"""Extreme but valid events keep every feature and every score finite.

Hypothesis builds one user's history from events at the edges of the contract: values
of 0, the smallest positive float and `--max_event_value` set to its ceiling, in the
reporting currency and in others, quantities and durations at their limits, timestamps
from the oldest accepted to now. Each record goes through the real validator (a record
that converts to more than the limit must be dead-lettered as `value_out_of_range`, and
only then), the profile, the shipped model's scoring and the change explanation.
"""

from __future__ import annotations

import math
import sys

import orjson
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from models import DEFAULT_MODEL_DIR
from models.artifact import load_artifact
from models.explain import change_explainer
from models.handler import score_batch, scoring_vector, to_assignment
from transforms.contracts.events import MAX_DURATION_S, MAX_EVENT_VALUE_LIMIT, MAX_QUANTITY
from transforms.contracts.feature_spec import MODEL_FEATURES
from transforms.contracts.outcomes import ErrorCode
from transforms.features.activity import US_PER_DAY
from transforms.features.profile import ProfileRules, build_profile
from transforms.ingest.validation import InvalidEvent, ValidationConfig, parse_event

NOW_US = 1_793_577_600_000_000  # 2026-11-02T00:00:00Z
CONFIG = ValidationConfig(now_us=NOW_US, max_event_value=MAX_EVENT_VALUE_LIMIT)
RULES = ProfileRules()

values = st.one_of(st.sampled_from([0.0, sys.float_info.min, 5e-324, MAX_EVENT_VALUE_LIMIT,
                                    MAX_EVENT_VALUE_LIMIT * 1.2, MAX_EVENT_VALUE_LIMIT / 1.2]),
                   st.floats(0, MAX_EVENT_VALUE_LIMIT * 1.5, allow_nan=False, allow_infinity=False))
timestamps_ms = st.one_of(st.sampled_from([CONFIG.earliest_us // 1000, NOW_US // 1000 - 1]),
                          st.integers(CONFIG.earliest_us // 1000, NOW_US // 1000 - 1))


@st.composite
def extreme_records(draw) -> dict:
    kind = draw(st.sampled_from(["purchase", "purchase", "refund", "page_view", "add_to_cart", "email_open"]))
    properties: dict = {"category": draw(st.sampled_from(["a", "b"]))}
    if kind in ("purchase", "refund") or draw(st.booleans()):
        properties["value"] = draw(values)
        currency = draw(st.sampled_from([None, "EUR", "USD", "GBP", "XYZ"]))
        if currency:
            properties["currency"] = currency
    if draw(st.booleans()):
        properties["quantity"] = draw(st.sampled_from([1, MAX_QUANTITY]))
    if draw(st.booleans()):
        properties["duration_s"] = draw(st.sampled_from([0.0, MAX_DURATION_S]))
    return {"event_id": f"e-{draw(st.integers(0, 10**9))}", "user_id": "u-1", "event_type": kind,
            "timestamp": draw(timestamps_ms), "session_id": draw(st.sampled_from(["s1", "s2", None])),
            "order_id": None, "properties": properties, "consent": {"analytics": True, "personalization": True}}


@pytest.fixture(scope="module")
def model():
    return load_artifact(DEFAULT_MODEL_DIR)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(extreme_records(), min_size=1, max_size=30, unique_by=lambda r: r["event_id"]))
def test_extreme_valid_events_keep_features_and_scores_finite(model, records):
    events = []
    for i, record in enumerate(records):
        try:
            events.append(parse_event(orjson.dumps(record), f"t:{i}", CONFIG))
        except InvalidEvent as invalid:
            # Only an amount above the limit in the reporting currency is refused.
            assert invalid.code is ErrorCode.VALUE_OUT_OF_RANGE, invalid
            assert record["properties"]["value"] > MAX_EVENT_VALUE_LIMIT / 1.2
    if not events:
        return
    profile = build_profile(RULES, events)
    as_of = (NOW_US // US_PER_DAY + 1) * US_PER_DAY
    feature_record = RULES.snapshot("u", profile, as_of, "daily")
    numbers = {name: v for name, v in feature_record.items() if isinstance(v, (int, float))}
    assert all(math.isfinite(v) for v in numbers.values()), {k: v for k, v in numbers.items() if not math.isfinite(v)}

    vector = scoring_vector(feature_record)  # raises on a non-finite model input
    (scores,) = score_batch(model, [vector])
    assert math.isfinite(scores.distance) and math.isfinite(scores.margin)
    assert scores.p_alive is None or 0.0 <= scores.p_alive <= 1.0
    assert scores.expected_purchases_30d is None or math.isfinite(scores.expected_purchases_30d)

    assignment = to_assignment(feature_record, scores)
    drivers = change_explainer(DEFAULT_MODEL_DIR).load().drivers(None, assignment["features"], None,
                                                                 scores.segment_id)
    assert drivers and all(math.isfinite(d["contribution"]) for d in drivers)
    assert set(assignment["features"]) == set(MODEL_FEATURES)


def test_an_amount_beyond_the_ceiling_that_reaches_a_profile_counts_as_unpriced():
    event = parse_event(orjson.dumps({"event_id": "e", "user_id": "u", "event_type": "purchase",
                                      "timestamp": NOW_US // 1000 - 1, "properties": {"value": 5.0}}), "t:1", CONFIG)
    huge = event._replace(value=1e308)  # as if it had skipped the validator
    profile = build_profile(RULES, [event, huge._replace(event_id="e2")])
    record = RULES.snapshot("u", profile, NOW_US, "daily")
    assert record["spend_total"] == 5.0 and record["unpriced_lines"] == 1
