"""`segments stream`: the streaming job, and a local live mode that runs it all on this machine.

Local live mode (no cloud)::

    segments stream --local --rate 200 --seconds 60 [--users 200] [--seed 7] [--model DIR]

starts Google's Pub/Sub emulator and the local warehouse (`devtools.warehouse`, tables
made by `transforms.bigquery.admin.setup`), publishes generated events (`devtools.generate`)
in real time at ``--rate`` events/s, re-stamped to the moment they are sent, with about
1 % corrupt records (truncated JSON) and about 0.5 % events from ten days ago (beyond the
allowed lateness once the watermark has passed them: ``too_late``), and runs the
streaming job (`pipelines.streaming`) on the DirectRunner. Every ``--progress_seconds``
it prints what was published and what the warehouse holds (assignment rows, distinct
users with a segment, dead letters), read with google-cloud-bigquery.

Stopping (after ``--seconds``, or on Ctrl-C; a second Ctrl-C abandons the drain):

1. publishing stops;
2. drain: the DirectRunner's Pub/Sub reader acknowledges what it pulls *before* the
   pipeline processes it, so cancelling early would lose acknowledged messages. The
   driver waits until the job's own tally of messages read (its per-interval audit
   counts, also written to a local file; Beam's counters stop updating on the
   DirectRunner) equals the number published, then for one more early firing and
   audit interval plus a quiet period in which no tally moves, so the last panes are
   assigned and written;
3. the job is cancelled (`cancel_direct`), a final ``run_audit``
   row for the whole run is written from the job's stage tallies, and the emulator and the
   warehouse stop (the warehouse only if this command started it; its data stays in
   ``.work/warehouse`` for ``segments query``);
4. the summary: published vs read, every fate from the tallies (filtered and
   duplicates by difference between stages), and the warehouse's own counts; it
   reconciles when read == published, every read message was parsed or
   dead-lettered, the drain completed, and the warehouse's dead letters of the run
   equal the tallied ones per code.

In local mode ``--early_firing_seconds`` defaults to 10 (not 60) so that segment
changes show while it runs; the published demo key pseudonymises user ids unless a
key is configured.

Production (Dataflow)::

    segments stream --subscription projects/P/subscriptions/S --runner DataflowRunner \\
        --project P --region R --temp_location gs://B/tmp --warehouse bigquery \\
        --id_key_file gs://B/secrets/id_key

launches the job and returns (drain or update it with the Dataflow tools).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as dt
import itertools
import logging
import threading
import time
import uuid
from typing import Callable, Iterator, Optional, Sequence

import apache_beam as beam
import orjson
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult

from pipelines.options import declare_flags, positive_float, positive_int
from pipelines.streaming import StreamingOptions
from transforms import audit

LOG = logging.getLogger(__name__)
PROG = "segments stream"

CORRUPT_EVERY = 97  # about 1 % of the records: truncated JSON (invalid_json)
LATE_EVERY = 199  # about 0.5 %: an event from LATE_BY ago (too_late once its shard's watermark passed it)
LATE_BY = dt.timedelta(days=10)
LOCAL_EARLY_FIRING_S = 10
LOCAL_AUDIT_INTERVAL_S = 5
LIVE_TOPIC = "segments-live"


class LiveOptions(StreamingOptions):
    """Flags of `segments stream` beyond the streaming job's."""

    @classmethod
    def _add_argparse_args(cls, parser):
        group = parser.add_argument_group("local live mode")
        group.add_argument(
            "--local", action="store_true", default=False,
            help="Run everything here: Pub/Sub emulator, local warehouse, generated events, DirectRunner.")
        group.add_argument(
            "--rate", type=positive_float, default=20.0,
            help="--local: events published per second. Default: 20 (about what the local DirectRunner reads on "
                 "2 cores; faster rates queue up and drain after publishing stops).")
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
    """This run's assignment rows (written since `since_us`) and users, and its dead letters per code.

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
    return {"assignment_rows": int(assigned["n_rows"]), "users": int(assigned["n_users"]), "dead_letters": dead}


# ---------------------------------------------------------------------------
# The local run


@dataclasses.dataclass
class _Publishing:
    stats: object = None
    error: Optional[BaseException] = None
    published_so_far: int = 0


def _publish_in_background(records, topic: str, rate: float, seconds: Optional[float],
                           stop: threading.Event) -> tuple[threading.Thread, _Publishing]:
    from devtools import publisher

    state = _Publishing()

    def progress(stats):
        state.published_so_far = stats.published

    def work():
        try:
            state.stats = publisher.publish_events(records, topic, rate, seconds=seconds, stop=stop,
                                                   on_progress=progress)
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

    filtered = parsed - consented (consent and suppression together: the privacy step
    counts its reasons only as Beam counters), duplicates = consented - unique,
    valid = unique - too_late; dead letters per code as tallied.
    """
    from pipelines.summary import RunSummary
    from transforms.contracts.outcomes import EVENT_LEVEL_CODES, ROW_LEVEL_CODES

    get = lambda name: int(tallies.get(name, 0))  # noqa: E731
    return RunSummary(
        read=get(audit.AUDIT_READ),
        valid=get(audit.AUDIT_UNIQUE) - get("too_late"),
        duplicates=get(audit.AUDIT_CONSENTED) - get(audit.AUDIT_UNIQUE),
        filtered={"no_consent_or_suppressed": get(audit.AUDIT_PARSED) - get(audit.AUDIT_CONSENTED)},
        dead_lettered={code.value: get(code.value) for code in EVENT_LEVEL_CODES},
        rows_dead_lettered={code.value: get(code.value) for code in ROW_LEVEL_CODES},
        extra=dict(extra or {}),
    )


def _drain(tallies_path: str, published: int, settle_s: float, quiet_s: float, stall_s: float, say,
           interrupted: threading.Event, report_every_s: float = 10.0) -> tuple[dict, bool]:
    """Waits until every published message was read, then until the tallies stop moving.

    The DirectRunner's Pub/Sub reader acknowledges messages when it pulls them, so the
    job must not be cancelled before they are processed. Beam's counters cannot tell
    (the DirectRunner stops updating them in streaming after the first bundles), so the
    job's own interval tallies are watched: first ``read == published`` (however long
    the backlog takes, as long as the tallies keep moving: it gives up after `stall_s`
    without any change), then at least `settle_s` (one early firing and one audit
    interval) and `quiet_s` without change, so the last panes are assigned and written.

    Returns:
      (the tallies then, whether the drain completed).
    """
    tallies = read_tallies(tallies_path)
    last, last_change, next_report = tallies, time.monotonic(), time.monotonic() + report_every_s
    while tallies.get(audit.AUDIT_READ, 0) < published:
        now = time.monotonic()
        if interrupted.is_set() or now - last_change > stall_s:
            return tallies, False
        if now >= next_report:
            next_report += report_every_s
            say(f"draining: read {tallies.get(audit.AUDIT_READ, 0):,} of {published:,} ...")
        interrupted.wait(0.5)
        tallies = read_tallies(tallies_path)
        if tallies != last:
            last, last_change = tallies, time.monotonic()
    say(f"all {published:,} published messages read; waiting for the last panes and writes ...")
    settle_until = time.monotonic() + settle_s
    last, last_change = tallies, time.monotonic()
    while not interrupted.is_set():
        interrupted.wait(0.5)
        tallies = read_tallies(tallies_path)
        now = time.monotonic()
        if tallies != last:
            last, last_change = tallies, now
        elif now >= settle_until and now - last_change >= quiet_s:
            return tallies, True
        elif now - last_change > stall_s + settle_s:
            return tallies, False
    return tallies, False


def run_local(args: argparse.Namespace, argv: Sequence[str], say: Callable[[str], None] = print) -> dict:
    """Runs the local live mode (see the module docstring); returns the final summary dict."""
    import tempfile

    from models.artifact import load_card
    from models.drift import DriftMonitor
    from devtools import publisher, pubsub_emulator, warehouse
    from models.handler import assignment_handler
    from pipelines import streaming
    from transforms.bigquery import admin
    from transforms.bigquery.rows import audit_row
    from transforms.ingest.privacy import resolve_id_key
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
    pubsub_emulator.find_emulator()  # fail fast, with the install hint, before starting anything
    card = load_card(live.model_dir())
    id_key = resolve_id_key(live.id_key_file, True)
    run_id = live.resolved_run_id("stream")
    interrupted = threading.Event()

    with contextlib.ExitStack() as stack:
        say("starting the Pub/Sub emulator and the local warehouse ...")
        emulator = stack.enter_context(pubsub_emulator.running())
        name = f"{LIVE_TOPIC}-{uuid.uuid4().hex[:6]}"
        topic, subscription = emulator.create_topic_and_subscription(name, name + "-sub")
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

        options = PipelineOptions(argv + ["--subscription", subscription])
        options.view_as(StandardOptions).streaming = True
        streaming.local_runner(options)
        job = options.view_as(LiveOptions)
        p = beam.Pipeline(options=options)
        outputs = streaming.build_pipeline(p, job, id_key, assignment_handler(job.model_dir()), target, run_id,
                                           card.get("model_version"), DriftMonitor.from_card(card))
        tallies_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="segments-live-"))
        tallies_path = f"{tallies_dir}/tallies.jsonl"
        outputs.interval_counts | "SinkTallies" >> beam.ParDo(_AppendJsonLines(tallies_path))
        started_us = time.time_ns() // 1000
        result = p.run()
        say(f"job {run_id}: {subscription} -> {table_prefix} (model {card.get('model_version')}, early firing "
            f"every {job.early_firing_seconds} s)")
        say(f"publishing ~{live.rate:g} events/s for {live.users:,} users"
            + (f" for {live.seconds:g} s" if live.seconds else " until Ctrl-C") + " ...")

        stop_publishing = threading.Event()
        thread, publishing = _publish_in_background(
            live_records(live.users, live.seed), topic, live.rate, live.seconds, stop_publishing)
        cancelled = False
        try:
            t0 = time.monotonic()
            try:
                while thread.is_alive():
                    thread.join(live.progress_seconds)
                    counts = warehouse_counts(client, table_prefix, run_id, started_us)
                    read = read_tallies(tallies_path).get(audit.AUDIT_READ, 0)
                    say(f"[{time.monotonic() - t0:5.0f} s] published {publishing.published_so_far:,}, read {read:,}"
                        f" (audited every {job.audit_interval_seconds} s)"
                        f" | assignments {counts['assignment_rows']:,} rows, {counts['users']:,} users with a segment"
                        f" | dead letters {sum(counts['dead_letters'].values()):,}")
            except KeyboardInterrupt:
                say("Ctrl-C: stopping the publisher and draining (Ctrl-C again to abandon the drain) ...")
            stop_publishing.set()
            thread.join()
            if publishing.error is not None:
                raise RuntimeError(f"publishing failed: {publishing.error}") from publishing.error
            stats = publishing.stats
            say(f"published {stats.published:,} messages ({stats.failed:,} failed) in {stats.elapsed_s:.1f} s;"
                " draining ...")
            settle_s = job.early_firing_seconds + job.audit_interval_seconds + 2.0
            stall_s = 60.0 + 2 * job.audit_interval_seconds
            try:
                tallies, drained = _drain(tallies_path, stats.published, settle_s, job.audit_interval_seconds + 3.0,
                                          stall_s, say, interrupted)
            except KeyboardInterrupt:
                interrupted.set()
                tallies, drained = read_tallies(tallies_path), False
            say("cancelling the job ...")
            cancel_direct(result, lambda: publisher.publish_wake_up(topic))
            cancelled = True
        finally:
            if not cancelled:
                with contextlib.suppress(Exception):
                    cancel_direct(result, lambda: publisher.publish_wake_up(topic), timeout_s=30.0)

        summary = summary_from_tallies(tallies, extra={
            "run_id": run_id, "input": subscription, "tables": table_prefix, "model": live.model_dir(),
            "assignments": int(tallies.get(audit.AUDIT_ASSIGNMENTS, 0)), "published": stats.published,
            "publish_failed": stats.failed, "drained": drained})
        final = summary.to_json()
        final["in_warehouse"] = in_wh = warehouse_counts(client, table_prefix, run_id, started_us)
        tallied_dead = {code: n for code, n in {**summary.dead_lettered, **summary.rows_dead_lettered}.items() if n}
        final["dead_letters_written"] = in_wh["dead_letters"] == tallied_dead
        final["reconciled"] = (summary.reconciled and summary.read == stats.published and drained
                               and final["dead_letters_written"])
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
    in_wh = final["in_warehouse"]
    say(f"published {final['published']:,}, read {summary.read:,}"
        + ("" if summary.read == final["published"] else f" ({summary.read - final['published']:+,} vs published)"))
    say(summary.console_line())
    dead = {code: n for code, n in summary.dead_lettered.items() if n}
    filtered = {reason: n for reason, n in summary.filtered.items() if n}
    say(f"  dead-lettered by code: {dead or 'none'}; filtered: {filtered or 'none'}")
    rows_dead = {code: n for code, n in summary.rows_dead_lettered.items() if n}
    if rows_dead:
        say(f"  rows refused after segmentation: {rows_dead}")
    say(f"warehouse {final['tables']}: {in_wh['assignment_rows']:,} assignment rows for {in_wh['users']:,} users;"
        f" this run's dead letters by code: {in_wh['dead_letters'] or 'none'}")
    problems = []
    if summary.read != final["published"]:
        problems.append(f"read {summary.read:,} != published {final['published']:,}")
    if not summary.reconciled:
        problems.append("some read messages were neither parsed nor dead-lettered")
    if not final["drained"]:
        problems.append("the drain did not complete (messages may have been acknowledged but not processed)")
    if not final["dead_letters_written"]:
        problems.append("the warehouse's dead letters differ from the tallied ones")
    if final["reconciled"]:
        say("RECONCILED: every published message was read and met exactly one fate; every dead letter is in "
            "the warehouse")
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
    pipeline processes it: messages pulled while cancelling are not processed.

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
