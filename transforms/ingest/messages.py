"""Reading raw events from Pub/Sub: the streaming twin of `transforms.ingest.files`.

Every message body is judged by the same `RecordJudge` as a line of a batch file, with
``pubsub:<message id>`` as its source (kept on the event and on any dead letter).

Event time is the payload's ``timestamp``, or, with a timestamp attribute, the message
attribute of that name (epoch milliseconds or RFC 3339, as Pub/Sub I/O reads it; the
event's own ``timestamp_us`` field keeps the payload's time).

`read_event_messages` applies its steps to the pipeline itself rather than as one
composite, so that the running job's step labels (``ReadPubSub``, ``ParseRecords``) stay
what they were: Dataflow matches steps by label on an in-place update.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from typing import Iterable, NamedTuple, Optional

import apache_beam as beam
from apache_beam.io.gcp.pubsub import PubsubMessage
from apache_beam.transforms.window import TimestampedValue

from transforms.contracts.events import Event
from transforms.ingest.parse import Parsed, ParsedTag, RecordJudge
from transforms.ingest.validation import ValidationConfig

SOURCE_PREFIX = "pubsub:"


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


class ParseMessageFn(beam.DoFn):
    """Judges (payload bytes, source) pairs, for a job that runs for days.

    * "Now" moves: the validation window (`max_future_skew`, `max_age`) is taken from
      the wall clock, refreshed every `refresh_now_every`, not frozen at launch.
    * With `keep_read_time`, valid events keep the element timestamp given by the read
      (the timestamp attribute) instead of the payload's time.
    """

    def __init__(self, config: ValidationConfig, keep_read_time: bool = False,
                 refresh_now_every: dt.timedelta = dt.timedelta(minutes=1)):
        self._config = config
        self._keep_read_time = keep_read_time
        self._refresh_s = refresh_now_every.total_seconds()

    def setup(self):
        self._judge = None
        self._built_at = float("-inf")

    def start_bundle(self):
        if time.monotonic() - self._built_at >= self._refresh_s:
            self._judge = RecordJudge(dataclasses.replace(self._config, now_us=None))
            self._built_at = time.monotonic()

    def process(self, element: tuple[bytes, str], timestamp=beam.DoFn.TimestampParam) -> Iterable:
        raw, source = element
        output = self._judge.judge_bytes(raw, source)
        if output is None:  # an invalid record of a suppressed user: counted, not kept
            return
        if isinstance(output, Event):
            yield TimestampedValue(output, timestamp if self._keep_read_time else output.timestamp_us / 1e6)
        else:
            yield output


class Messages(NamedTuple):
    """What `read_event_messages` read: the raw records, and them judged."""

    records: beam.PCollection  # (payload bytes, source), one per message
    parsed: Parsed


def read_event_messages(p: beam.Pipeline, subscription: str, config: ValidationConfig,
                        timestamp_attribute: Optional[str] = None) -> Messages:
    """Pub/Sub -> validated events (event time) and dead letters.

    Args:
      p: the (streaming) pipeline.
      subscription: ``projects/P/subscriptions/S``.
      config: validation limits (its ``now_us`` is replaced by the moving wall clock).
      timestamp_attribute: take event time from this message attribute instead of the payload.
    """
    records = (
        p
        | "ReadPubSub" >> beam.io.ReadFromPubSub(
            subscription=subscription, with_attributes=True, timestamp_attribute=timestamp_attribute)
        | "ToRecordAndSource" >> beam.Map(lambda message: (message.data, message_source(message)))
    )
    parsed = records | "ParseRecords" >> beam.ParDo(
        ParseMessageFn(config, keep_read_time=bool(timestamp_attribute))
    ).with_outputs(ParsedTag.DEAD_LETTERS.value, main=ParsedTag.EVENTS.value)
    return Messages(records, Parsed.of(parsed))
