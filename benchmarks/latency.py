"""Latency benchmark: from an event being published to its user's row being queryable.

Local setup only: Google's Pub/Sub emulator, the streaming job on the DirectRunner and
the local warehouse (bqemulator), all on this machine. Every event is for a new user
(``lat-<n>``), so the latency of event n is the time from its publish call to the first
poll of the warehouse (google-cloud-bigquery, every `--poll_seconds`) that sees a
``segment_assignments`` row for that user. The poll interval bounds the resolution.

Run::

    python benchmarks/latency.py --rate 100 --seconds 60 [--model DIR]

Flags given to the job: one-day windows (one row per user per firing) and early
firings every `--early_firing_seconds` (2): the early firing interval is a floor on
the latency by design. Without ``--model`` and without ``models/default``, a tiny
model is trained into a temp folder (the one the tests use).
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import platform
import sys
import tempfile
import threading
import time
import uuid

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def _tiny_model(directory: str) -> str:
    from models.artifact import save_artifact
    from models.training import train_model
    from tests.test_inference import END_US, PARAMS, training_records

    trained = train_model(training_records(), until=END_US, k_range=(3, 3), silhouette_sample=100)
    path = os.path.join(directory, "model")
    save_artifact(path, trained.model, dict(trained.card_fields, bgnbd=PARAMS.as_card()))
    return path


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=100.0, help="Events per second. Default: 100.")
    parser.add_argument("--seconds", type=float, default=60.0, help="Publishing time. Default: 60.")
    parser.add_argument("--early_firing_seconds", type=int, default=2, help="Job's early firing. Default: 2.")
    parser.add_argument("--poll_seconds", type=float, default=0.5, help="Warehouse poll interval. Default: 0.5.")
    parser.add_argument("--timeout_seconds", type=float, default=300.0,
                        help="Give up waiting for rows this long after publishing ends. Default: 300.")
    parser.add_argument("--model", default=None, help="Model folder. Default: models/default or a tiny one.")
    args = parser.parse_args(argv)

    import apache_beam as beam
    from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

    from models import DEFAULT_MODEL_DIR
    from models.handler import assignment_handler
    from transforms.bigquery import admin as bq_admin
    from devtools import live, publisher, pubsub_emulator, warehouse
    from pipelines import streaming
    from transforms.ingest.privacy import DEMO_ID_KEY
    from transforms.bigquery.client import BigQueryTarget

    with tempfile.TemporaryDirectory(prefix="latency-") as tmp, warehouse.ephemeral() as wh, \
            pubsub_emulator.running(log_dir=tmp) as emulator:
        model = args.model or (DEFAULT_MODEL_DIR if os.path.isdir(DEFAULT_MODEL_DIR) else _tiny_model(tmp))
        dataset = "latency"
        bq_admin.setup(wh.client, dataset, project=wh.project)
        name = f"latency-{uuid.uuid4().hex[:6]}"
        topic, subscription = emulator.create_topic_and_subscription(name, name + "-sub")
        options = PipelineOptions([
            "--subscription", subscription, "--model", model, "--bq_endpoint", wh.endpoint,
            "--bq_project", wh.project, "--bq_dataset", dataset, "--window_size_days", "1",
            "--early_firing_seconds", str(args.early_firing_seconds), "--audit_interval_seconds", "60",
        ])
        options.view_as(StandardOptions).streaming = True
        streaming.local_runner(options)
        target = BigQueryTarget.local(wh.endpoint, wh.project, dataset, streaming=True)
        p = beam.Pipeline(options=options)
        streaming.build_pipeline(p, options.view_as(streaming.StreamingOptions), DEMO_ID_KEY, assignment_handler(model),
                                 target, name)
        result = p.run()

        total = int(args.rate * args.seconds)
        sent_at: dict[str, float] = {}
        user_of = {hmac.new(DEMO_ID_KEY, f"lat-{n}".encode(), hashlib.sha256).hexdigest(): n for n in range(total)}

        def records():
            for n in range(total):
                # Taken when the publisher takes the record, up to 1/rate before it sends it.
                sent_at[n] = time.monotonic()
                yield {"event_id": f"lat-{n}", "user_id": f"lat-{n}", "event_type": "page_view",
                       "timestamp": 0, "consent": {"analytics": True, "personalization": True}}

        stats_box = {}
        thread = threading.Thread(target=lambda: stats_box.update(stats=publisher.publish_events(
            records(), topic, args.rate, seconds=args.seconds + 5)), daemon=True)
        seen_at: dict[int, float] = {}
        thread.start()
        try:
            deadline = None
            while len(seen_at) < total:
                if not thread.is_alive() and deadline is None:
                    deadline = time.monotonic() + args.timeout_seconds
                if deadline is not None and time.monotonic() > deadline:
                    break
                rows = wh.client.query(
                    f"SELECT DISTINCT user_key FROM `{wh.project}.{dataset}.segment_assignments`").result()
                now = time.monotonic()
                for row in rows:
                    n = user_of.get(row["user_key"])
                    if n is not None and n not in seen_at:
                        seen_at[n] = now
                time.sleep(args.poll_seconds)
        finally:
            thread.join()
            live.cancel_direct(result, lambda: publisher.publish_wake_up(topic))

    latencies = np.array([seen_at[n] - sent_at[n] for n in seen_at])
    report = {
        "command": "python benchmarks/latency.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "rate": args.rate, "seconds": args.seconds, "published": stats_box["stats"].published,
        "rows_seen": len(seen_at), "p50_s": float(np.percentile(latencies, 50)) if len(latencies) else None,
        "p95_s": float(np.percentile(latencies, 95)) if len(latencies) else None,
        "max_s": float(latencies.max()) if len(latencies) else None,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
    }
    print(f"latency publish -> row queryable at {args.rate:g} events/s for {args.seconds:g} s: "
          f"p50 {report['p50_s']:.2f} s, p95 {report['p95_s']:.2f} s, max {report['max_s']:.2f} s "
          f"({report['rows_seen']:,}/{report['published']:,} users seen)")
    print(f"command: {report['command']}")
    return report


if __name__ == "__main__":
    main()
