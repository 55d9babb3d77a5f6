"""`segments changes`: print segment changes as they arrive on Pub/Sub, one line each.

Next to a running ``segments stream --local`` (another terminal)::

    segments changes --local

finds the local Pub/Sub emulator and its changes topic through ``.work/live.json`` (which
``segments stream --local`` writes while it runs; it waits for one to start), makes a
subscription of its own and prints each change as it arrives::

    12:03:07 u:3f2a9c1e… entered Cart abandoners (rfm Prospect): cart_adds_per_session 0.1 → 2.0, ...
    12:03:19 u:77b0d2aa… Window shoppers → High-value loyal (rfm New): orders 0 → 1, ...
    12:04:02 u:3f2a9c1e… rfm Prospect → New (segment Cart abandoners): recency_days ? → 0, ...

Ctrl-C stops it (exit 0). Against real Pub/Sub, name a subscription to the changes topic
(``--subscription projects/P/subscriptions/S``); ``--json`` prints the messages as they
are (one JSON object per line).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import queue
import sys
import time
from typing import Callable, Mapping, Optional, Sequence

from pipelines.flags import positive_float, positive_int, subscription_path

PROG = "segments changes"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of `segments changes`."""
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument(
        "--local", action="store_true",
        help="Read the changes of the `segments stream --local` running on this machine (found through "
             ".work/live.json, or $SEGMENTS_LIVE_STATE); waits for one to start.")
    where.add_argument(
        "--subscription", type=subscription_path, default=None,
        help="Read this Pub/Sub subscription to a changes topic instead: projects/PROJECT/subscriptions/NAME. "
             "Default: none.")
    parser.add_argument(
        "--json", action="store_true",
        help="Print each change message as it is (one JSON object per line). Default: one readable line.")
    parser.add_argument(
        "--max_changes", type=positive_int, default=None,
        help="Stop after this many changes. Default: run until Ctrl-C.")
    parser.add_argument(
        "--wait_seconds", type=positive_float, default=None,
        help="--local: give up when no local stream has started within this many seconds. Default: wait "
             "until Ctrl-C.")


def _value(value: Optional[float]) -> str:
    return "?" if value is None else f"{value:.3g}"


def change_line(change: Mapping, received_at: Optional[dt.datetime] = None) -> str:
    """One readable line for a change message (a `segment_changes` row)."""
    when = (received_at or dt.datetime.now()).strftime("%H:%M:%S")
    who = f"u:{str(change.get('user_key', ''))[:8]}…"
    kind = change.get("kind")
    to_rfm, from_rfm = change.get("to_rfm_segment"), change.get("from_rfm_segment")
    if kind == "entered":
        what = f"entered {change.get('to_segment_name')} (rfm {to_rfm})"
    elif kind == "rfm":
        what = f"rfm {from_rfm} → {to_rfm} (segment {change.get('to_segment_name')})"
    elif kind == "moment":
        what = (f"moment {change.get('from_moment')} → {change.get('to_moment')} "
                f"(segment {change.get('to_segment_name')})")
        reason = change.get("moment_reason")
        return f"{when} {who} {what}" + (f": {reason}" if reason else "")
    else:
        what = f"{change.get('from_segment_name')} → {change.get('to_segment_name')}"
        what += f" (rfm {from_rfm} → {to_rfm})" if from_rfm != to_rfm else f" (rfm {to_rfm})"
    why = ", ".join(f"{d.get('feature')} {_value(d.get('before'))} → {_value(d.get('after'))}"
                    for d in (change.get("drivers") or [])[:3])
    return f"{when} {who} {what}" + (f": {why}" if why else "")


def _local_topic(wait_s: Optional[float], say: Callable[[str], None]) -> tuple[str, str]:
    """(emulator host, changes topic) of the running local stream; waits for one."""
    from devtools import live, pubsub_emulator

    path = live.live_state_path()
    deadline = None if wait_s is None else time.monotonic() + wait_s
    told = False
    while True:
        try:
            state = json.loads(path.read_text())
            if pubsub_emulator.is_ready(state["emulator_host"], timeout_s=1.0):
                return state["emulator_host"], state["changes_topic"]
        except (FileNotFoundError, ValueError, KeyError):
            pass
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"no `segments stream --local` started within {wait_s:g} s (looked for {path})")
        if not told:
            say(f"waiting for `segments stream --local` to start (looking for {path}) ...")
            told = True
        time.sleep(1.0)


def follow(subscription: str, on_change: Callable[[dict], None], max_changes: Optional[int] = None,
           stop: Optional[Callable[[], bool]] = None) -> int:
    """Streams `subscription`, calling `on_change` with each decoded change (acknowledged);
    returns how many, once `max_changes` arrived, `stop()` says so, or the stream ends."""
    import warnings

    from google.cloud import pubsub_v1

    # Messages in flight when the stream is cancelled are redelivered to the next reader.
    warnings.filterwarnings("ignore", message="Scheduling a callback after executor shutdown")
    arrived: "queue.Queue" = queue.Queue()

    def callback(message) -> None:
        arrived.put(message.data)
        message.ack()

    subscriber = pubsub_v1.SubscriberClient()
    future = subscriber.subscribe(subscription, callback)
    count = 0
    try:
        while max_changes is None or count < max_changes:
            if stop is not None and stop():
                break
            try:
                data = arrived.get(timeout=0.5)
            except queue.Empty:
                if future.done():  # the server went away (the local stream stopped)
                    break
                continue
            on_change(json.loads(data))
            count += 1
    finally:
        future.cancel()
        subscriber.close()
    return count


def cmd_changes(args: argparse.Namespace, _rest: Sequence[str]) -> int:
    """`segments changes`: see the module docstring."""
    import uuid

    say = lambda line: print(f"{PROG}: {line}", flush=True)  # noqa: E731
    show = ((lambda change: print(json.dumps(change, sort_keys=True), flush=True)) if args.json
            else (lambda change: print(change_line(change), flush=True)))
    try:
        if args.subscription:
            subscription = args.subscription
            count = follow(subscription, show, args.max_changes)
        else:
            from devtools import pubsub_emulator

            host, topic = _local_topic(args.wait_seconds, say)
            with pubsub_emulator.emulator_env(host):
                project = topic.split("/")[1]
                name = f"segments-changes-{uuid.uuid4().hex[:6]}"
                _, subscription = pubsub_emulator.create_topic_and_subscription(
                    host, topic, f"projects/{project}/subscriptions/{name}")
                say(f"following {topic} on the local emulator ({host}); Ctrl-C stops")
                count = follow(subscription, show, args.max_changes)
            if args.max_changes is None or count < args.max_changes:
                say("the local stream stopped")
    except KeyboardInterrupt:
        say("stopped")
        return 0
    except TimeoutError as error:  # a usage error: one line, exit 2 (like argparse)
        print(f"{PROG}: error: {error}", file=sys.stderr, flush=True)
        return 2
    return 0
