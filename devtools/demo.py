"""`segments demo`: generate events, run the batch job into the local warehouse, show the segments, write the report.

Everything lives under `--workdir` (default `.work/demo`) and the local warehouse
(`.work/warehouse`, left running so that you can query it afterwards). The
published demo key pseudonymises user ids; the shipped model assigns segments.

By default the demo simulates the shop the shipped model was trained on: a year of
history (users arrive, buy and churn), with the seed of the model's training data, so
that its e-mail campaigns fall on the same days before the end; the drift check then
reads "stable". A shorter `--days` simulates a young shop: the demo says what that does
to the drift and the segments (`young_shop_note`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time

from devtools import generate as generate_module
from pipelines.flags import positive_int

DEFAULT_WORKDIR = os.path.join(".work", "demo")
DEFAULT_USERS = 1000
DEFAULT_DAYS = 365
DEFAULT_SEED = 1  # models/default/HOW_TO_REPRODUCE.md


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default=DEFAULT_WORKDIR, help="Where the demo writes its files. Default: .work/demo.")
    parser.add_argument("--users", type=positive_int, default=DEFAULT_USERS,
                        help=f"Users to simulate. Default: {DEFAULT_USERS:,}.")
    parser.add_argument("--days", type=positive_int, default=DEFAULT_DAYS,
                        help=f"Days of behaviour to simulate; fewer than the model's training period show a young "
                             f"shop. Default: {DEFAULT_DAYS} (the training period of the shipped model).")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED,
                        help=f"Generator seed. Default: {DEFAULT_SEED} (the seed of the shipped model's training "
                             "data: the same campaign days).")
    parser.add_argument("--corrupt-rate", type=float, default=0.01,
                        help="Share of invalid records mixed in, to show the dead letters. Default: 0.01.")
    parser.add_argument("--bq_dataset", default="segments", help="Dataset in the local warehouse. Default: segments.")


SEGMENT_SIZES_SQL = """
SELECT segment_id, segment_name, COUNT(*) AS users,
       ROUND(COUNTIF(features.orders > 0) / COUNT(*), 2) AS customer_share,
       ROUND(AVG(p_alive), 3) AS avg_p_alive_customers,
       ROUND(AVG(features.spend_total), 2) AS avg_spend_eur,
       ROUND(AVG(features.days_since_last_event), 1) AS avg_days_silent
FROM `{project}.{dataset}.current_segment`
GROUP BY segment_id, segment_name
ORDER BY users DESC
"""
HISTORY_DAYS = 14  # daily history the demo backfills, for the sizes over time


def run_demo(args: argparse.Namespace, say=print) -> dict:
    """Runs the demo end to end and returns the run summary as a dict."""
    from devtools import query, warehouse
    from models import DEFAULT_MODEL_DIR
    from models.artifact import load_card
    from pipelines import batch
    from transforms.bigquery import admin
    from transforms.bigquery.client import client_for

    os.makedirs(args.workdir, exist_ok=True)
    events_path = os.path.join(args.workdir, "events.jsonl")
    summary_path = os.path.join(args.workdir, "summary.json")
    end = dt.datetime.now(dt.timezone.utc).date()

    say(f"[1/5] generating {args.users:,} users x {args.days} days of events -> {events_path}")
    started = time.monotonic()
    stats = generate_module.generate_events(
        events_path, users=args.users, days=args.days, end=end, seed=args.seed, fmt="jsonl",
        corrupt_rate=args.corrupt_rate, truth=os.path.join(args.workdir, "truth.csv"))
    say(f"      {stats.records:,} records: {stats.events:,} valid events, {stats.corrupt:,} corrupt,"
        f" {stats.duplicates:,} duplicates, in {time.monotonic() - started:.1f} s")

    say("[2/5] starting the local warehouse (a BigQuery API on 127.0.0.1) and creating the tables")
    info = warehouse.start(rest_port=getattr(args, "warehouse_port", None))
    client = client_for(info["endpoint"], info["project"])
    # The demo starts from an empty dataset, so what it shows is this run's output only.
    client.delete_dataset(f"{info['project']}.{args.bq_dataset}", delete_contents=True, not_found_ok=True)
    # The job makes the analyst views while it runs (`batch.run`).
    admin.create_tables(client, args.bq_dataset, project=info["project"])
    say(f"      {info['endpoint']}, dataset {info['project']}.{args.bq_dataset}")

    say("[3/5] running the batch job on DirectRunner: ingest -> profiles -> model -> warehouse")
    started = time.monotonic()
    summary = batch.run([
        "--input", events_path, "--summary", summary_path, "--demo_key", "--history_days", str(HISTORY_DAYS),
        "--bq_endpoint", info["endpoint"], "--bq_project", info["project"], "--bq_dataset", args.bq_dataset,
    ])
    say(f"      finished in {time.monotonic() - started:.1f} s")
    say(f"      {summary.console_line()}")
    say(f"      {summary.writes_line()}")
    if summary.drift_line():
        say(f"      {summary.drift_line()}")
    note = young_shop_note(args.days, load_card(DEFAULT_MODEL_DIR))
    if note:
        say(f"      {note}")
    dead = {code: n for code, n in summary.dead_lettered.items() if n}
    say(f"      dead letters by code: {json.dumps(dead, sort_keys=True)}")
    say(f"      {summary.extra.get('assignments', 0):,} segment assignments (every known user, as of each of the "
        f"last {HISTORY_DAYS + 1} midnights); summary in {summary_path}")
    summary.check()

    say("[4/5] current segment of each user (view current_segment):")
    say(query.query_table(client, SEGMENT_SIZES_SQL.format(project=info["project"], dataset=args.bq_dataset)))
    say("Query it yourself (the warehouse keeps running; `segments warehouse stop` stops it):")
    say("  .venv/bin/segments query --view segment_sizes_daily")
    say("  .venv/bin/segments query \"SELECT error_code, COUNT(*) n FROM segments.dead_letters GROUP BY 1\"")
    say("[5/5] writing the segment report (sizes, profiles, movements, drift, data health)")
    from devtools.report import write_report
    from devtools.report.cli import summary_line

    report_path = os.path.abspath(os.path.join(args.workdir, "report.html"))
    data = write_report(client, info["project"], args.bq_dataset, DEFAULT_MODEL_DIR, report_path)
    say(f"      {summary_line(data)}")
    say(f"      open it in a browser: file://{report_path}")
    say(f"report: {report_path}")
    return summary.to_json()


def training_days(card: dict) -> int:
    """Days of history the model was trained on (its card's training period)."""
    training = card.get("training", {})
    start = dt.datetime.fromisoformat(str(training["data_start"]).replace("Z", "+00:00"))
    end = dt.datetime.fromisoformat(str(training["data_end"]).replace("Z", "+00:00"))
    return round((end - start) / dt.timedelta(days=1))


def young_shop_note(days: int, card: dict) -> str:
    """What a simulation shorter than the model's training period shows; empty when it is not shorter."""
    trained = training_days(card)
    if days >= trained:
        return ""
    return (f"a young shop: {days} days of history against a model trained on {trained}, so tenure, recency and "
            "activity drift from the training data, most users have not bought yet (RFM Prospect or New) and many "
            "sit in the segment of users with little history until their behaviour shows")
