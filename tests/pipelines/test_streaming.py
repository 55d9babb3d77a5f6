"""The whole streaming job through the real Pub/Sub emulator into the local warehouse.

Runs (not skips) wherever the project runs: it fails when the emulator is missing.
Alice's and Bob's events come in one batched message (newline-delimited JSON) with a
corrupt line among them: that line alone is dead-lettered, with its line number in its
source. Every user's first scoring is an "entered" change, on the changes topic and in
``segment_changes``.
The stream is judged against the wall clock: the DirectRunner's Pub/Sub reader holds the
watermark at the current time. Carol's first event is three days old: her profile's
daily re-scoring catches up through every midnight since, which moves her profile's
clock to today; her second event, five days old, is then more than the allowed
lateness (48 hours) behind it: ``too_late``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import time
import uuid

import apache_beam as beam
import orjson
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from models.serving import serving_model
from transforms.bigquery import admin as bq_admin
from devtools import live, publisher, pubsub_emulator
from pipelines import streaming
from tests.support.models import save_small_model
from tests.support.waiting import wait_for
from transforms.ingest.privacy import DEMO_ID_KEY
from transforms.bigquery.client import BigQueryTarget

CONSENTED = {"analytics": True, "personalization": True}
RUN_ID = "stream-test"


def _user_key(raw: str) -> str:
    # Written out here rather than calling transforms.ingest.privacy.pseudonymise.
    return hmac.new(DEMO_ID_KEY, raw.encode(), hashlib.sha256).hexdigest()


def _event(event_id: str, user_id: str, epoch_ms: int, **extra) -> bytes:
    return orjson.dumps({"event_id": event_id, "user_id": user_id, "event_type": "page_view",
                         "timestamp": epoch_ms, "consent": CONSENTED, **extra})


def _wait_for(condition, what, timeout_s: float = 180.0, poll_s: float = 0.5):
    return wait_for(condition, what, timeout_s, poll_s)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_small_model(str(tmp_path_factory.mktemp("model") / "artifact"))


@pytest.mark.integration
def test_pubsub_to_warehouse_with_corrupt_and_too_late_events(warehouse, unique_dataset, model_dir, tmp_path):
    client = warehouse.client
    bq_admin.setup(client, unique_dataset, project=warehouse.project)
    prefix = f"{warehouse.project}.{unique_dataset}"

    def user_keys() -> set:
        return {row["user_key"] for row in client.query(
            f"SELECT DISTINCT user_key FROM `{prefix}.segment_assignments`").result()}

    def dead_letters() -> list:
        return sorted((row["error_code"], row["source"]) for row in client.query(
            f"SELECT error_code, source FROM `{prefix}.dead_letters` WHERE run_id = '{RUN_ID}'").result())

    def carol_dates() -> set:
        return {row["score_date"] for row in client.query(
            f"SELECT score_date FROM `{prefix}.segment_assignments` WHERE user_key = '{_user_key('carol')}' "
            "AND scoring = 'daily'").result()}

    def change_keys() -> set:
        return {row["change_key"] for row in client.query(
            f"SELECT change_key FROM `{prefix}.segment_changes`").result()}

    def latest_count(user: str) -> int:
        rows = list(client.query(
            f"SELECT event_count FROM `{prefix}.segment_assignments` WHERE user_key = '{_user_key(user)}' "
            "ORDER BY as_of DESC LIMIT 1").result())
        return rows[0]["event_count"] if rows else 0

    def audited_reads() -> int:
        return sum(row["read"] for row in client.query(
            f"SELECT read FROM `{prefix}.run_audit` WHERE mode = 'streaming' AND run_id LIKE '{RUN_ID}/%'"
        ).result())

    now_ms = time.time_ns() // 1_000_000
    with pubsub_emulator.running(log_dir=tmp_path) as emulator:
        name = f"events-{uuid.uuid4().hex[:8]}"
        topic, subscription = emulator.create_topic_and_subscription(name, name + "-sub")
        changes_topic, changes_sub = emulator.create_topic_and_subscription(name + "-changes", name + "-changes-sub")
        received = []  # change messages, as dicts
        options = PipelineOptions([
            "--subscription", subscription, "--model", model_dir, "--bq_endpoint", warehouse.endpoint,
            "--bq_project", warehouse.project, "--bq_dataset", unique_dataset,
            "--early_firing_seconds", "1", "--audit_interval_seconds", "2", "--changes_topic", changes_topic,
        ])
        options.view_as(StandardOptions).streaming = True
        streaming.local_runner(options)
        job = options.view_as(streaming.StreamingOptions)
        target = BigQueryTarget.local(warehouse.endpoint, warehouse.project, unique_dataset, streaming=True)
        p = beam.Pipeline(options=options)
        streaming.build_pipeline(p, job, DEMO_ID_KEY, serving_model(model_dir), target, RUN_ID)
        result = p.run()
        try:
            # One batched message: four lines, the second truncated JSON.
            first = publisher.publish_events([
                _event("a1", "alice", now_ms - 60_000),
                b'{"event_id": "x1", "user_id": "mallory"',
                _event("a2", "alice", now_ms - 30_000, event_type="search", properties={"search_query": "shoes"}),
                _event("b1", "bob", now_ms - 45_000),
            ], topic, rate=1000, restamp=False, keep_ids=True, batch_size=4, max_batch_delay_s=60)
            single = publisher.publish_events([_event("c1", "carol", now_ms - 3 * 86_400_000)], topic, rate=1000,
                                              restamp=False, keep_ids=True)
            assert (first.published, first.messages, single.published, first.failed) == (4, 1, 1, 0)
            expected_users = {_user_key("alice"), _user_key("bob"), _user_key("carol")}
            today = dt.datetime.fromtimestamp(now_ms / 1000, dt.timezone.utc).date()
            _wait_for(lambda: user_keys() >= expected_users and today - dt.timedelta(days=1) in carol_dates()
                      and latest_count("alice") == 2,
                      lambda: f"assignments for alice, bob and carol; have {user_keys()} and {dead_letters()}")

            late = publisher.publish_events([_event("c2", "carol", now_ms - 5 * 86_400_000)], topic, rate=1000,
                                            restamp=False, keep_ids=True)
            _wait_for(lambda: any(code == "too_late" for code, _ in dead_letters()), "the too_late dead letter")
            # One audit row per 2 s interval: together they count each of the 6 records once.
            _wait_for(lambda: audited_reads() == 6, "audit rows covering the 6 records")
            def pull_changes() -> set:
                response = subscriber.pull(subscription=changes_sub, max_messages=100, return_immediately=True)
                if response.received_messages:
                    received.extend(orjson.loads(m.message.data) for m in response.received_messages)
                    subscriber.acknowledge(subscription=changes_sub,
                                           ack_ids=[m.ack_id for m in response.received_messages])
                return {c["change_key"] for c in received}

            from google.cloud import pubsub_v1

            subscriber = pubsub_v1.SubscriberClient()
            try:
                _wait_for(lambda: pull_changes() == change_keys()
                          and {c["user_key"] for c in received if c["kind"] == "entered"} >= expected_users,
                          lambda: f"the changes on the topic and in the table; have {received} and {change_keys()}")
            finally:
                subscriber.close()
        finally:
            live.cancel_direct(result, lambda: publisher.publish_wake_up(topic))

    assert user_keys() == expected_users
    # The corrupt second line of the batch, alone; the other three lines became events.
    assert first.message_ids[1].endswith("#2")
    assert dead_letters() == [("invalid_json", f"pubsub:{first.message_ids[1]}"),
                              ("too_late", f"pubsub:{late.message_ids[0]}")]
    assert latest_count("alice") == 2 and latest_count("bob") == 1
    # Each user entered once (from nothing); every change on the topic is in the table too.
    entered = sorted(c["user_key"] for c in received if c["kind"] == "entered")
    assert entered == sorted(expected_users)
    assert all(c["from_segment_id"] is None for c in received if c["kind"] == "entered")
    assert {c["change_key"] for c in received} == change_keys()
    assert all(c["drivers"] and c["model_version"] for c in received)
    carol = list(client.query(
        f"SELECT score_date, scoring, event_count, features.days_since_last_event AS silent "
        f"FROM `{prefix}.segment_assignments` WHERE user_key = '{_user_key('carol')}' ORDER BY score_date").result())
    # Re-scored every midnight since her event (three days ago), silent longer each day; the
    # too-late event reached no profile.
    assert [row["event_count"] for row in carol] == [1] * len(carol)
    assert len(carol) >= 3
    silent = [row["silent"] for row in carol if row["scoring"] == "daily"]
    assert silent == sorted(silent) and len(set(silent)) == len(silent)
