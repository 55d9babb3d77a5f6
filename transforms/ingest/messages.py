"""Reading raw events from Pub/Sub: the streaming twin of `transforms.ingest.files`.

A message carries one event, or a batch of them:

* a single event: the body is one JSON object, judged by the same `RecordJudge` as a line
  of a batch file, with ``pubsub:<message id>`` as its source (kept on the event and on any
  dead letter);
* a batch: with the attribute ``content-type: application/x-ndjson`` (`BATCH_ATTRIBUTE`,
  `NDJSON`), the body is newline-delimited JSON, one event per line, as collectors batch
  their POSTs. Each line is a record of its own, with its own fate and the source
  ``pubsub:<message id>#<line>`` (1-based line number). As in event files, a line's
  ``\r\n`` or ``\n`` ending is not part of the record and a blank line is not a record
  (it is skipped, not counted; the numbering still counts it).

Batching is what lets the local DirectRunner keep up: it pulls at most 10 messages per
cycle, so a batch of 100 events per message reads 1,000 events per cycle instead of 10.

Event time is the payload's ``timestamp``, or, with a timestamp attribute, the message
attribute of that name (epoch milliseconds or RFC 3339, as Pub/Sub I/O reads it; the
event's own ``timestamp_us`` field keeps the payload's time).

`read_event_messages` applies its steps to the pipeline itself rather than as one
composite, so that the running job's step labels (``ReadPubSub``, ``ParseRecords``) stay
what they were: Dataflow matches steps by label on an in-place update. (A
``ToRecordAndSource`` step between them was folded into ``ParseRecords`` with batched
messages: one step less per bundle on the local runner.)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import Iterable, Iterator, NamedTuple, Optional

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.transforms.window import GlobalWindows, TimestampedValue

from transforms.contracts.events import Event
from transforms.ingest.parse import Parsed, ParsedTag, RecordJudge
from transforms.ingest.validation import ValidationConfig

SOURCE_PREFIX = "pubsub:"
# The message attribute that marks a batch, and its value.
BATCH_ATTRIBUTE = "content-type"
NDJSON = "application/x-ndjson"


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


def is_batch(message: PubsubMessage) -> bool:
    """Whether the message carries newline-delimited events (``content-type: application/x-ndjson``)."""
    attributes = message.attributes or {}
    return attributes.get(BATCH_ATTRIBUTE, "").split(";")[0].strip().lower() == NDJSON


def split_message(message: PubsubMessage) -> Iterator[tuple[bytes, str]]:
    """The records of a message as ``(payload bytes, source)``: the body itself, or each
    non-blank line of a batch with source ``pubsub:<message id>#<line>`` (see the module docstring)."""
    source = message_source(message)
    data = message.data or b""
    if not is_batch(message):
        yield data, source
        return
    for line_no, line in enumerate(data.split(b"\n"), start=1):
        if line.strip():
            yield line.removesuffix(b"\r"), f"{source}#{line_no}"


class ParseMessageFn(beam.DoFn):
    """Judges messages (or (payload bytes, source) pairs), for a job that runs for days.

    * A `PubsubMessage` is split into its records first (`split_message`): one step for
      the split and the judging, since every step costs the local runner per bundle.
      With `count_read_as`, the number of records of each bundle also goes out, as
      ``(count_read_as, n)`` on that tag (the audit's tally of records read).

    * "Now" moves: the validation window (`max_future_skew`, `max_age`) is taken from
      the wall clock, refreshed every `refresh_now_every`, not frozen at launch.
    * With `keep_read_time`, valid events keep the element timestamp given by the read
      (the timestamp attribute) instead of the payload's time.
    """

    def __init__(self, config: ValidationConfig, keep_read_time: bool = False,
                 refresh_now_every: dt.timedelta = dt.timedelta(minutes=1), count_read_as: Optional[str] = None):
        self._config = config
        self._keep_read_time = keep_read_time
        self._refresh_s = refresh_now_every.total_seconds()
        self._count_read_as = count_read_as

    def setup(self):
        self._judge = None
        self._built_at = float("-inf")

    def start_bundle(self):
        if time.monotonic() - self._built_at >= self._refresh_s:
            self._judge = RecordJudge(dataclasses.replace(self._config, now_us=None))
            self._built_at = time.monotonic()
        self._read = 0

    def process(self, element, timestamp=beam.DoFn.TimestampParam) -> Iterable:
        records = split_message(element) if isinstance(element, PubsubMessage) else (element,)
        for raw, source in records:
            self._read += 1
            output = self._judge.judge_bytes(raw, source)
            if output is None:  # an invalid record of a suppressed user: counted, not kept
                continue
            if isinstance(output, Event):
                yield TimestampedValue(output, timestamp if self._keep_read_time else output.timestamp_us / 1e6)
            else:
                yield output

    def finish_bundle(self):
        if self._count_read_as and self._read:
            yield beam.pvalue.TaggedOutput(ParsedTag.READ_TALLIES.value,
                                           GlobalWindows.windowed_value((self._count_read_as, self._read)))


class Messages(NamedTuple):
    """What `read_event_messages` read, judged, and how many records that was."""

    read_tallies: beam.PCollection  # (name, records read) per bundle; a record is a message or a line of a batch
    parsed: Parsed


def read_event_messages(p: beam.Pipeline, subscription: str, config: ValidationConfig,
                        timestamp_attribute: Optional[str] = None, count_read_as: str = "read") -> Messages:
    """Pub/Sub -> validated events (event time) and dead letters.

    Args:
      p: the (streaming) pipeline.
      subscription: ``projects/P/subscriptions/S``.
      config: validation limits (its ``now_us`` is replaced by the moving wall clock).
      timestamp_attribute: take event time from this message attribute instead of the payload.
      count_read_as: the tally name of the records read (`Messages.read_tallies`).
    """
    messages = p | "ReadPubSub" >> beam.io.ReadFromPubSub(
        subscription=subscription, with_attributes=True, timestamp_attribute=timestamp_attribute)
    parsed = messages | "ParseRecords" >> beam.ParDo(
        ParseMessageFn(config, keep_read_time=bool(timestamp_attribute), count_read_as=count_read_as)
    ).with_outputs(ParsedTag.DEAD_LETTERS.value, ParsedTag.READ_TALLIES.value, main=ParsedTag.EVENTS.value)
    return Messages(parsed[ParsedTag.READ_TALLIES.value], Parsed.of(parsed))
