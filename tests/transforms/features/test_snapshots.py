"""Profile snapshots: written by a batch run, read by a streaming run on the DirectRunner, erased.

The generated cases (batch with a snapshot, then streaming from it, against one batch run)
drive the stateful step directly: `test_batch_equals_streaming.py`. Here the same goes
through Beam itself once: Avro files written by `WriteProfileSnapshot`, read by `ReadSeeds`
in a streaming pipeline. (The local runner reads the snapshot before the first events;
events that come first are held until the seeds are in: that case is driven directly in
`test_batch_equals_streaming.py`.)
"""

from __future__ import annotations

import time

import apache_beam as beam
import fastavro
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that
from apache_beam.transforms.window import TimestampedValue

from tests.transforms.features.test_compute import (DAY, HOUR, RULES, US, _collect, _same, batch_records, midnight,
                                                    streaming_options)
from transforms.changes import ChangesOfStreamFn
from transforms.contracts.events import Event
from transforms.features import snapshots
from transforms.features.compute import ComputeProfiles
from transforms.features.profile import build_profile
from transforms.features.streaming_profiles import SEED
from transforms.ingest.privacy import pseudonymise


def history() -> list[Event]:
    """Two customers over 6 days: a buyer whose session crosses midnight 3, and a browser."""
    def at(i, user, day, kind="page_view", session=None, **fields):
        return Event(f"{user}-{i}", user, kind, midnight(0) + int(day * DAY), session_id=session,
                     source=f"test:{user}:{i}", **fields)

    return [at(0, "buyer", 0.5, "product_view", "b0"), at(1, "buyer", 0.52, "purchase", "b0", value=40.0),
            at(2, "buyer", 2.99, "add_to_cart", "b1"), at(3, "buyer", 3.01, "purchase", "b1", value=15.0),
            at(4, "buyer", 4.2, "search", "b2"),
            at(0, "browser", 1.3, "page_view", "w0"), at(1, "browser", 5.5, "product_view", "w1")]


def write_snapshot(events: list[Event], as_of_day: int, folder: str) -> None:
    with TestPipeline() as p:
        stamped = p | "Events" >> beam.Create(events) | beam.Map(lambda e: TimestampedValue(e, e.timestamp_us / US))
        as_of = p | "AsOf" >> beam.Create([midnight(as_of_day)])
        out = stamped | ComputeProfiles(RULES, as_of_us=as_of, history_days=as_of_day - 1, snapshot=True)
        out.profiles | snapshots.WriteProfileSnapshot(folder, midnight(as_of_day))


def test_streaming_from_a_batch_snapshot_gives_the_records_of_one_batch_run(tmp_path):
    events, split, last = history(), 3, 6
    write_snapshot([e for e in events if e.timestamp_us < midnight(split)], split, str(tmp_path))
    pattern, as_of_us = snapshots.latest_snapshot(str(tmp_path))
    assert as_of_us == midnight(split)
    later = sorted((e for e in events if e.timestamp_us >= midnight(split)), key=lambda e: e.timestamp_us)
    clock = int(time.time())
    stream = TestStream().advance_watermark_to(midnight(split) / US - 1)
    for day in range(split, last):
        todays = [TimestampedValue(e, e.timestamp_us / US) for e in later if e.timestamp_us // DAY == midnight(day) // DAY]
        if todays:
            stream = stream.add_elements(todays).advance_processing_time(clock + 3600 if day == split else 3600)
        stream = stream.advance_watermark_to(midnight(day + 1) / US)
    stream = stream.advance_watermark_to_infinity()
    got: list[dict] = []
    with TestPipeline(options=streaming_options()) as p:
        seeds = p | snapshots.ReadSeeds(pattern)
        out = p | stream | ComputeProfiles(RULES, seeds=seeds, seeded_as_of_us=as_of_us)
        assert_that(out.features, _collect(got))
    whole = {(r["user_key"], r["as_of_us"]): r for r in batch_records(events, last, history_days=last - 1)}
    seeded = {r["user_key"]: r for r in got if r["scoring"] == SEED}
    assert set(seeded) == {"buyer", "browser"}
    for user, record in seeded.items():  # where the batch run left them
        _same({**record, "scoring": "daily"}, whole[(user, midnight(split))])
    events_after = [r for r in got if r["scoring"] == "event"]
    # the buyer's first update after the snapshot reads their whole history, seed included
    first = min((r for r in events_after if r["user_key"] == "buyer"), key=lambda r: r["as_of_us"])
    assert (first["event_count"], first["orders"]) == (4, 2.0)
    daily = {(r["user_key"], r["as_of_us"]): r for r in got if r["scoring"] == "daily"}
    expected = {key for key in whole if key[1] > midnight(split)}
    assert expected <= set(daily) and all(as_of > midnight(split) for _, as_of in daily)
    for key in expected:
        _same(daily[key], whole[key])


def test_a_streaming_job_drops_the_seeds_of_suppressed_users(tmp_path):
    key = b"k" * 32
    buyer = "raw-buyer"
    (tmp_path / "erasures.txt").write_text(f"{buyer}\n")
    renamed = [e._replace(user_id=pseudonymise(key, buyer) if e.user_id == "buyer" else e.user_id) for e in history()]
    folder = tmp_path / "renamed"
    write_snapshot(renamed, 3, str(folder))
    pattern, _ = snapshots.latest_snapshot(str(folder))
    got: list = []
    with TestPipeline() as p:
        seeds = p | snapshots.ReadSeeds(pattern, key, str(tmp_path / "erasures.txt"))
        assert_that(seeds | beam.Keys(), _collect(got))
    assert got == ["browser"]


def test_a_snapshot_of_another_feature_version_is_refused(tmp_path):
    profile = build_profile(RULES, history()[:2])
    record = snapshots.snapshot_record("buyer", profile, midnight(1))
    assert snapshots.decode(record["state"]).days.keys() == profile.days.keys()
    with pytest.raises(snapshots.SnapshotMismatch, match="feature version v0"):
        snapshots.profile_of({**record, "feature_version": "v0"})


def test_erasing_users_rewrites_every_snapshot_without_them(tmp_path):
    write_snapshot(history(), 2, str(tmp_path))
    write_snapshot(history(), 3, str(tmp_path))
    files = snapshots.snapshot_files(str(tmp_path))
    assert len({f.rsplit("/", 2)[-2] for f in files}) == 2  # two snapshots, as of 2 and 3

    def users() -> list[str]:
        found = []
        for path in files:
            with open(path, "rb") as f:
                found += [r["user_key"] for r in fastavro.reader(f)]
        return sorted(found)

    assert users() == ["browser", "browser", "buyer", "buyer"]
    assert snapshots.erase_users(str(tmp_path), ["buyer", "nobody"]) == 2
    assert users() == ["browser", "browser"]
    _, profile = snapshots.profile_of(next(iter(fastavro.reader(open(files[0], "rb")))))
    assert profile.settled.events + sum(a.events for a in profile.days.values()) == 1


def test_a_seeded_users_first_scoring_in_the_new_job_is_not_an_entered_change():
    class NoDrivers:
        def drivers(self, *args):
            return []

    class Loader:
        def load(self):
            return NoDrivers()

    class State:
        value = None

        def read(self):
            return self.value

        def write(self, value):
            self.value = value

    def assignment(as_of_us, scoring, segment):
        return {"user_key": "u", "as_of_us": as_of_us, "scoring": scoring, "segment_id": segment,
                "segment_name": f"s{segment}", "model_version": "m1", "rfm": {"rfm_segment": "Loyal"},
                "features": {"orders": 1.0}}

    fn = ChangesOfStreamFn(Loader())
    fn.setup()
    last = State()
    assert list(fn.process(("m1/u", assignment(midnight(3), SEED, 2)), last=last)) == []
    assert list(fn.process(("m1/u", assignment(midnight(3) + HOUR, "event", 2)), last=last)) == []
    moved = list(fn.process(("m1/u", assignment(midnight(4), "daily", 5)), last=last))
    assert [(c["kind"], c["from_segment_id"], c["to_segment_id"]) for c in moved] == [("segment", 2, 5)]
