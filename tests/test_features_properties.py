"""Property: the features do not depend on input order, nor on duplicates removed upstream.

Each example runs one bounded pipeline with two branches over the same events: branch
"A" in the generated order, branch "B" shuffled with some events repeated and then
passed through the upstream `DedupeEvents`, or, in the second test, left to
`ComputeUserFeatures(deduplicate=True)`. The records of the two branches must agree
(floats to 1e-9: sums may round differently in another order).
"""

from __future__ import annotations

import math
from datetime import timedelta

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import BeamAssertException, assert_that
from apache_beam.transforms.window import TimestampedValue
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transforms.dedupe import DedupeEvents
from transforms.event_contract import CHANNELS, Event
from transforms.features import ComputeUserFeatures, FeatureOutput

SEC = 1_000_000
MIN = 60 * SEC
DAY0 = 20_000 * 86_400 * SEC

KINDS = ("page_view", "product_view", "search", "add_to_cart", "checkout_start", "purchase", "refund",
         "email_open", "email_click", "social_share")


@st.composite
def event_sets(draw):
    n = draw(st.integers(min_value=1, max_value=12))
    events = []
    for i in range(n):
        kind = draw(st.sampled_from(KINDS))
        events.append(Event(
            event_id=f"e{i}",
            user_id=draw(st.sampled_from(("u1", "u2"))),
            event_type=kind,
            # three days, minute resolution, so that sessions (30 min gap) form and merge
            timestamp_us=DAY0 + draw(st.integers(min_value=0, max_value=3 * 24 * 60)) * MIN,
            session_id=draw(st.sampled_from((None, None, "s1"))),
            channel=draw(st.sampled_from((None,) + CHANNELS)),
            device=draw(st.sampled_from((None, "desktop", "mobile", "fridge"))),
            category=draw(st.sampled_from((None, "shoes", "bags", "hats"))),
            value=draw(st.sampled_from((0.1, 9.99, 20.0))) if kind in ("purchase", "refund") else None,
            source=f"prop:{i}",
        ))
    shuffled = draw(st.permutations(events))
    repeated = draw(st.lists(st.sampled_from(events), max_size=4))
    return events, list(shuffled) + repeated


def _close(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=0, abs_tol=1e-9)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    return a == b


def _branches_agree(records):
    by_branch = {"A": {}, "B": {}}
    for record in records:
        branch, user = record["user_key"].split("|")
        by_branch[branch][(user, record["window_start_us"], record["pane"])] = record
    if by_branch["A"].keys() != by_branch["B"].keys():
        raise BeamAssertException(f"windows differ: {sorted(by_branch['A'])} vs {sorted(by_branch['B'])}")
    for key, a in by_branch["A"].items():
        b = by_branch["B"][key]
        bad = [name for name in a if name != "user_key" and not _close(a[name], b[name])]
        if bad:
            raise BeamAssertException(f"{key}: {[(n, a[n], b[n]) for n in bad]}")
    if not by_branch["A"]:
        raise BeamAssertException("no records")


def _prefixed(events, branch):
    return [TimestampedValue(e._replace(user_id=f"{branch}|{e.user_id}"), e.timestamp_us / SEC) for e in events]


@pytest.mark.parametrize("dedupe_in", ["upstream", "features"])
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(example=event_sets())
def test_features_ignore_order_and_duplicates(dedupe_in, example):
    original, shuffled_with_repeats = example
    with TestPipeline() as p:
        a = p | "A" >> beam.Create(_prefixed(original, "A"))
        b = p | "B" >> beam.Create(_prefixed(shuffled_with_repeats, "B"))
        if dedupe_in == "upstream":
            b = b | "Dedupe" >> DedupeEvents()
        out = (a, b) | beam.Flatten() | ComputeUserFeatures(
            window_size=timedelta(days=2), window_period=timedelta(days=1), deduplicate=dedupe_in == "features")
        assert_that(out[FeatureOutput.FEATURES.value], _branches_agree)
