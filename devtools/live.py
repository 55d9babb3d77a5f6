"""`segments stream`: the streaming job, and a local live mode that runs it all on this machine.

Local live mode (no cloud)::

    segments stream --local --rate 500 --seconds 120 [--users 200] [--seed 7] [--publish_batch_size 100]

starts Google's Pub/Sub emulator and the local warehouse (`devtools.warehouse`, tables
made by `transforms.bigquery.admin.setup`), publishes generated events (`devtools.generate`)
in real time at ``--rate`` events/s, re-stamped to the moment they are sent, with about
1 % corrupt records (truncated JSON) and about 0.5 % events from ten days ago (beyond the
allowed lateness once their user's event-time clock has passed them: ``too_late``), and
runs the streaming job (`pipelines.streaming`) on the DirectRunner. Events go out in
batched messages of up to ``--publish_batch_size`` newline-delimited events (the
DirectRunner pulls 10 messages per cycle: batching is what lets it keep up); 1 publishes
one event per message. Every ``--progress_seconds`` it prints what was published, what
the job read (the backlog is the difference) and what the warehouse holds.

Segment changes go to the emulator's topic ``segment-changes`` as well as to the
``segment_changes`` table; ``segments changes --local`` (in another terminal) prints them
as they arrive: it finds the emulator through ``.work/live.json``, which this command
writes while it runs.

While the job runs, an empty batched message (no records) goes out every half second:
the local runner's Pub/Sub reader blocks for up to 30 s on an empty subscription, and
nothing else runs meanwhile, not even the timers that flush pending events.

Stopping (after ``--seconds``, or on Ctrl-C; a second Ctrl-C abandons the drain) drains
completely before anything is cancelled (the DirectRunner's Pub/Sub reader acknowledges
what it pulls *before* the pipeline processes it, so cancelling early loses events):

1. publishing stops;
2. read: the job's own tally of records read (its per-interval audit counts, written to a
   local file; Beam's counters stop updating on the DirectRunner) reaches the number
   published;
3. every flush fired: every record read has a fate in the tallies: parsed or
   dead-lettered at parse, and every consented event left the profile step as unique or
   duplicate (an event still waiting in a user's bag is in neither);
4. the writes landed: the warehouse holds every valid event in its user's latest row
   (below), this run's dead letters per code as tallied, and the changes as tallied;
   each step gives up after a stall (nothing moved for a minute), and then says so;
5. the job is cancelled, a final ``run_audit`` row for the whole run is written, and the
   summary reconciles on what reached the warehouse.

The reconciliation: the driver keeps a ledger of what it published, judged by the event
contract (valid, consented, not suppressed; pseudonymised with the job's key; unique per
user and ``event_id``). Every such event must be reflected in its user's latest
``segment_assignments`` row: the latest row's ``event_count`` equals the number of the
user's valid unique events (less those dead-lettered as ``too_late``). The summary says
so, or names what is missing. It also checks read == published, the fates, the dead
letters and the changes (detected, in ``segment_changes``, and received on the topic).

In local mode ``--early_firing_seconds`` defaults to 2 (not 60) so that segment changes
show while it runs; the published demo key pseudonymises user ids unless a key is
configured.

Production (Dataflow)::

    segments stream --subscription projects/P/subscriptions/S --runner DataflowRunner \\
        --project P --region R --temp_location gs://B/tmp --warehouse bigquery \\
        --changes_topic projects/P/topics/segment-changes --id_key_file gs://B/secrets/id_key

launches the job and returns (drain or update it with the Dataflow tools).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import itertools
import json
import logging
import os
import threading
import time
import uuid
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Sequence

import apache_beam as beam
import orjson
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult

from pipelines.flags import positive_float, positive_int
from pipelines.options import declare_flags
from pipelines.streaming import StreamingOptions
from transforms import audit

LOG = logging.getLogger(__name__)
PROG = "segments stream"

CORRUPT_EVERY = 97  # about 1 % of the records: truncated JSON (invalid_json)
LATE_EVERY = 199  # about 0.5 %: an event from LATE_BY ago (too_late once its shard's watermark passed it)
LATE_BY = dt.timedelta(days=10)
LOCAL_EARLY_FIRING_S = 2
LOCAL_AUDIT_INTERVAL_S = 5
LIVE_TOPIC = "segments-live"
CHANGES_TOPIC = "segment-changes"
DEFAULT_PUBLISH_BATCH = 500
DEFAULT_PUBLISH_BATCH_SECONDS = 0.5
LIVE_STATE_ENV = "SEGMENTS_LIVE_STATE"


class LiveOptions(StreamingOptions):
    """Flags of `segments stream` beyond the streaming job's."""

    @classmethod
    def _add_argparse_args(cls, parser):
        group = parser.add_argument_group("local live mode")
        group.add_argument(
            "--local", action="store_true", default=False,
            help="Run everything here: Pub/Sub emulator, local warehouse, generated events, DirectRunner.")
        group.add_argument(
            "--rate", type=positive_float, default=100.0,
            help="--local: events published per second. Default: 100 (benchmarks/RESULTS_latency.md says how "
                 "fast the local DirectRunner keeps up).")
        group.add_argument(
            "--seconds", type=positive_float, default=None,
            help="--local: stop publishing after this many seconds. Default: run until Ctrl-C.")
        group.add_argument(
            "--users", type=positive_int, default=200,
            help="--local: users in the generated population. Default: 200.")
        group.add_argument(
            "--progress_seconds", type=positive_float, default=5.0,
            help="--local: print progress this often. Default: 5.")
        group.add_argument(
            "--seed", type=int, default=7, help="--local: generator seed. Default: 7.")
        group.add_argument(
            "--publish_batch_size", type=positive_int, default=DEFAULT_PUBLISH_BATCH,
            help="--local: at most this many events per published message (newline-delimited JSON, attribute "
                 "content-type: application/x-ndjson); 1 publishes one event per message. Default: "
                 f"{DEFAULT_PUBLISH_BATCH}.")
        group.add_argument(
            "--publish_batch_seconds", type=positive_float, default=DEFAULT_PUBLISH_BATCH_SECONDS,
            help="--local: a message goes out when its first event has waited this long, full or not. Default: "
                 f"{DEFAULT_PUBLISH_BATCH_SECONDS}.")
        group.add_argument(
            "--stall_seconds", type=positive_float, default=60.0,
            help="--local: give up a drain step after this long without progress (and say so). Default: 60.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Declares the flags of `segments stream` (shared, streaming and live ones)."""
    declare_flags(parser, LiveOptions)


# ---------------------------------------------------------------------------
# Generated live traffic


def live_records(users: int, seed: int, now_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000
                 ) -> Iterator[object]:
    """An endless stream of records to publish: generated events, some corrupt, some late.

    Event dicts are re-stamped by the publisher; corrupt and late records are bytes
    (sent as they are). The population is simulated one day at a time, with a new seed
    per round, so the same users keep coming back.
    """
    from devtools import generate

    serial = 0
    for round_ in itertools.count():
        for event in generate.iter_events(users=users, days=1, end=generate.today_utc(), seed=seed + round_):
            serial += 1
            if serial % CORRUPT_EVERY == 0:
                yield orjson.dumps(event)[:40]  # truncated JSON: invalid_json
            elif serial % LATE_EVERY == 0:
                late_ms = now_ms() - LATE_BY // dt.timedelta(milliseconds=1)
                yield orjson.dumps(dict(event, event_id=f"late-{seed}-{serial}", timestamp=late_ms))
            else:
                yield event


# ---------------------------------------------------------------------------
# Warehouse queries


def warehouse_counts(client, table_prefix: str, run_id: str, since_us: int) -> dict:
    """This run's assignment rows (written since `since_us`) and users, its dead letters per
    code, and its segment changes (detected since `since_us`).

    The dataset may hold earlier runs (the demo's, a previous live run); `assigned_at` is
    the processing time of a row's latest write, so rows this run (re)wrote count.
    """
    (assigned,) = client.query(
        f"SELECT COUNT(*) AS n_rows, COUNT(DISTINCT user_key) AS n_users FROM `{table_prefix}.segment_assignments` "
        f"WHERE assigned_at >= TIMESTAMP_MICROS({int(since_us)})"
    ).result()
    dead = {row["error_code"]: int(row["n"]) for row in client.query(
        f"SELECT error_code, COUNT(*) AS n FROM `{table_prefix}.dead_letters` WHERE run_id = '{run_id}' "
        f"GROUP BY error_code").result()}
    (changes,) = client.query(
        f"SELECT COUNT(*) AS n FROM `{table_prefix}.segment_changes` "
        f"WHERE detected_at >= TIMESTAMP_MICROS({int(since_us)})").result()
    return {"assignment_rows": int(assigned["n_rows"]), "users": int(assigned["n_users"]), "dead_letters": dead,
            "changes": int(changes["n"])}


class PublishedLedger:
    """What the driver published, judged by the event contract: per user (pseudonym), the
    ids of their valid, consented, unsuppressed events.

    It applies the contract's rules (`transforms.ingest.validation.parse_event`, the
    consent default, the suppression list, the pseudonymisation key) to the bytes it
    sent, so that the warehouse can be checked against what was published rather than
    against the job's own tallies.
    """

    def __init__(self, id_key: bytes, config, consent_default: str = "deny", suppressed: frozenset = frozenset()):
        self._key = id_key
        self._config = config
        self._grant = consent_default == "grant"
        self._suppressed = suppressed
        self._lock = threading.Lock()
        self.events: dict[str, set] = {}
        self.records = self.invalid = self.filtered = 0
        self._pseudonyms: dict[str, str] = {}

    def add(self, data: bytes) -> None:
        from transforms.ingest.privacy import pseudonymise
        from transforms.ingest.validation import InvalidEvent, parse_event

        try:
            event = parse_event(data, "ledger", self._config)
        except InvalidEvent:
            with self._lock:
                self.records += 1
                self.invalid += 1
            return
        consented = event.consent_personalization
        consented = self._grant if consented is None else consented
        with self._lock:
            self.records += 1
            if not consented or event.user_id in self._suppressed:
                self.filtered += 1
                return
            user = self._pseudonyms.get(event.user_id)
            if user is None:
                user = self._pseudonyms[event.user_id] = pseudonymise(self._key, event.user_id)
            self.events.setdefault(user, set()).add(event.event_id)

    def expected(self, too_late: set) -> dict[str, int]:
        """Per user, the valid unique events that must be in their latest row (less `too_late`
        (user, event id) pairs)."""
        with self._lock:
            return {user: len({e for e in ids if (user, e) not in too_late}) for user, ids in self.events.items()}


def reconcile_latest_rows(client, table_prefix: str, run_id: str, since_us: int, ledger: PublishedLedger) -> dict:
    """Every valid published event reflected in its user's latest row?

    Per user: the ledger's valid unique events, less this run's ``too_late`` dead letters,
    against ``event_count`` of the user's latest ``segment_assignments`` row written by
    this run (the latest ``as_of``).

    Returns:
      {"reflected": bool, "users", "events" (expected), "in_rows" (sum of the latest rows'
      event counts for those users), "missing_users", "short_users", "over_users", "examples"}.
    """
    too_late = set()
    for row in client.query(
            f"SELECT raw_payload FROM `{table_prefix}.dead_letters` WHERE run_id = '{run_id}' "
            f"AND error_code = 'too_late'").result():
        with contextlib.suppress(ValueError, KeyError, TypeError):
            payload = orjson.loads(row["raw_payload"])
            too_late.add((payload["user_id"], payload["event_id"]))
    expected = {user: n for user, n in ledger.expected(too_late).items() if n}
    latest = {row["user_key"]: int(row["event_count"]) for row in client.query(
        f"SELECT user_key, event_count FROM `{table_prefix}.segment_assignments` "
        f"WHERE assigned_at >= TIMESTAMP_MICROS({int(since_us)}) "
        f"QUALIFY ROW_NUMBER() OVER (PARTITION BY user_key ORDER BY as_of DESC, assigned_at DESC) = 1").result()}
    missing = sorted(user for user in expected if user not in latest)
    short = sorted(user for user, n in expected.items() if user in latest and latest[user] < n)
    over = sorted(user for user, n in expected.items() if user in latest and latest[user] > n)
    examples = [f"{user[:8]}…: expected {expected[user]}, latest row {latest.get(user, 'none')}"
                for user in (missing + short + over)[:5]]
    return {"reflected": not (missing or short or over), "users": len(expected), "events": sum(expected.values()),
            "in_rows": sum(latest.get(user, 0) for user in expected), "missing_users": len(missing),
            "short_users": len(short), "over_users": len(over), "too_late": len(too_late), "examples": examples}


# ---------------------------------------------------------------------------
# The local run


@dataclasses.dataclass
class _Publishing:
    stats: object = None
    error: Optional[BaseException] = None
    published_so_far: int = 0


def _publish_in_background(records, topic: str, rate: float, seconds: Optional[float],
                           stop: threading.Event, batch_size: int = 1, batch_seconds: float = 0.1,
                           on_sent: Optional[Callable[[bytes], None]] = None,
                           state: Optional[_Publishing] = None) -> tuple[threading.Thread, _Publishing]:
    from devtools import publisher

    state = state or _Publishing()

    def progress(stats):
        state.published_so_far = stats.published

    def work():
        try:
            state.stats = publisher.publish_events(records, topic, rate, seconds=seconds, stop=stop,
                                                   on_progress=progress, batch_size=batch_size,
                                                   max_batch_delay_s=batch_seconds, on_sent=on_sent)
            state.published_so_far = state.stats.published
        except BaseException as error:  # reported by the driver
            state.error = error

    thread = threading.Thread(target=work, name="LivePublisher", daemon=True)
    thread.start()
    return thread, state


def _flag_given(argv: Sequence[str], flag: str) -> bool:
    return any(arg == flag or arg.startswith(flag + "=") for arg in argv)


class _AppendJsonLines(beam.DoFn):
    """Appends each element (a dict) as a JSON line to a local file; the driver reads it."""

    def __init__(self, path: str):
        self._path = path

    def process(self, element: dict) -> Iterator[None]:
        with open(self._path, "ab") as handle:
            handle.write(orjson.dumps(element) + b"\n")
        return iter(())


def read_tallies(path: str) -> dict:
    """The sum of the interval tallies written so far (stage names and error codes -> counts)."""
    totals: dict[str, int] = {}
    try:
        with open(path, "rb") as handle:
            lines = handle.read().splitlines()
    except FileNotFoundError:
        return totals
    for line in lines:
        if not line.strip():
            continue
        for name, value in orjson.loads(line).items():
            if not name.startswith("_"):
                totals[name] = totals.get(name, 0) + int(value)
    return totals


def summary_from_tallies(tallies: dict, extra: Optional[dict] = None):
    """A `RunSummary` from stage tallies (see `pipelines.streaming`).

    filtered per reason as the privacy step tallied them, duplicates as the profile step
    tallied them, valid = unique - too_late; dead letters per code as tallied. An event still in
    a profile bag is in none of these, so ``read`` balances only once every flush fired.
    """
    from pipelines.summary import RunSummary
    from transforms.contracts.outcomes import EVENT_LEVEL_CODES, ROW_LEVEL_CODES, FilterReason

    get = lambda name: int(tallies.get(name, 0))  # noqa: E731
    return RunSummary(
        read=get(audit.AUDIT_READ),
        valid=get(audit.AUDIT_UNIQUE) - get("too_late"),
        duplicates=get(audit.AUDIT_DUPLICATES),
        filtered={reason.value: get(audit.filtered_name(reason.value)) for reason in FilterReason},
        dead_lettered={code.value: get(code.value) for code in EVENT_LEVEL_CODES},
        rows_dead_lettered={code.value: get(code.value) for code in ROW_LEVEL_CODES},
        extra=dict(extra or {}),
    )


def pending_in_profiles(tallies: dict) -> int:
    """Consented events not yet out of the profile step (as unique or duplicate): waiting in a bag."""
    return (int(tallies.get(audit.AUDIT_CONSENTED, 0)) - int(tallies.get(audit.AUDIT_UNIQUE, 0))
            - int(tallies.get(audit.AUDIT_DUPLICATES, 0)))


def unjudged(tallies: dict) -> int:
    """Records read but not yet judged: neither parsed nor dead-lettered at parse, or parsed
    but neither kept nor filtered by the privacy step."""
    from transforms.contracts.outcomes import EVENT_LEVEL_CODES, ErrorCode, FilterReason

    get = lambda name: int(tallies.get(name, 0))  # noqa: E731
    parse_dead = sum(get(code.value) for code in EVENT_LEVEL_CODES if code != ErrorCode.TOO_LATE)
    filtered = sum(get(audit.filtered_name(reason.value)) for reason in FilterReason)
    # read = dead-lettered at parse + parsed, and parsed = consented + filtered, once judged.
    return get(audit.AUDIT_READ) - parse_dead - get(audit.AUDIT_CONSENTED) - filtered


def _wait(step: str, check: Callable[[], tuple[bool, object]], stall_s: float, say, interrupted: threading.Event,
          poll_s: float = 0.5, report_every_s: float = 10.0) -> bool:
    """Polls `check` (-> (done, progress)) until done; False after `stall_s` without progress or on Ctrl-C."""
    done, progress = check()
    last_change, next_report = time.monotonic(), time.monotonic() + report_every_s
    while not done:
        now = time.monotonic()
        if interrupted.is_set():
            return False
        if now - last_change > stall_s:
            say(f"drain: {step}: no progress for {stall_s:g} s ({progress}); giving up on it")
            return False
        if now >= next_report:
            next_report += report_every_s
            say(f"drain: {step} ... ({progress})")
        interrupted.wait(poll_s)
        done, now_progress = check()
        if now_progress != progress:
            progress, last_change = now_progress, time.monotonic()
    return True


def drain(tallies_path: str, published: int, warehouse_done: Callable[[], tuple[bool, object]], stall_s: float,
          say, interrupted: threading.Event, quiet_s: float = 7.0) -> tuple[dict, dict]:
    """Waits, in order, for every published record to be read, every flush to fire and the
    writes to land (the module docstring); returns (the tallies then, {step: completed}).

    The writes have landed when `warehouse_done` holds and still holds after `quiet_s`
    (more than an audit interval) in which the tallies did not move: the tallies of the
    last bundles reach the driver one audit interval late.
    """
    steps = {}

    def read_all():
        read = read_tallies(tallies_path).get(audit.AUDIT_READ, 0)
        return read >= published, f"read {read:,} of {published:,}"

    def fates():
        tallies = read_tallies(tallies_path)
        pending, open_ = pending_in_profiles(tallies), unjudged(tallies)
        return pending == 0 and open_ == 0, f"{pending:,} events waiting in profile bags, {open_:,} records unjudged"

    steps["read"] = _wait("reading what was published", read_all, stall_s, say, interrupted)
    if steps["read"]:
        say(f"drain: all {published:,} published records read; waiting for every pending flush ...")
    steps["flushed"] = steps["read"] and _wait("flushing the profiles", fates, stall_s, say, interrupted)
    if steps["flushed"]:
        say("drain: every record has its fate; waiting for the writes to land ...")
    steps["written"] = False
    while steps["flushed"] and _wait("writing", warehouse_done, stall_s, say, interrupted, poll_s=2.0):
        before = read_tallies(tallies_path)
        if interrupted.wait(quiet_s):
            break
        if read_tallies(tallies_path) == before and warehouse_done()[0]:
            steps["written"] = True
            break
    return read_tallies(tallies_path), steps


def live_state_path() -> Path:
    """Where a running `segments stream --local` says where its emulator and changes topic are."""
    from devtools import warehouse

    env = os.environ.get(LIVE_STATE_ENV)
    return Path(env) if env else warehouse.default_data_dir().parent / "live.json"


@dataclasses.dataclass
class LiveContext:
    """What a watcher of a local run (`run_local(watch=...)`, the latency benchmark) can use."""

    client: object  # google-cloud-bigquery client of the local warehouse
    table_prefix: str
    run_id: str
    started_us: int
    tallies_path: str
    emulator_host: str
    changes_topic: str
    publishing: "_Publishing"
    done: threading.Event  # set once publishing and the drain are over
    ready: threading.Event  # the watcher sets it when it is ready; publishing waits for it (30 s at most)


class MessageCounter:
    """Counts (and acknowledges) the messages arriving on a subscription, a pull at a time."""

    def __init__(self, subscription: str):
        from google.cloud import pubsub_v1

        self._subscription = subscription
        self._subscriber = pubsub_v1.SubscriberClient()
        self.received = 0

    def pull(self) -> int:
        """Takes everything waiting now; returns the total so far."""
        while True:
            response = self._subscriber.pull(subscription=self._subscription, max_messages=1000, timeout=10,
                                             return_immediately=True)
            if not response.received_messages:
                return self.received
            self.received += len(response.received_messages)
            self._subscriber.acknowledge(subscription=self._subscription,
                                         ack_ids=[m.ack_id for m in response.received_messages])

    def close(self) -> None:
        self._subscriber.close()


HEARTBEAT_S = 0.5


def _heartbeats(topic: str, stop: threading.Event, every_s: float = HEARTBEAT_S) -> None:
    """Publishes an empty batch every `every_s` until `stop` (`publisher.publish_heartbeat`)."""
    from google.cloud import pubsub_v1

    from devtools import publisher

    client = pubsub_v1.PublisherClient()
    try:
        while not stop.wait(every_s):
            try:
                publisher.publish_heartbeat(topic, client)
            except Exception as error:  # a missed heartbeat only delays timers: log, go on
                LOG.warning("heartbeat not published: %s", error)
    finally:
        client.stop()


def run_local(args: argparse.Namespace, argv: Sequence[str], say: Callable[[str], None] = print,
              records: Optional[Iterable] = None, on_sent: Optional[Callable[[bytes], None]] = None,
              watch: Optional[Callable[[LiveContext], None]] = None) -> dict:
    """Runs the local live mode (see the module docstring); returns the final summary dict.

    Args:
      args, argv: the parsed and the raw command line.
      say: where progress lines go.
      records: what to publish instead of `live_records` (the latency benchmark's events).
      on_sent: also called with each published record's bytes.
      watch: run in a thread once the job runs, with a `LiveContext` (the benchmark's probes).
    """
    import tempfile

    from models.drift import DriftMonitor
    from models.serving import serving_model
    from devtools import publisher, pubsub_emulator, warehouse
    from pipelines import streaming
    from transforms.bigquery import admin
    from transforms.bigquery.rows import audit_row
    from transforms.ingest.privacy import read_suppression_list
    from transforms.bigquery.loads import write_audit

    argv = list(argv)
    if not _flag_given(argv, "--early_firing_seconds"):
        argv += ["--early_firing_seconds", str(LOCAL_EARLY_FIRING_S)]
    if not _flag_given(argv, "--audit_interval_seconds"):
        argv += ["--audit_interval_seconds", str(LOCAL_AUDIT_INTERVAL_S)]
    options = PipelineOptions(argv)
    live = options.view_as(LiveOptions)
    if live.warehouse != "local":
        raise ValueError("--local writes to the local warehouse; drop --warehouse bigquery")
    model = serving_model(live.model_dir(), expected_sha256=live.model_sha256)  # refused before anything starts
    card = model.card
    pubsub_emulator.find_emulator()  # fail fast, with the install hint, before starting anything
    key_ref = live.id_key_ref()  # the graph holds where the key is; the ledger needs the key itself
    id_key = key_ref.read()
    run_id = live.resolved_run_id("stream")
    interrupted = threading.Event()
    ledger = PublishedLedger(id_key, live.validation_config(), live.consent_default,
                             read_suppression_list(live.suppression_list))

    def sent(data: bytes) -> None:
        ledger.add(data)
        if on_sent is not None:
            on_sent(data)

    state_path = live_state_path()
    with contextlib.ExitStack() as stack:
        say("starting the Pub/Sub emulator and the local warehouse ...")
        emulator = stack.enter_context(pubsub_emulator.running())
        name = f"{LIVE_TOPIC}-{uuid.uuid4().hex[:6]}"
        topic, subscription = emulator.create_topic_and_subscription(name, name + "-sub")
        # The driver's own subscription to the changes topic, to count what was published.
        changes_topic, changes_audit = emulator.create_topic_and_subscription(CHANGES_TOPIC, f"{name}-changes")
        change_messages = MessageCounter(changes_audit)
        stack.callback(change_messages.close)
        endpoint_given = _flag_given(argv, "--bq_endpoint")
        started_warehouse = not endpoint_given and warehouse.status()["state"] != "running"
        if not endpoint_given:
            argv += ["--bq_endpoint", warehouse.start(project=live.bq_project or warehouse.DEFAULT_PROJECT)["endpoint"]]
        if started_warehouse:
            stack.callback(warehouse.stop)
        target = PipelineOptions(argv).view_as(LiveOptions).bigquery_target(streaming=True)
        client = target.client()
        stack.callback(client.close)
        admin.setup(client, target.dataset, project=target.project)
        table_prefix = f"{target.project}.{target.dataset}"

        options = PipelineOptions(argv + ["--subscription", subscription, "--changes_topic", changes_topic])
        options.view_as(StandardOptions).streaming = True
        streaming.local_runner(options)
        job = options.view_as(LiveOptions)
        p = beam.Pipeline(options=options)
        outputs = streaming.build_pipeline(p, job, key_ref, model, target, run_id, drift=DriftMonitor.from_card(card))
        tallies_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="segments-live-"))
        tallies_path = f"{tallies_dir}/tallies.jsonl"
        outputs.interval_counts | "SinkTallies" >> beam.ParDo(_AppendJsonLines(tallies_path))
        started_us = time.time_ns() // 1000
        result = p.run()
        state_path.parent.mkdir(parents=True, exist_ok=True)
        state_path.write_text(json.dumps({"emulator_host": emulator.host, "changes_topic": changes_topic,
                                          "run_id": run_id, "pid": os.getpid()}))
        stack.callback(lambda: state_path.unlink(missing_ok=True))
        say(f"job {run_id}: {subscription} -> {table_prefix} (model {card.get('model_version')}, early firing "
            f"every {job.early_firing_seconds} s); changes on {changes_topic} (`segments changes --local`)")
        batch = live.publish_batch_size
        say(f"publishing ~{live.rate:g} events/s for {live.users:,} users"
            + (f" in messages of up to {batch} events or {live.publish_batch_seconds:g} s" if batch > 1
               else " one event per message")
            + (f" for {live.seconds:g} s" if live.seconds else " until Ctrl-C") + " ...")

        stop_publishing, stop_heartbeats = threading.Event(), threading.Event()
        stack.callback(stop_heartbeats.set)
        publishing = _Publishing()
        watch_done = threading.Event()
        if watch is not None:
            context = LiveContext(client, table_prefix, run_id, started_us, tallies_path, emulator.host,
                                  changes_topic, publishing, watch_done, threading.Event())
            threading.Thread(target=watch, args=(context,), name="LiveWatch", daemon=True).start()
            context.ready.wait(30.0)
        heartbeat = threading.Thread(target=_heartbeats, args=(topic, stop_heartbeats), name="LiveHeartbeat",
                                     daemon=True)
        heartbeat.start()
        thread, publishing = _publish_in_background(
            records if records is not None else live_records(live.users, live.seed), topic, live.rate,
            live.seconds, stop_publishing, batch, live.publish_batch_seconds, sent, state=publishing)
        cancelled = False
        drain_steps: dict = {}
        drain_s = 0.0
        try:
            t0 = time.monotonic()
            try:
                while thread.is_alive():
                    thread.join(live.progress_seconds)
                    counts = warehouse_counts(client, table_prefix, run_id, started_us)
                    read = read_tallies(tallies_path).get(audit.AUDIT_READ, 0)
                    say(f"[{time.monotonic() - t0:5.0f} s] published {publishing.published_so_far:,}, read {read:,}"
                        f" (backlog {max(publishing.published_so_far - read, 0):,}; audited every"
                        f" {job.audit_interval_seconds} s) | assignments {counts['assignment_rows']:,} rows,"
                        f" {counts['users']:,} users | changes {counts['changes']:,}"
                        f" | dead letters {sum(counts['dead_letters'].values()):,}")
            except KeyboardInterrupt:
                say("Ctrl-C: stopping the publisher and draining (Ctrl-C again to abandon the drain) ...")
            stop_publishing.set()
            thread.join()
            if publishing.error is not None:
                raise RuntimeError(f"publishing failed: {publishing.error}") from publishing.error
            stats = publishing.stats
            say(f"published {stats.published:,} events in {stats.messages:,} messages ({stats.failed:,} failed) in "
                f"{stats.elapsed_s:.1f} s; draining ...")

            def written() -> tuple[bool, object]:
                tallies = read_tallies(tallies_path)
                counts = warehouse_counts(client, table_prefix, run_id, started_us)
                check = reconcile_latest_rows(client, table_prefix, run_id, started_us, ledger)
                tallied = {code: n for code, n in summary_from_tallies(tallies).dead_lettered.items() if n}
                tallied.update({code: n for code, n in summary_from_tallies(tallies).rows_dead_lettered.items() if n})
                changes, received = int(tallies.get(audit.AUDIT_CHANGES, 0)), change_messages.pull()
                done = (check["reflected"] and counts["dead_letters"] == tallied and counts["changes"] == changes
                        and received == changes)
                return done, (f"{check['in_rows']:,} of {check['events']:,} events in latest rows, "
                              f"changes {counts['changes']:,} written and {received:,} received of {changes:,}, "
                              f"dead letters {sum(counts['dead_letters'].values()):,}/{sum(tallied.values()):,}")

            drain_started = time.monotonic()
            try:
                tallies, drain_steps = drain(tallies_path, stats.published, written, live.stall_seconds, say,
                                             interrupted, quiet_s=job.audit_interval_seconds + 2.0)
            except KeyboardInterrupt:
                interrupted.set()
                tallies, drain_steps = read_tallies(tallies_path), {}
            watch_done.set()
            drain_s = time.monotonic() - drain_started
            say(f"drain {'complete' if drain_steps and all(drain_steps.values()) else 'INCOMPLETE'} after "
                f"{drain_s:.1f} s; cancelling the job ...")
            cancel_direct(result, lambda: publisher.publish_wake_up(topic))
            cancelled = True
        finally:
            watch_done.set()
            if not cancelled:
                with contextlib.suppress(Exception):
                    cancel_direct(result, lambda: publisher.publish_wake_up(topic), timeout_s=30.0)
        drained = bool(drain_steps) and all(drain_steps.values())
        summary = summary_from_tallies(tallies, extra={
            "run_id": run_id, "input": subscription, "tables": table_prefix, "model": live.model_dir(),
            "assignments": int(tallies.get(audit.AUDIT_ASSIGNMENTS, 0)), "published": stats.published,
            "messages": stats.messages, "publish_failed": stats.failed, "drained": drained,
            "drain_steps": drain_steps, "drain_s": round(drain_s, 1),
            "changes": int(tallies.get(audit.AUDIT_CHANGES, 0))})
        final = summary.to_json()
        final["in_warehouse"] = in_wh = warehouse_counts(client, table_prefix, run_id, started_us)
        final["latest_rows"] = reconcile_latest_rows(client, table_prefix, run_id, started_us, ledger)
        final["ledger"] = {"records": ledger.records, "invalid": ledger.invalid, "filtered": ledger.filtered}
        try:
            final["changes_received"] = change_messages.pull()
        except Exception as error:  # the count is a check, not the run: say so
            LOG.error("could not count the change messages: %s", error)
            final["changes_received"] = None
        tallied_dead = {code: n for code, n in {**summary.dead_lettered, **summary.rows_dead_lettered}.items() if n}
        final["dead_letters_written"] = in_wh["dead_letters"] == tallied_dead
        final["changes_written"] = in_wh["changes"] == final["changes"]
        final["reconciled"] = (summary.reconciled and summary.read == stats.published and drained
                               and stats.failed == 0 and final["dead_letters_written"]
                               and final["latest_rows"]["reflected"] and final["changes_written"]
                               and final["changes_received"] == final["changes"])
        whole_run = dict(final, dead_lettered={**summary.dead_lettered, **summary.rows_dead_lettered})
        try:
            write_audit(client, target.project, target.dataset, audit_row(
                whole_run, run_id=run_id, mode="streaming", input=subscription, started_at_us=started_us,
                finished_at_us=time.time_ns() // 1000, model_version=card.get("model_version")))
        except Exception as error:  # the run itself happened: say so, keep the summary
            LOG.error("could not write the run_audit row: %s", error)
            final["audit_error"] = str(error)
        say("stopping the emulator" + (" and the warehouse" if started_warehouse else "") + " ...")
    _print_summary(final, summary, say)
    return final


def _print_summary(final: dict, summary, say) -> None:
    in_wh, latest = final["in_warehouse"], final["latest_rows"]
    say(f"published {final['published']:,} events in {final['messages']:,} messages, read {summary.read:,}"
        + ("" if summary.read == final["published"] else f" ({summary.read - final['published']:+,} vs published)"))
    say(summary.console_line())
    dead = {code: n for code, n in summary.dead_lettered.items() if n}
    filtered = {reason: n for reason, n in summary.filtered.items() if n}
    say(f"  dead-lettered by code: {dead or 'none'}; filtered: {filtered or 'none'}")
    rows_dead = {code: n for code, n in summary.rows_dead_lettered.items() if n}
    if rows_dead:
        say(f"  rows refused after segmentation: {rows_dead}")
    say(f"warehouse {final['tables']}: {in_wh['assignment_rows']:,} assignment rows for {in_wh['users']:,} users;"
        f" {in_wh['changes']:,} segment changes; this run's dead letters by code: {in_wh['dead_letters'] or 'none'}")
    say(f"latest rows: {latest['in_rows']:,} of {latest['events']:,} valid unique events of {latest['users']:,} users"
        f" reflected ({latest['too_late']:,} too late left out)"
        + ("" if latest["reflected"] else
           f"; {latest['missing_users']:,} users without a row, {latest['short_users']:,} short, "
           f"{latest['over_users']:,} over: {'; '.join(latest['examples'])}"))
    say(f"changes: {final['changes']:,} detected, {in_wh['changes']:,} in segment_changes, "
        f"{final['changes_received'] if final['changes_received'] is not None else '?'} received on the topic")
    problems = []
    if summary.read != final["published"]:
        problems.append(f"read {summary.read:,} != published {final['published']:,}")
    if final["publish_failed"]:
        problems.append(f"{final['publish_failed']:,} records failed to publish")
    if not summary.reconciled:
        problems.append("some records read have no fate yet (still in a profile bag, or unjudged)")
    if not final["drained"]:
        unfinished = [step for step, done in final["drain_steps"].items() if not done] or ["interrupted"]
        problems.append(f"the drain did not complete ({', '.join(unfinished)})")
    if not final["dead_letters_written"]:
        problems.append("the warehouse's dead letters differ from the tallied ones")
    if not latest["reflected"]:
        problems.append(f"{latest['events'] - latest['in_rows']:,} valid events are not in their user's latest row")
    if not final["changes_written"] or final["changes_received"] != final["changes"]:
        problems.append("the changes in the table or on the topic differ from those detected")
    if final["reconciled"]:
        say("RECONCILED: every published record was read and met exactly one fate; every valid event is in its "
            "user's latest row; every dead letter and every change is in the warehouse, every change on the topic")
    else:
        say("NOT RECONCILED: " + "; ".join(problems))


def cancel_direct(result: PipelineResult, wake: Callable[[], object],
                  wake_every_s: float = 1.0, timeout_s: float = 120.0) -> None:
    """Cancels a streaming run on the (bundle-based) DirectRunner without a 30 s wait.

    The DirectRunner's Pub/Sub reader blocks in a pull of up to 30 s, and `cancel`
    waits for it. While the cancel runs, `wake` is called every `wake_every_s` seconds
    to end that pull: give it something that publishes one message the pipeline
    ignores, such as ``lambda: publisher.publish_wake_up(topic)`` (a consent-less event,
    counted as filtered). Note the reader acknowledges what it pulls before the
    pipeline processes it: messages pulled while cancelling are not processed. Once
    cancelled, it waits for the local warehouse loads still in flight.

    Raises:
      TimeoutError: the cancel did not finish within `timeout_s`.
    """
    failure: list[BaseException] = []

    def cancel():
        try:
            result.cancel()
        except BaseException as error:  # re-raised in the caller's thread below
            failure.append(error)

    canceller = threading.Thread(target=cancel, name="CancelDirectRun", daemon=True)
    canceller.start()
    waited = 0.0
    while canceller.is_alive():
        wake()
        canceller.join(wake_every_s)
        waited += wake_every_s
        if waited >= timeout_s and canceller.is_alive():
            raise TimeoutError(f"the DirectRunner did not stop within {timeout_s}s")
    if failure:
        raise failure[0]
    from transforms.bigquery.local_sink import wait_for_loads

    # The local sink loads on background threads: let what it started land before anyone reads.
    if not wait_for_loads(timeout_s):
        LOG.warning("some warehouse loads were still running %s s after the job was cancelled", timeout_s)


# ---------------------------------------------------------------------------
# The command


def cmd_stream(args: argparse.Namespace, rest: Sequence[str]) -> int:
    """`segments stream`: local live mode with --local, else launches the production job."""
    from pipelines import streaming

    if args.local:
        final = run_local(args, rest, say=lambda line: print(f"{PROG}: {line}", flush=True))
        return 0 if final["reconciled"] else 1
    if not args.subscription:
        raise ValueError("--subscription projects/PROJECT/subscriptions/NAME is required (or --local)")
    from devtools import warehouse

    result = streaming.run(warehouse.with_endpoint(rest, args.warehouse, args.bq_project))
    print(f"{PROG}: job started ({type(result).__name__}, state {result.state}); "
          "it runs until drained or cancelled", flush=True)
    runner = PipelineOptions(list(rest)).view_as(StandardOptions).runner or "DirectRunner"
    if "Direct" in runner:
        result.wait_until_finish()
    return 0
