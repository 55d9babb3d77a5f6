"""Segment changes: a user's events move them from one segment to another, on TestStream.

The model (`tests.support.models.save_cart_model`) has two segments that differ only in
lifetime product views and cart adds per session; every other feature is one constant in
its training rows, so the expected segments and contributions are computed here with numpy
from the training rows alone (shrinkage towards the pooled rates, log1p, population mean
and standard deviation, group means, the whitening's floor), not with the code under test.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import time

import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that
from apache_beam.transforms.window import TimestampedValue

from models.explain import change_explainer
from models.handler import assignment_handler
from tests.support.models import CART_FEATURES, MOMENTS, cart_training_records, save_cart_model
from transforms.bigquery.rows import change_row, validate_row
from transforms.bigquery.tables import SEGMENT_CHANGES_SCHEMA
from transforms.changes import (ENTERED, MOMENT, RFM, SEGMENT, DetectSegmentChanges, Last, change_message,
                                change_of)
from transforms.contracts.events import Event
from models.representation import CLUSTERING_FEATURES, MIN_WITHIN_VARIANCE, PRIOR_WEIGHTS
from transforms.contracts.feature_spec import MODEL_FEATURES, RATE_EVIDENCE, SKEWED_FEATURES
from transforms.features.compute import ComputeProfiles
from transforms.features.profile import ProfileRules
from transforms.scoring import AssignSegments

US = 1_000_000
DAY = 86_400 * US
D0 = 20_000  # 2024-10-04, day number
T0 = D0 * DAY + 10 * 3600 * US  # 10:00 UTC that day
MINUTE = 60 * US
PV, CART = "lifetime_product_views_per_session", "lifetime_cart_adds_per_session"

COLLECTED: dict[str, list] = {}


def _extend(key: str, actual) -> None:
    COLLECTED[key].extend(actual)


def _collect(into: list):
    key = f"c{id(into)}"
    COLLECTED[key] = into
    return functools.partial(_extend, key)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_cart_model(str(tmp_path_factory.mktemp("model") / "artifact"))


def _scaled_space():
    """(scale function, centroid of each group, metric) of the model, from the training rows with
    numpy alone: every rate shrunk towards the rows' pooled rate by its evidence, the clustering
    inputs log1p'd where heavy-tailed and z-scored; the metric is the whitening's, which is
    1 / MIN_WITHIN_VARIANCE times the identity here, since the rows of a group are identical.
    Only the clustering inputs that vary over the training rows count: one constant at
    training is left out of the model."""
    records = cart_training_records()
    X = np.array([[r[name] for name in MODEL_FEATURES] for r in records], dtype=float)
    index = {name: i for i, name in enumerate(MODEL_FEATURES)}
    used = [name for name in CLUSTERING_FEATURES if np.unique(X[:, index[name]]).size > 1]
    assert used == [PV, CART]
    priors = {}
    for rate, (evidence, least) in RATE_EVIDENCE.items():
        n = np.maximum(X[:, index[evidence]], least)
        priors[rate] = (X[:, index[rate]] * n).sum() / n.sum()
    logged = np.array([name in SKEWED_FEATURES for name in used])

    def inputs(values: dict) -> np.ndarray:
        shrunk = dict(values)
        for rate, (evidence, least) in RATE_EVIDENCE.items():
            n, m = max(values[evidence], least), PRIOR_WEIGHTS[evidence]
            shrunk[rate] = (values[rate] * n + m * priors[rate]) / (n + m)
        v = np.array([shrunk[name] for name in used], dtype=float)
        return np.where(logged, np.log1p(v), v)

    rows = np.array([inputs(r) for r in records])
    mean, sd = rows.mean(axis=0), rows.std(axis=0)
    sd[sd < 1e-9] = 1.0  # a constant column (its float std is not exactly 0) is not scaled

    def scale(values: dict) -> np.ndarray:
        return (inputs(values) - mean) / sd

    groups = {"browsers": [], "cart fillers": []}
    for r, row in zip(records, rows):
        groups["browsers" if r["user_key"].startswith("b") else "cart fillers"].append((row - mean) / sd)
    centroids = {g: np.mean(members, axis=0) for g, members in groups.items()}
    return scale, centroids, 1.0 / MIN_WITHIN_VARIANCE, priors


def _event(i: int, kind: str, minutes: int) -> Event:
    return Event(f"e{i}", "shopper", kind, T0 + minutes * MINUTE, session_id="s1", source=f"test:{i}",
                 product_id="p1")


def test_events_move_a_user_to_another_segment_and_one_change_says_why(model_dir):
    card = json.load(open(f"{model_dir}/model_card.json"))
    name_of = {s["segment_id"]: s["name"] for s in card["segments"]}
    # One product view: 1 per session, no cart adds (the browsers' centroid). Then one more
    # view and three cart adds in the same session: 2 views and 3 adds per session.
    first = [_event(1, "product_view", 0)]
    then = [_event(2, "product_view", 5), _event(3, "add_to_cart", 6), _event(4, "add_to_cart", 7),
            _event(5, "add_to_cart", 8)]
    stream = (TestStream()
              .advance_watermark_to(T0 / US)
              .add_elements([TimestampedValue(e, e.timestamp_us / US) for e in first])
              .advance_processing_time(int(time.time()) + 3600)  # past the early firing: it fires
              .add_elements([TimestampedValue(e, e.timestamp_us / US) for e in then])
              .advance_processing_time(3600)
              .advance_watermark_to((D0 + 2) * DAY / US)  # two daily re-scorings: no change there
              .advance_watermark_to_infinity())
    options = PipelineOptions(["--streaming"])
    options.view_as(StandardOptions).streaming = True
    changes, assignments = [], []
    with TestPipeline(options=options) as p:
        features = (p | stream | ComputeProfiles(ProfileRules(), max_silent=dt.timedelta(days=3))).features
        assigned = features | AssignSegments(assignment_handler(model_dir))
        found = assigned.assignments | "Changes" >> DetectSegmentChanges(change_explainer(model_dir))
        assert_that(found, _collect(changes), label="CollectChanges")
        assert_that(assigned.assignments, _collect(assignments), label="CollectAssignments")

    scale, centroid, m, priors = _scaled_space()
    # updates on events are as of 1 µs after the latest event
    after = next(a["features"] for a in assignments if a["as_of_us"] == then[-1].timestamp_us + 1)
    assert (after[PV], after[CART]) == (2.0, 3.0)  # 2 product views and 3 cart adds in 1 session
    z = scale(after)
    a, b = centroid["browsers"], centroid["cart fillers"]
    assert np.sum((z - b) ** 2) < np.sum((z - a) ** 2)  # the second scoring is nearer the cart fillers
    # The metric is m times the identity: each input contributes on its own.
    expected_contribution = {name: float(m * ((z[j] - a[j]) ** 2 - (z[j] - b[j]) ** 2)) for j, name in
                             enumerate((PV, CART))}  # the model's inputs (`_scaled_space`)
    assert expected_contribution[CART] > expected_contribution[PV] > 0

    assert sorted(a["scoring"] for a in assignments)[:4] == ["daily", "daily", "event", "event"]
    changes.sort(key=lambda c: c["as_of_us"])
    assert [(c["kind"], c["from_segment_id"], c["to_segment_id"]) for c in changes] == [
        (ENTERED, None, 0), (SEGMENT, 0, 1)]
    assert [c for c in changes if c["kind"] == SEGMENT] == [changes[1]]  # exactly one move
    moved = changes[1]
    assert (moved["from_segment_name"], moved["to_segment_name"]) == (name_of[0], name_of[1])
    assert moved["as_of_us"] == then[-1].timestamp_us + 1 and moved["previous_as_of_us"] == first[0].timestamp_us + 1
    assert moved["from_rfm_segment"] == moved["to_rfm_segment"] == "Prospect"
    top = moved["drivers"][0]
    assert (top["feature"], top["before"], top["after"]) == (CART, 0.0, 3.0)
    assert top["contribution"] == pytest.approx(expected_contribution[CART], rel=1e-9)
    second = moved["drivers"][1]
    assert (second["feature"], second["before"], second["after"]) == (PV, 1.0, 2.0)
    assert second["contribution"] == pytest.approx(expected_contribution[PV], rel=1e-9)
    # The contributions add up to d(z, from)^2 - d(z, to)^2 (the others are 0 here).
    assert top["contribution"] + second["contribution"] == pytest.approx(
        float(m * (np.sum((z - a) ** 2) - np.sum((z - b) ** 2))), rel=1e-9)
    assert moved["scores"]["distance"] == pytest.approx(math.sqrt(float(m * np.sum((z - b) ** 2))), rel=1e-9)
    # Entered: measured from the population centre; a driver's "before" is the centre's value, the
    # training rows' mean of the (log1p of the, where heavy-tailed) shrunk input, in original units.
    entered = changes[0]
    first_features = next(a["features"] for a in assignments if a["as_of_us"] == first[0].timestamp_us + 1)
    assert len(entered["drivers"]) == 2  # the top three of the model's two inputs
    for driver in entered["drivers"]:
        feature = driver["feature"]
        values = []
        for r in cart_training_records():
            evidence, least = RATE_EVIDENCE.get(feature, (None, 0.0))
            value = r[feature]
            if evidence is not None:
                n, weight = max(r[evidence], least), PRIOR_WEIGHTS[evidence]
                value = (value * n + weight * priors[feature]) / (n + weight)
            values.append(value)
        centre = (math.expm1(np.mean(np.log1p(values))) if feature in SKEWED_FEATURES else float(np.mean(values)))
        assert driver["before"] == pytest.approx(centre, rel=1e-9, abs=1e-12)
        assert driver["after"] == first_features[feature]


class _FixedExplainer:
    def drivers(self, before, after, from_segment_id, to_segment_id):
        return [{"feature": "x", "before": None, "after": 1.0, "contribution": None}]


def _assignment(as_of_us: int, segment_id: int, rfm_segment: str, moment: str = None) -> dict:
    return {"user_key": "u", "as_of_us": as_of_us, "segment_id": segment_id, "segment_name": f"s{segment_id}",
            "model_version": "m1", "rfm": {"r": 1, "f": 1, "m": 1, "rfm_segment": rfm_segment},
            "features": {"x": 1.0}, "event_count": 3, "scoring": "event", "moment": moment,
            "moment_reason": None if moment is None else f"why {moment}"}


@pytest.mark.parametrize("previous, segment_id, rfm_segment, expected", [
    (None, 2, "New", ENTERED),
    (Last(1, 2, "s2", "New", {"x": 0.0}), 2, "New", None),  # nothing changed
    (Last(1, 2, "s2", "New", {"x": 0.0}), 3, "New", SEGMENT),
    (Last(1, 2, "s2", "New", {"x": 0.0}), 3, "Loyal", SEGMENT),  # both: a segment change
    (Last(1, 2, "s2", "New", {"x": 0.0}), 2, "Loyal", RFM),
])
def test_change_kinds(previous, segment_id, rfm_segment, expected):
    change = change_of(previous, _assignment(10, segment_id, rfm_segment), _FixedExplainer())

    assert (change or {}).get("kind") == expected


@pytest.mark.parametrize("previous, segment_id, rfm_segment, expected", [
    (Last(1, 2, "s2", "New", {"x": 0.0}, "lapsing"), 2, "New", MOMENT),
    (Last(1, 2, "s2", "New", {"x": 0.0}, "lapsing"), 2, "Loyal", MOMENT),  # moment before RFM
    (Last(1, 2, "s2", "New", {"x": 0.0}, "lapsing"), 3, "New", SEGMENT),  # the segment first
    (Last(1, 2, "s2", "New", {"x": 0.0}, "came_back"), 2, "New", None),
])
def test_moment_changes(previous, segment_id, rfm_segment, expected):
    change = change_of(previous, _assignment(10, segment_id, rfm_segment, "came_back"), _FixedExplainer())
    assert (change or {}).get("kind") == expected
    if change is not None:  # every change says both moments and why the new one
        assert (change["from_moment"], change["to_moment"], change["moment_reason"]) == (
            "lapsing", "came_back", "why came_back")


def test_a_moment_change_row_and_message():
    change = change_of(Last(1, 2, "s2", "New", {"x": 0.0}, "active_as_usual"),
                       _assignment(10, 2, "New", "checkout_friction"), _FixedExplainer())
    row = change_row(change, detected_at_us=20)
    assert validate_row(row, SEGMENT_CHANGES_SCHEMA) == []
    assert (row["kind"], row["from_moment"], row["to_moment"], row["moment_reason"]) == (
        "moment", "active_as_usual", "checkout_friction", "why checkout_friction")
    message = change_message(row)
    assert message.attributes == {"kind": "moment", "to_segment_id": "2", "model_version": "m1",
                                  "to_moment": "checkout_friction"}
    assert json.loads(message.data)["moment_reason"] == "why checkout_friction"


def test_a_silent_customer_changes_moment_at_midnight_with_no_event(tmp_path):
    """Streaming: the midnight re-scorings move a silent customer's moment, and each move is a
    change of kind moment with its reason, though no event arrived."""
    model_dir = save_cart_model(str(tmp_path / "artifact"), moments=MOMENTS)
    # One product view on day 0 and one on day 3, 10:00 UTC: the same behaviour, the same segment.
    # Active 2 days over 3: usual gap (3 + 1 x 3.3) / (1 + 1) = 3.15 days; quieter than usual beyond
    # 1.5 x 3.15 = 4.725 days of silence, lapsing beyond 6.3. New this week up to the midnight of day 7
    # (tenure 6.58); as of day 8's midnight 4.58 days silent (as usual), day 9's 5.58 (quieter),
    # day 10's 6.58 (lapsing), day 11's 7.58 (lapsing: no change).
    visits = [Event(f"v{i}", "quiet", "product_view", T0 + day * DAY, session_id=f"s{i}", source=f"test:{i}",
                    product_id="p1") for i, day in enumerate((0, 3))]
    stream = TestStream().advance_watermark_to(T0 / US)
    for visit in visits:
        stream = (stream.add_elements([TimestampedValue(visit, visit.timestamp_us / US)])
                  .advance_processing_time(int(time.time()) + 3600 if visit is visits[0] else 3600)
                  .advance_watermark_to((visit.timestamp_us + DAY // 2) / US))
    stream = stream.advance_watermark_to((D0 + 11) * DAY / US).advance_watermark_to_infinity()
    options = PipelineOptions(["--streaming"])
    options.view_as(StandardOptions).streaming = True
    changes = []
    with TestPipeline(options=options) as p:
        features = (p | stream | ComputeProfiles(ProfileRules(), max_silent=dt.timedelta(days=8))).features
        assigned = features | AssignSegments(assignment_handler(model_dir))
        found = assigned.assignments | "Changes" >> DetectSegmentChanges(change_explainer(model_dir))
        assert_that(found, _collect(changes), label="CollectChanges")

    changes.sort(key=lambda c: c["as_of_us"])
    assert [(c["kind"], c["from_moment"], c["to_moment"], c["as_of_us"], c["scoring"]) for c in changes] == [
        (ENTERED, None, "new_this_week", visits[0].timestamp_us + 1, "event"),  # as of just after the event
        (MOMENT, "new_this_week", "active_as_usual", (D0 + 8) * DAY, "daily"),
        (MOMENT, "active_as_usual", "quieter_than_usual", (D0 + 9) * DAY, "daily"),
        (MOMENT, "quieter_than_usual", "lapsing", (D0 + 10) * DAY, "daily"),
    ]
    assert changes[3]["moment_reason"] == "silent 6.6 days, more than 2 x the usual gap of 3.1"
    assert len({c["to_segment_id"] for c in changes}) == 1  # the segment never moved
