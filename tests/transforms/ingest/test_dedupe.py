"""Dedupe keeps one canonical copy per (user, event_id), whichever step does it.

Two bounded places drop duplicates: `DedupeEvents` (a CombinePerKey) and the batch
profile step inside its per-user grouping (`ComputeProfiles` on bounded input). The
expected survivors and counts are picked by hand from the records below. (The streaming
profile step's dedupe: `tests/transforms/features/test_profile.py` and `test_compute.py`.)
"""

from __future__ import annotations

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from pipelines.summary import counters_of
from transforms.ingest.dedupe import DEDUPE_IN, DEDUPE_OUT, DedupeEvents, unique_events
from transforms.contracts.events import Event
from transforms.features.compute import ComputeProfiles
from transforms.features.profile import ProfileRules

T0 = 1_793_000_000_000_000  # 2026-10-27, UTC microseconds
MIN = 60_000_000


def _event(event_id, user, minutes, source, event_type="page_view"):
    return Event(event_id=event_id, user_id=user, event_type=event_type, timestamp_us=T0 + minutes * MIN,
                 source=source)


ORIGINAL = _event("e1", "alice", 10, "f:3")
RECORDS = [
    _event("e1", "alice", 12, "f:1"),  # a later copy: loses to ORIGINAL on time
    ORIGINAL,
    _event("e1", "alice", 10, "f:9"),  # same time, larger source: loses to ORIGINAL
    _event("e1", "bob", 11, "f:4"),  # same id, another user: another event
    _event("e2", "alice", 40, "f:5", "purchase"),
    _event("e2", "alice", 40, "f:5", "purchase"),  # an exact copy
]
EXPECTED = [ORIGINAL, _event("e1", "bob", 11, "f:4"), _event("e2", "alice", 40, "f:5", "purchase")]


def _stamped(events):
    return [TimestampedValue(e, e.timestamp_us / 1e6) for e in events]


def test_unique_events_keeps_the_earliest_copy_per_user_and_id():
    assert sorted(unique_events(RECORDS)) == sorted(EXPECTED)
    assert sorted(unique_events(reversed(RECORDS))) == sorted(EXPECTED)


def test_dedupe_events_keeps_the_same_copies_and_counts_them():
    p = TestPipeline()
    unique = p | beam.Create(_stamped(RECORDS)).with_output_types(Event) | DedupeEvents()
    assert_that(unique, equal_to(EXPECTED))
    result = p.run()
    result.wait_until_finish()
    counters = counters_of(result)
    assert (counters[DEDUPE_IN], counters[DEDUPE_OUT]) == (6, 3)


def test_dedupe_events_refuses_unbounded_input():
    """The streaming job dedupes in its per-user state; a second, unbounded dedupe would be a silent twin."""
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
    from apache_beam.testing.test_stream import TestStream

    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    p = beam.Pipeline(options=options)
    stream = p | TestStream().add_elements(_stamped(RECORDS)).advance_watermark_to_infinity()
    with pytest.raises(ValueError, match="bounded input"):
        _ = stream | DedupeEvents()


def test_the_batch_profile_step_drops_and_counts_duplicates():
    p = TestPipeline()
    as_of = p | "AsOf" >> beam.Create([(T0 // 86_400_000_000 + 1) * 86_400_000_000])
    profiles = p | beam.Create(_stamped(RECORDS)).with_output_types(Event) | ComputeProfiles(ProfileRules(), as_of_us=as_of)
    # alice has e1 and e2 (one purchase), bob his e1.
    counts = profiles.features | beam.Map(lambda r: (len(r["user_key"]), r["event_count"], r["orders"]))
    assert_that(counts, equal_to([(5, 2, 1.0), (3, 1, 0.0)]))
    result = p.run()
    result.wait_until_finish()
    counters = counters_of(result)
    assert (counters[DEDUPE_IN], counters[DEDUPE_OUT]) == (6, 3)
