"""The streaming job: JSON events from a Pub/Sub subscription, judged like batch input.

Every message body goes through the same parse/validate DoFn as a line of a batch file
(`transforms.sources.ParseMessageFn`), with ``pubsub:<message id>`` as its source (kept
on the event and on any dead letter), then through the same privacy step and the
unbounded form of the dedupe on ``event_id`` (Beam's `DeduplicatePerKey`).

Event time is the payload's ``timestamp``, or, with ``--timestamp_attribute``, the
message attribute of that name (epoch milliseconds or RFC 3339, as Pub/Sub I/O reads
it; the event's own ``timestamp_us`` field keeps the payload's time).

Run locally against the Pub/Sub emulator (see `pipelines.pubsub_emulator`)::

    PUBSUB_EMULATOR_HOST=127.0.0.1:8085 python -m pipelines.streaming \\
        --subscription projects/segments-local/subscriptions/events-sub --demo_key

On Dataflow::

    python -m pipelines.streaming --runner DataflowRunner --project PROJECT \\
        --region REGION --temp_location gs://BUCKET/tmp \\
        --subscription projects/PROJECT/subscriptions/events-sub \\
        --id_key_file gs://BUCKET/secrets/id_key

Extension points: `build_pipeline` returns `StreamingOutputs`; the feature, model and
BigQuery composites (`ComputeUserFeatures`, `AssignSegments`, `WriteSegmentTables`)
attach to ``outputs.events`` and ``outputs.dead_letters`` exactly as in
`pipelines.batch`, with their streaming windowing and triggers as constructor
arguments.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import logging
import re
import threading
import time
from typing import Callable, Iterable, Optional, Sequence

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.runners.runner import PipelineResult
from apache_beam.transforms.window import TimestampedValue

from pipelines.options import SegmentsOptions
from transforms.dedupe import DedupeEvents
from transforms.privacy import ApplyPrivacy, resolve_id_key
from transforms.sources import ParsedTags, ParseMessageFn
from transforms.validation import ValidationConfig

LOG = logging.getLogger(__name__)

SOURCE_PREFIX = "pubsub:"
_SUBSCRIPTION = re.compile(r"^projects/[^/]+/subscriptions/[^/]+$")


def subscription_path(text: str) -> str:
    """argparse type: a full subscription path, ``projects/P/subscriptions/S``."""
    if not _SUBSCRIPTION.match(text):
        raise argparse.ArgumentTypeError(f"expected projects/PROJECT/subscriptions/NAME, got {text!r}")
    return text


class StreamingOptions(SegmentsOptions):
    """Flags of the streaming job beyond the shared ones."""

    @classmethod
    def _add_argparse_args(cls, parser):
        group = parser.add_argument_group("streaming job")
        group.add_argument(
            "--subscription", type=subscription_path, required=True,
            help="Pub/Sub subscription to read events from: projects/PROJECT/subscriptions/NAME. Required.")
        group.add_argument(
            "--timestamp_attribute", default=None,
            help="Take event time from this message attribute (epoch milliseconds or RFC 3339) instead of "
                 "the payload's timestamp. Default: none (payload timestamp).")


def message_source(message: PubsubMessage) -> str:
    """The source recorded on events and dead letters: ``pubsub:<message id>``.

    A runner that does not pass the id on gives ``pubsub:unknown@<publish time>``
    (or ``pubsub:unknown``) instead.
    """
    if message.message_id:
        return SOURCE_PREFIX + message.message_id
    if message.publish_time is not None:
        return f"{SOURCE_PREFIX}unknown@{message.publish_time.isoformat()}"
    return SOURCE_PREFIX + "unknown"


class _ParseMessageFn(beam.DoFn):
    """`ParseMessageFn` on (payload, source) pairs, for a job that runs for days.

    * "Now" moves: the validation window (`max_future_skew`, `max_age`) is taken from
      the wall clock, refreshed every `refresh_now_every`, not frozen at launch.
    * With `keep_read_time`, valid events keep the element timestamp given by the read
      (the timestamp attribute) instead of the payload's time that `ParseMessageFn` sets.
    """

    def __init__(self, config: ValidationConfig, keep_read_time: bool,
                 refresh_now_every: dt.timedelta = dt.timedelta(minutes=1)):
        self._config = config
        self._keep_read_time = keep_read_time
        self._refresh_s = refresh_now_every.total_seconds()

    def setup(self):
        self._parse = None
        self._built_at = float("-inf")

    def start_bundle(self):
        if time.monotonic() - self._built_at >= self._refresh_s:
            self._parse = ParseMessageFn(dataclasses.replace(self._config, now_us=None))
            self._parse.setup()
            self._built_at = time.monotonic()

    def process(self, element: tuple[bytes, str], timestamp=beam.DoFn.TimestampParam) -> Iterable:
        for output in self._parse.process(element):
            if self._keep_read_time and isinstance(output, TimestampedValue):
                output = TimestampedValue(output.value, timestamp)
            yield output


@dataclasses.dataclass
class StreamingOutputs:
    """What `build_pipeline` exposes for further steps.

    Attributes:
      events: valid, consented, pseudonymised, de-duplicated `Event`s, timestamped with
        event time (global window).
      dead_letters: `DeadLetter`s of the records that failed parsing or validation.
    """

    events: beam.PCollection
    dead_letters: beam.PCollection


def build_pipeline(p: beam.Pipeline, options: StreamingOptions, id_key: bytes) -> StreamingOutputs:
    """Builds the streaming graph (exposed for testing); `id_key` is the pseudonymisation key."""
    parsed = (
        p
        | "ReadPubSub" >> beam.io.ReadFromPubSub(
            subscription=options.subscription, with_attributes=True,
            timestamp_attribute=options.timestamp_attribute)
        | "ToRecordAndSource" >> beam.Map(lambda message: (message.data, message_source(message)))
        | "ParseRecords" >> beam.ParDo(
            _ParseMessageFn(options.validation_config(), bool(options.timestamp_attribute))
        ).with_outputs(ParsedTags.DEAD_LETTERS, main=ParsedTags.EVENTS)
    )
    events = (
        parsed[ParsedTags.EVENTS]
        | "Privacy" >> ApplyPrivacy(id_key, options.suppression_list, options.consent_default)
        | "Dedupe" >> DedupeEvents()
    )
    return StreamingOutputs(events=events, dead_letters=parsed[ParsedTags.DEAD_LETTERS])


def local_runner(options: PipelineOptions) -> None:
    """Pins DirectRunner streaming jobs to the BundleBasedDirectRunner.

    Beam's DirectRunner would first try Prism, which cannot run the Python Pub/Sub
    read; the bundle-based runner overrides `ReadFromPubSub` with a local pull reader
    (and honours ``PUBSUB_EMULATOR_HOST``). Other runners are left alone.
    """
    standard = options.view_as(StandardOptions)
    if standard.runner in (None, "DirectRunner", "SwitchingDirectRunner"):
        standard.runner = "BundleBasedDirectRunner"


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


def run(argv: Optional[Sequence[str]] = None) -> None:
    """Parses flags and runs the streaming job until it is cancelled or drained."""
    options = PipelineOptions(argv)
    options.view_as(StandardOptions).streaming = True
    local_runner(options)
    streaming = options.view_as(StreamingOptions)
    runner = options.view_as(StandardOptions).runner
    id_key = resolve_id_key(streaming.id_key_file, streaming.demo_key and "Dataflow" not in runner)
    with beam.Pipeline(options=options) as p:
        build_pipeline(p, streaming, id_key)


if __name__ == "__main__":
    logging.getLogger().setLevel(logging.INFO)
    run()
