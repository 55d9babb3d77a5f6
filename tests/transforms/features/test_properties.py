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
from hypothesis import HealthCheck, given, settings

from tests.support.events import event_sets, prefixed
from transforms.ingest.dedupe import DedupeEvents
from transforms.features.compute import ComputeUserFeatures


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


@pytest.mark.parametrize("dedupe_in", ["upstream", "features"])
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(example=event_sets())
def test_features_ignore_order_and_duplicates(dedupe_in, example):
    original, shuffled_with_repeats = example
    with TestPipeline() as p:
        a = p | "A" >> beam.Create(prefixed(original, "A"))
        b = p | "B" >> beam.Create(prefixed(shuffled_with_repeats, "B"))
        if dedupe_in == "upstream":
            b = b | "Dedupe" >> DedupeEvents()
        out = (a, b) | beam.Flatten() | ComputeUserFeatures(
            window_size=timedelta(days=2), window_period=timedelta(days=1), deduplicate=dedupe_in == "features")
        assert_that(out.features, _branches_agree)
