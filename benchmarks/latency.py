"""Latency benchmark: publish -> row queryable, and publish -> change message received.

Runs `segments stream --local` itself (`devtools.live.run_local`: the Pub/Sub emulator, the
streaming job on the DirectRunner and the local warehouse, all on this machine, batched
publishing, the complete drain and its reconciliation) once per rate, with its own events
and probes:

* events: a pool of returning users (``--users``: one run per pool size and rate), and
  every ``--new_user_every``-th event a brand-new user (so "entered" changes keep coming
  all along); every event valid and consented, so each one must reach its user's row;
* publish time: when the publisher takes the event (its re-stamped event time), before
  the batching wait, so the latency includes the collector-style batching;
* row queryable: a poller reads ``MAX(event_count)`` per user from
  ``segment_assignments`` every ``--poll_seconds``; a user's k-th event is queryable at the
  first poll that shows ``event_count >= k`` (the poll interval bounds the resolution);
* change received: a subscriber on the changes topic notes when each user's "entered"
  change arrives; its latency runs from the user's first event;
* backlog: published minus read (the job's audit tallies, every ``--audit_interval_seconds``)
  sampled every second. The job keeps up when the backlog does not grow over the second
  half of the publishing period (its least-squares slope is below 5 % of the rate): it
  is bounded;
* memory: the resident memory of this process (the job runs in it, on the DirectRunner),
  sampled with the backlog; its peak per run, so that its growth with the users shows.

For each pool size the rates run in increasing order, and the summary names the highest
rate that kept up with that many users.

Run (each rate takes about ``--seconds`` plus the drain)::

    python -m benchmarks.latency --rates 100,500,1000 --seconds 60 --out latency.json
    python -m benchmarks.latency --users 1000,20000,100000 --rates 500,1000 --seconds 120

The warehouse is an ephemeral one on free ports unless ``--bq_endpoint`` is given. Results
with their commands: `benchmarks/RESULTS_latency.md`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
import uuid
from typing import Optional, Sequence

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


class Probe:
    """Publish times per event, and when each became queryable or announced."""

    def __init__(self, prefix: str, users: int, new_user_every: int):
        self.prefix, self.users, self.new_user_every = prefix, users, new_user_every
        self.lock = threading.Lock()
        self.sent_at: list[float] = []  # per event, in publish order
        self.user_of: list[str] = []
        self.nth: list[int] = []  # the event is its user's nth
        self.seen_at: dict[int, float] = {}  # event -> row queryable
        self.first_event: dict[str, int] = {}  # raw user -> their first event
        self.entered_at: dict[str, float] = {}  # raw user -> "entered" change received
        self.backlog: list[tuple[float, int, int]] = []  # (t, published, read)
        self._count: dict[str, int] = {}
        self._events_of: dict[str, list[int]] = {}

    def records(self):
        n = 0
        while True:
            if n % self.new_user_every == 0:
                user = f"{self.prefix}-new-{n}"
            else:
                user = f"{self.prefix}-pool-{(n * 7919) % self.users}"
            yield {"event_id": f"{self.prefix}-{n}", "user_id": user, "event_type": "page_view", "timestamp": 0,
                   "channel": "web", "consent": {"analytics": True, "personalization": True}}
            n += 1

    def on_sent(self, data: bytes) -> None:
        now = time.monotonic()
        user = json.loads(data)["user_id"]
        with self.lock:
            n = len(self.sent_at)
            self.sent_at.append(now)
            self.user_of.append(user)
            k = self._count[user] = self._count.get(user, 0) + 1
            self.nth.append(k)
            self._events_of.setdefault(user, []).append(n)
            self.first_event.setdefault(user, n)

    def saw_counts(self, counts: dict[str, int], now: float) -> None:
        with self.lock:
            for user, count in counts.items():
                for n in self._events_of.get(user, ())[:count]:
                    self.seen_at.setdefault(n, now)


def _percentiles(values) -> dict:
    if not len(values):
        return {"p50_s": None, "p95_s": None, "p99_s": None, "max_s": None, "n": 0}
    a = np.asarray(values, dtype=float)
    return {"p50_s": round(float(np.percentile(a, 50)), 2), "p95_s": round(float(np.percentile(a, 95)), 2),
            "p99_s": round(float(np.percentile(a, 99)), 2), "max_s": round(float(a.max()), 2), "n": int(len(a))}


def _rss_bytes() -> int:
    """This process's resident memory now (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def run_rate(rate: float, users: int, args, endpoint: str, say) -> dict:
    from devtools import live
    from pipelines.options import declare_flags
    from transforms.ingest.privacy import pseudonymise, resolve_id_key

    key = resolve_id_key(None, True)
    prefix = f"lat{uuid.uuid4().hex[:6]}"
    probe = Probe(prefix, users, args.new_user_every)
    peak_rss = [_rss_bytes()]
    dataset = f"latency_{prefix}"
    argv = ["--local", "--rate", str(rate), "--seconds", str(args.seconds), "--bq_endpoint", endpoint,
            "--bq_dataset", dataset, "--publish_batch_size", str(args.publish_batch_size),
            "--publish_batch_seconds", str(args.publish_batch_seconds),
            "--early_firing_seconds", str(args.early_firing_seconds),
            "--audit_interval_seconds", str(args.audit_interval_seconds), "--progress_seconds", "10",
            "--demo_key"] + (["--model", args.model] if args.model else [])
    parser = argparse.ArgumentParser()
    declare_flags(parser, live.LiveOptions)
    parsed, _ = parser.parse_known_args(argv)

    def watch(ctx) -> None:
        from google.cloud import pubsub_v1

        from devtools import pubsub_emulator

        raw_of, mapped = {}, set()

        def raw(user_key: str) -> Optional[str]:
            return raw_of.get(user_key)

        with pubsub_emulator.emulator_env(ctx.emulator_host):
            project = ctx.changes_topic.split("/")[1]
            _, subscription = pubsub_emulator.create_topic_and_subscription(
                ctx.emulator_host, ctx.changes_topic, f"projects/{project}/subscriptions/{prefix}-probe")
            subscriber = pubsub_v1.SubscriberClient()

            def on_change(message) -> None:
                now = time.monotonic()
                change = json.loads(message.data)
                message.ack()
                user = raw(change["user_key"])
                if change["kind"] == "entered" and user is not None:
                    with probe.lock:
                        probe.entered_at.setdefault(user, now)

            future = subscriber.subscribe(subscription, on_change)
        ctx.ready.set()
        t0 = time.monotonic()
        next_backlog = t0
        try:
            while True:
                finished = ctx.done.is_set()
                with probe.lock:
                    new = [user for user in probe.first_event if user not in mapped]
                for user in new:
                    raw_of[pseudonymise(key, user)] = user
                    mapped.add(user)
                rows = ctx.client.query(
                    f"SELECT user_key, MAX(event_count) AS n FROM `{ctx.table_prefix}.segment_assignments` "
                    f"WHERE assigned_at >= TIMESTAMP_MICROS({ctx.started_us}) GROUP BY user_key").result()
                now = time.monotonic()
                probe.saw_counts({raw_of[r["user_key"]]: int(r["n"]) for r in rows if r["user_key"] in raw_of}, now)
                if now >= next_backlog:
                    next_backlog += 1.0
                    read = live.read_tallies(ctx.tallies_path).get("read", 0)
                    probe.backlog.append((now - t0, ctx.publishing.published_so_far, read))
                    peak_rss[0] = max(peak_rss[0], _rss_bytes())
                if finished:
                    break
                time.sleep(args.poll_seconds)
        finally:
            future.cancel()
            subscriber.close()

    started = time.monotonic()
    final = live.run_local(parsed, argv, say=say, records=probe.records(), on_sent=probe.on_sent, watch=watch)
    wall_s = time.monotonic() - started
    with probe.lock:
        row_latency = [probe.seen_at[n] - probe.sent_at[n] for n in probe.seen_at]
        change_latency = [probe.entered_at[u] - probe.sent_at[n] for u, n in probe.first_event.items()
                          if u in probe.entered_at]
        published = len(probe.sent_at)
        seen_users = len(probe.first_event)
    # Backlog growth over the second half of the publishing period: the least-squares slope
    # of (published - read) against time, samples every second (read moves in audit steps).
    publishing = [(t, p, r) for t, p, r in probe.backlog if t <= args.seconds + 1]
    half = [s for s in publishing if s[0] >= args.seconds / 2]
    growth = None
    if len(half) >= 3:
        growth = float(np.polyfit([t for t, _, _ in half], [p - r for _, p, r in half], 1)[0])
    max_backlog = max((p - r for _, p, r in publishing), default=None)
    return {
        "rate": rate, "pool_users": users, "seconds": args.seconds, "published": published, "users": seen_users,
        "publish_batch_size": args.publish_batch_size, "publish_batch_seconds": args.publish_batch_seconds,
        "early_firing_seconds": args.early_firing_seconds, "poll_seconds": args.poll_seconds,
        "row": _percentiles(row_latency), "rows_missing": published - len(row_latency),
        "change": _percentiles(change_latency), "changes_missing": seen_users - len(change_latency),
        "peak_rss_mib": round(peak_rss[0] / 2**20),
        "max_backlog": max_backlog, "backlog_growth_per_s": None if growth is None else round(growth, 1),
        "keeps_up": growth is not None and growth < 0.05 * rate,
        "reconciled": final["reconciled"], "wall_s": round(wall_s, 1),
        "drain_s": round(wall_s - args.seconds, 1),
    }


def main(argv: Optional[Sequence[str]] = None) -> list[dict]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="100,500,1000",
                        help="Comma-separated events/s, one run each. Default: 100,500,1000.")
    parser.add_argument("--seconds", type=float, default=60.0, help="Publishing time per rate. Default: 60.")
    parser.add_argument("--users", default="1000",
                        help="Comma-separated sizes of the pool of returning users, one series of rates each. "
                             "Default: 1000.")
    parser.add_argument("--new_user_every", type=int, default=100,
                        help="Every this many events, a brand-new user. Default: 100.")
    parser.add_argument("--publish_batch_size", type=int, default=500, help="Events per message. Default: 500.")
    parser.add_argument("--publish_batch_seconds", type=float, default=0.5,
                        help="Longest wait of an event for its message. Default: 0.5.")
    parser.add_argument("--early_firing_seconds", type=int, default=2, help="The job's early firing. Default: 2.")
    parser.add_argument("--audit_interval_seconds", type=int, default=2, help="The job's audit interval. Default: 2.")
    parser.add_argument("--poll_seconds", type=float, default=0.5, help="Warehouse poll interval. Default: 0.5.")
    parser.add_argument("--model", default=None, help="Model folder. Default: models/default.")
    parser.add_argument("--bq_endpoint", default=None, help="A running local warehouse. Default: an ephemeral one.")
    parser.add_argument("--out", default=None, help="Also write the results (JSON) here. Default: none.")
    args = parser.parse_args(argv)

    import contextlib

    from devtools import warehouse

    say = lambda line: print(f"  {line}", flush=True)  # noqa: E731
    results = []
    with (contextlib.nullcontext(None) if args.bq_endpoint else warehouse.ephemeral()) as wh:
        endpoint = args.bq_endpoint or wh.endpoint
        for users in (int(u) for u in args.users.split(",")):
            for rate in sorted(float(r) for r in args.rates.split(",")):
                print(f"{users:,} users, rate {rate:g} events/s for {args.seconds:g} s ...", flush=True)
                results.append(run_rate(rate, users, args, endpoint, say))
                r = results[-1]
                print(f"{users:,} users, rate {rate:g}/s: row p50/p95/p99 {r['row']['p50_s']}/{r['row']['p95_s']}/"
                      f"{r['row']['p99_s']} s, change p50/p95/p99 {r['change']['p50_s']}/{r['change']['p95_s']}/"
                      f"{r['change']['p99_s']} s, max backlog {r['max_backlog']}, "
                      f"growth {r['backlog_growth_per_s']}/s, keeps up {r['keeps_up']}, "
                      f"reconciled {r['reconciled']}, drain {r['drain_s']} s, "
                      f"peak RSS {r['peak_rss_mib']} MiB", flush=True)
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (not a quiet machine when above 1)")
    for users in sorted({r["pool_users"] for r in results}):
        kept = [r["rate"] for r in results if r["pool_users"] == users and r["keeps_up"]]
        print(f"{users:,} users: highest rate that kept up {max(kept):g}/s" if kept
              else f"{users:,} users: no rate tried kept up")
    report = {"command": "python -m benchmarks.latency " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
              "results": results}
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(report, handle, indent=2)
    return results


if __name__ == "__main__":
    main()
