"""The two plans of `ComputeUserFeatures` give the same records on the same bounded input.

The windowed plan (Beam's Sessions, FixedWindows and SlidingWindows) is the one the
streaming tests exercise with TestStream; the per-user plan is what bounded input runs
by default. Each test runs both plans in one pipeline over the same events and compares
every field of every record (floats to 1e-9: sums may be added in another order),
including the windows that end after the data.
"""

from __future__ import annotations

import math
from datetime import timedelta

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import BeamAssertException, assert_that, equal_to
from apache_beam.transforms.window import GlobalWindows
from hypothesis import HealthCheck, given, settings

from devtools import generate
from transforms.features.as_of import midnight_us
from transforms.features.compute import ComputeUserFeatures, FeaturePlan
from transforms.ingest.files import ReadEventFiles
from transforms.ingest.validation import ValidationConfig
from tests.support.events import event_sets, prefixed


def _close(a, b) -> bool:
    if isinstance(a, float) or isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-12, abs_tol=1e-9)
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    return a == b


def _plans_agree(tagged):
    by_plan = {plan: {} for plan in FeaturePlan if plan is not FeaturePlan.AUTO}
    for plan, record in tagged:
        key = (record["user_key"], record["window_start_us"], record["window_end_us"])
        if key in by_plan[plan]:
            raise BeamAssertException(f"{plan}: two records for {key}")
        by_plan[plan][key] = record
    windowed, per_user = by_plan[FeaturePlan.WINDOWED], by_plan[FeaturePlan.PER_USER]
    if not windowed:
        raise BeamAssertException("no records")
    if windowed.keys() != per_user.keys():
        raise BeamAssertException(f"windows differ: only windowed {sorted(windowed.keys() - per_user.keys())[:3]}, "
                                  f"only per_user {sorted(per_user.keys() - windowed.keys())[:3]}")
    for key, a in windowed.items():
        b = per_user[key]
        if list(a) != list(b):
            raise BeamAssertException(f"{key}: fields differ: {list(a)} vs {list(b)}")
        bad = [(name, a[name], b[name]) for name in a if not _close(a[name], b[name])]
        if bad:
            raise BeamAssertException(f"{key}: {bad}")


def _both_plans(events, **windows):
    outputs = []
    for plan in (FeaturePlan.WINDOWED, FeaturePlan.PER_USER):
        features = events | f"Features_{plan.value}" >> ComputeUserFeatures(plan=plan, **windows)
        outputs.append(features.features
                       | f"Tag_{plan.value}" >> beam.Map(lambda record, plan=plan: (plan, record))
                       | f"Global_{plan.value}" >> beam.WindowInto(GlobalWindows()))
    return outputs | "BothPlans" >> beam.Flatten()


@pytest.fixture(scope="module")
def generated_events(tmp_path_factory):
    path = tmp_path_factory.mktemp("plans") / "events.jsonl"
    generate.generate_events(path, users=60, days=40, seed=5, fmt="jsonl")
    return str(path)


def test_plans_agree_on_generated_events(generated_events):
    with TestPipeline() as p:
        events = (p | ReadEventFiles([generated_events], ValidationConfig())).events
        assert_that(_both_plans(events, window_size=timedelta(days=30), window_period=timedelta(days=1)),
                    _plans_agree)


def test_plans_agree_on_windows_ending_by_an_as_of_time(generated_events):
    # generate's default --end is today: a midnight 15 days earlier cuts the data in two.
    as_of_us = midnight_us(generate.today_utc() - timedelta(days=15))
    with TestPipeline() as p:
        events = (p | ReadEventFiles([generated_events], ValidationConfig())).events
        ends_by = p | "AsOf" >> beam.Create([as_of_us])
        both = _both_plans(events, window_size=timedelta(days=30), window_period=timedelta(days=1), ends_by=ends_by)
        assert_that(both, _plans_agree)
        assert_that(both | beam.Filter(lambda tagged: tagged[1]["window_end_us"] > as_of_us), equal_to([]),
                    label="NoWindowAfterAsOf")


def test_plans_agree_with_a_period_shorter_than_a_day(generated_events):
    with TestPipeline() as p:
        events = (p | ReadEventFiles([generated_events], ValidationConfig())).events
        assert_that(_both_plans(events, window_size=timedelta(days=2), window_period=timedelta(hours=6),
                                session_gap=timedelta(minutes=10)),
                    _plans_agree)


@pytest.mark.parametrize("deduplicate", [False, True], ids=["unique_input", "plans_drop_duplicates"])
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(example=event_sets())
def test_plans_agree_on_any_small_event_set(deduplicate, example):
    # Minute-resolution events over three days, with session ids and bridging events. With
    # duplicates the windowed plan dedupes with `DedupeEvents`, the per-user plan inside
    # its grouping.
    unique, shuffled_with_repeats = example
    with TestPipeline() as p:
        created = p | beam.Create(prefixed(shuffled_with_repeats if deduplicate else unique, "A"))
        assert_that(_both_plans(created, window_size=timedelta(days=2), window_period=timedelta(days=1),
                                deduplicate=deduplicate),
                    _plans_agree)


def test_per_user_plan_refuses_unbounded_input():
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    with pytest.raises(ValueError, match="per_user feature plan needs bounded input"):
        p = beam.Pipeline(options=options)
        _ = p | beam.Create([]) | ComputeUserFeatures(plan=FeaturePlan.PER_USER)
