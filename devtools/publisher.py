"""Publishing events to Pub/Sub in real time, as a live producer would.

`publish_events` sends records at a steady `rate` (events per second, wall clock) until
the records run out, a deadline passes, `max_events` were sent, or a stop event is set.
Event dicts are re-stamped to the moment they are sent, so that the stream is live
(event time close to processing time) whatever period they were generated for; raw
`bytes` (corrupt records, for instance) are sent as they are.

With the Pub/Sub emulator (`devtools.pubsub_emulator`) and the generator::

    from devtools import generate, publisher

    events = generate.iter_events(users=200, days=30, end=generate.today_utc(), seed=7)
    stats = publisher.publish_events(events, "projects/segments-local/topics/events",
                                     rate=200, seconds=60, event_time_attribute="event_time")

With ``batch_size`` > 1, records are sent as batched messages (newline-delimited JSON
with the attribute ``content-type: application/x-ndjson``, `transforms.ingest.messages`):
a message goes out when it holds ``batch_size`` records or when its first record has
waited ``max_batch_delay_s``, as a collector batching its POSTs would. ``batch_size=1``
(the default here) publishes one message per record, without the attribute. The rate is
always records per second; each record is re-stamped when it is taken, not when its
message leaves.

The client honours ``PUBSUB_EMULATOR_HOST`` (`pubsub_emulator.running` sets it); pass
`publisher=` to use a client of your own.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import logging
import threading
import time
import uuid
from typing import Any, Callable, Iterable, Optional, Union

import orjson

from transforms.ingest.messages import BATCH_ATTRIBUTE, NDJSON

_LOG = logging.getLogger(__name__)

Record = Union[dict, bytes]


class StopReason(str, enum.Enum):
    """Why publishing ended."""

    EXHAUSTED = "exhausted"  # the records ran out
    DEADLINE = "deadline"  # `seconds` passed
    MAX_EVENTS = "max_events"  # `max_events` were sent
    STOPPED = "stopped"  # the stop event was set


@dataclasses.dataclass
class PublishStats:
    """What `publish_events` did.

    Attributes:
      published: records the server confirmed (in single-event messages, or lines of
        batched ones).
      failed: records whose message failed to publish (after the client's retries).
      elapsed_s: wall-clock seconds from the first send to the last confirmation.
      stop_reason: why it ended.
      message_ids: per record in send order, the id its source will carry (only when
        `keep_ids` was set; None for a failed record): ``<message id>`` for a
        single-event message, ``<message id>#<line>`` for a line of a batch.
      messages: messages the server confirmed.
    """

    published: int = 0
    failed: int = 0
    elapsed_s: float = 0.0
    stop_reason: Optional[StopReason] = None
    message_ids: Optional[list] = None
    messages: int = 0

    @property
    def sent(self) -> int:
        return self.published + self.failed


def rfc3339_ms(epoch_ms: int) -> str:
    """UTC RFC 3339 with milliseconds, e.g. ``2026-03-01T12:00:00.123Z``."""
    stamp = dt.datetime.fromtimestamp(epoch_ms / 1000, tz=dt.timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def encode(record: Record, now_ms: Optional[int], *, timestamp_field: str = "timestamp") -> bytes:
    """The message body of one record.

    Args:
      record: an event dict (contract v1 JSON object) or raw bytes (sent unchanged).
      now_ms: when given, a dict's `timestamp_field` is replaced by this time
        (epoch milliseconds, written as RFC 3339 UTC). The dict itself is not modified.
    """
    if isinstance(record, (bytes, bytearray)):
        return bytes(record)
    if now_ms is not None:
        record = {**record, timestamp_field: rfc3339_ms(now_ms)}
    return orjson.dumps(record)


class _Tally:
    """Counts publish results (records and messages) from the client's callback threads."""

    def __init__(self, keep_ids: bool):
        self._cond = threading.Condition()
        self.published = 0
        self.failed = 0
        self.messages = 0
        self.outstanding = 0
        self.ids: Optional[list] = [] if keep_ids else None

    def track(self, future, records: int, batched: bool) -> None:
        with self._cond:
            self.outstanding += 1
            index = None
            if self.ids is not None:
                index = len(self.ids)
                self.ids.extend([None] * records)
        future.add_done_callback(lambda done: self._done(done, index, records, batched))

    def _done(self, future, index: Optional[int], records: int, batched: bool) -> None:
        try:
            message_id = future.result()
        except Exception as error:  # counted and logged: the caller sees `failed`
            _LOG.warning("publish of %d record(s) failed: %s", records, error)
            with self._cond:
                self.failed += records
                self.outstanding -= 1
                self._cond.notify_all()
            return
        with self._cond:
            self.published += records
            self.messages += 1
            self.outstanding -= 1
            if index is not None:
                for line in range(records):
                    self.ids[index + line] = f"{message_id}#{line + 1}" if batched else message_id
            self._cond.notify_all()

    def wait_all(self, timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.outstanding == 0, timeout=timeout_s)


def publish_events(
    records: Iterable[Record],
    topic_path: str,
    rate: float,
    *,
    seconds: Optional[float] = None,
    max_events: Optional[int] = None,
    stop: Optional[threading.Event] = None,
    restamp: bool = True,
    event_time_attribute: Optional[str] = None,
    attributes: Optional[dict[str, str]] = None,
    publisher: Any = None,
    keep_ids: bool = False,
    on_progress: Optional[Callable[[PublishStats], None]] = None,
    progress_every_s: float = 1.0,
    flush_timeout_s: float = 60.0,
    batch_size: int = 1,
    max_batch_delay_s: float = 0.1,
    on_sent: Optional[Callable[[bytes], None]] = None,
) -> PublishStats:
    """Publishes `records` to `topic_path` at `rate` records per second.

    Args:
      records: event dicts (re-stamped when `restamp`) or raw bytes (sent as they are; in
        a batch, a record holding a newline would become several lines).
      topic_path: ``projects/P/topics/T``.
      rate: records per second (wall clock), > 0.
      seconds: stop sending after this long; None for no deadline.
      max_events: stop after sending this many; None for no limit.
      stop: stop sending as soon as this event is set (e.g. from a Ctrl-C handler).
      restamp: replace each dict's ``timestamp`` by the wall-clock send time.
      event_time_attribute: also put the send time (epoch milliseconds, as text) in
        this message attribute; the pipeline's ``--timestamp_attribute`` reads it.
        Needs `restamp` (the attribute and the payload then agree) and single-event
        messages (a batch's records have one attribute set between them).
      attributes: extra attributes put on every message.
      publisher: a ``google.cloud.pubsub_v1.PublisherClient``; one is made (and
        stopped) here when None.
      keep_ids: record the server's message ids in `PublishStats.message_ids`.
      on_progress: called with a snapshot about every `progress_every_s` seconds.
      progress_every_s: see `on_progress`.
      flush_timeout_s: how long to wait, at the end, for outstanding publishes.
      batch_size: records per message; above 1, batched messages (module docstring).
      max_batch_delay_s: the longest a record waits for its batch to fill.
      on_sent: called with each record's bytes as it is taken (before its message is
        confirmed), e.g. to keep a ledger of what was published.

    Returns:
      The counts. Every sent record is either `published` or `failed` once the
      outstanding publishes are confirmed (or `flush_timeout_s` passed).
    """
    if not rate > 0:
        raise ValueError(f"rate must be positive, got {rate}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if event_time_attribute and not restamp:
        raise ValueError("event_time_attribute needs restamp=True (the attribute carries the send time)")
    if event_time_attribute and batch_size > 1:
        raise ValueError("event_time_attribute needs single-event messages (batch_size=1)")
    own_client = publisher is None
    if own_client:
        from google.cloud import pubsub_v1

        publisher = pubsub_v1.PublisherClient(
            batch_settings=pubsub_v1.types.BatchSettings(max_messages=100, max_latency=0.01))
    stop = stop or threading.Event()
    tally = _Tally(keep_ids)
    interval = 1.0 / rate
    start = time.monotonic()
    deadline = start + seconds if seconds is not None else None
    next_progress = start + progress_every_s
    reason = StopReason.EXHAUSTED
    sent = 0
    batch: list[bytes] = []
    batch_started = 0.0

    def send_batch() -> None:
        nonlocal batch
        if batch:
            data = b"\n".join(batch) + b"\n"
            tally.track(publisher.publish(topic_path, data, **{**(attributes or {}), BATCH_ATTRIBUTE: NDJSON}),
                        len(batch), batched=True)
            batch = []

    try:
        for record in records:
            if max_events is not None and sent >= max_events:
                reason = StopReason.MAX_EVENTS
                break
            due = start + sent * interval
            now = time.monotonic()
            if deadline is not None and max(now, due) >= deadline:
                reason = StopReason.DEADLINE
                break
            if batch and due > now and due - batch_started >= max_batch_delay_s:
                send_batch()  # its first record has waited long enough: do not hold it for the next
            if due > now and stop.wait(due - now):
                reason = StopReason.STOPPED
                break
            if stop.is_set():
                reason = StopReason.STOPPED
                break
            now_ms = time.time_ns() // 1_000_000
            data = encode(record, now_ms if restamp else None)
            if on_sent is not None:
                on_sent(data)
            if batch_size == 1:
                message_attributes = dict(attributes or {})
                if event_time_attribute:
                    message_attributes[event_time_attribute] = str(now_ms)
                tally.track(publisher.publish(topic_path, data, **message_attributes), 1, batched=False)
            else:
                if not batch:
                    batch_started = time.monotonic()
                batch.append(data)
                if len(batch) >= batch_size or time.monotonic() - batch_started >= max_batch_delay_s:
                    send_batch()
            sent += 1
            if on_progress is not None and time.monotonic() >= next_progress:
                next_progress += progress_every_s
                on_progress(PublishStats(tally.published, tally.failed, time.monotonic() - start, None,
                                         messages=tally.messages))
    finally:
        send_batch()
        if not tally.wait_all(flush_timeout_s):
            _LOG.warning("%d publishes still unconfirmed after %ss", tally.outstanding, flush_timeout_s)
        if own_client:
            publisher.stop()
    stats = PublishStats(
        published=tally.published, failed=tally.failed, elapsed_s=time.monotonic() - start,
        stop_reason=reason, message_ids=tally.ids, messages=tally.messages)
    if on_progress is not None:
        on_progress(stats)
    return stats


def publish_heartbeat(topic_path: str, publisher: Any, timeout_s: float = 30.0) -> str:
    """Publishes an empty batch (the batch attribute, no body): a message with no records.

    The local DirectRunner's Pub/Sub reader blocks for up to 30 s in a pull when the
    subscription is empty, and nothing else runs meanwhile (processing-time timers
    included): `devtools.live` sends one of these every half second so that a quiet
    stream's pending flushes still fire. It carries nothing to count: no record is read.
    """
    return publisher.publish(topic_path, b"", **{BATCH_ATTRIBUTE: NDJSON}).result(timeout=timeout_s)


WAKE_UP_USER = "segments-wake-up"


def wake_up_event(now_ms: Optional[int] = None) -> dict:
    """A contract-valid event that the pipeline filters at the privacy step.

    It carries no personalisation consent, so it is counted as `filtered.no_consent`
    and reaches no table. `devtools.live.cancel_direct` publishes it to end the
    DirectRunner's blocking Pub/Sub pull when cancelling a local run.
    """
    now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
    return {
        "event_id": f"wake-up-{uuid.uuid4().hex}",
        "user_id": WAKE_UP_USER,
        "event_type": "page_view",
        "timestamp": rfc3339_ms(now_ms),
        "consent": {"analytics": False, "personalization": False},
    }


def publish_wake_up(topic_path: str, publisher: Any = None, timeout_s: float = 30.0) -> str:
    """Publishes one `wake_up_event` and returns its message id."""
    own_client = publisher is None
    if own_client:
        from google.cloud import pubsub_v1

        publisher = pubsub_v1.PublisherClient()
    try:
        return publisher.publish(topic_path, encode(wake_up_event(), None)).result(timeout=timeout_s)
    finally:
        if own_client:
            publisher.stop()
