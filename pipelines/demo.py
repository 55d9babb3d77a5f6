"""`segments demo`: generate events, run the batch job locally, show what came out.

Everything lives under `--workdir` (default `.work/demo`): the events, the
summary, local outputs. The published demo key pseudonymises user ids.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import time

from pipelines import generate as generate_module

DEFAULT_WORKDIR = os.path.join(".work", "demo")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--workdir", default=DEFAULT_WORKDIR, help="Where the demo writes its files. Default: .work/demo.")
    parser.add_argument("--users", type=int, default=2000, help="Users to simulate. Default: 2000.")
    parser.add_argument("--days", type=int, default=30, help="Days of behaviour to simulate. Default: 30.")
    parser.add_argument("--seed", type=int, default=7, help="Generator seed. Default: 7.")
    parser.add_argument("--corrupt-rate", type=float, default=0.01,
                        help="Share of invalid records mixed in, to show the dead letters. Default: 0.01.")


def run_demo(args: argparse.Namespace, say=print) -> dict:
    """Runs the demo end to end and returns the run summary as a dict."""
    from pipelines import batch

    os.makedirs(args.workdir, exist_ok=True)
    events_path = os.path.join(args.workdir, "events.jsonl")
    summary_path = os.path.join(args.workdir, "summary.json")
    end = dt.datetime.now(dt.timezone.utc).date()

    say(f"[1/2] generating {args.users:,} users x {args.days} days of events -> {events_path}")
    started = time.monotonic()
    gen_args = argparse.Namespace(
        users=args.users, days=args.days, end=end, seed=args.seed, format="jsonl", out=events_path,
        corrupt_rate=args.corrupt_rate, truth=os.path.join(args.workdir, "truth.csv"))
    stats = generate_module.generate(gen_args)
    say(f"      {stats.records:,} records: {stats.events:,} valid events, {stats.corrupt:,} corrupt,"
        f" {stats.duplicates:,} duplicates, in {time.monotonic() - started:.1f} s")

    say("[2/2] running the batch job on DirectRunner")
    started = time.monotonic()
    summary = batch.run([
        "--input", events_path, "--summary", summary_path, "--demo_key",
        "--output_dir", os.path.join(args.workdir, "output"),
    ])
    say(f"      finished in {time.monotonic() - started:.1f} s")
    say(f"      {summary.console_line()}")
    dead = {code: n for code, n in summary.dead_lettered.items() if n}
    say(f"      dead letters by code: {json.dumps(dead, sort_keys=True)}")
    say(f"      summary: {summary_path}")
    summary.check()
    return summary.to_json()
