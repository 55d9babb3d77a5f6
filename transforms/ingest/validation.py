"""Parse and validate one raw record against event contract v1.

Pure functions, no Beam: the file reader (`transforms.ingest.files`) and the Pub/Sub
reader both call `parse_event`, so a record is judged the same way whatever
carried it. A record that is not a valid event raises `InvalidEvent` with the
`ErrorCode` that says why; the caller turns it into a dead letter.

Normalisation: timestamps become UTC microseconds, durations seconds, currency
codes upper case. Unknown top-level and property fields are ignored (producers
may add fields before the contract does).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import math
import time
from typing import Any, Mapping, Optional

import orjson

from transforms.contracts.currency import DEFAULT_REPORTING_CURRENCY, RateTable, UnknownCurrency
from transforms.contracts.events import (
    CHANNELS,
    CONSENT_FIELDS,
    DEFAULT_MAX_EVENT_VALUE,
    DURATION_ALIASES,
    EVENT_TYPES,
    MAX_DURATION_S,
    MAX_EVENT_ID_CHARS,
    MAX_QUANTITY,
    MAX_TEXT_CHARS,
    MAX_USER_ID_CHARS,
    VALUE_REQUIRED_TYPES,
    Event,
)
from transforms.contracts.outcomes import ErrorCode

_EVENT_TYPES = frozenset(EVENT_TYPES)
_CHANNELS = frozenset(CHANNELS)
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
_ONE_US = dt.timedelta(microseconds=1)
_ONE_MINUTE = dt.timedelta(minutes=1)


@dataclasses.dataclass(frozen=True)
class ValidationConfig:
    """Limits a record must respect.

    Attributes:
      max_event_bytes: the largest raw record accepted, in bytes.
      max_future_skew: how far past `now_us` an event time may lie.
      max_age: how far before `now_us` an event time may lie.
      now_us: the reference "now" in UTC microseconds; None means the wall clock
        when the config is built.
      suppression_list: the erasure list (a path, read where records are judged): a
        record that is not a valid event but names a suppressed user is filtered as
        suppressed instead of dead-lettered, since its payload would keep the raw id.
      max_event_value: the largest `properties.value`, in `reporting_currency`.
      rates: the exchange rates a value is converted with before that comparison (the
        profiles' own table); None means the shipped table.
      reporting_currency: the currency of `max_event_value`.
    """

    max_event_bytes: int = 16 * 1024
    max_future_skew: dt.timedelta = dt.timedelta(days=1)
    max_age: dt.timedelta = dt.timedelta(days=3650)
    now_us: Optional[int] = None
    suppression_list: Optional[str] = None
    max_event_value: float = DEFAULT_MAX_EVENT_VALUE
    rates: Optional[RateTable] = dataclasses.field(default=None, compare=False, repr=False)
    reporting_currency: str = DEFAULT_REPORTING_CURRENCY

    def __post_init__(self):
        if self.now_us is None:
            object.__setattr__(self, "now_us", time.time_ns() // 1000)

    # Read for every record: computed once (cached_property writes past the frozen guard).
    @functools.cached_property
    def earliest_us(self) -> int:
        return self.now_us - _micros(self.max_age)

    @functools.cached_property
    def latest_us(self) -> int:
        return self.now_us + _micros(self.max_future_skew)

    @functools.cached_property
    def rate_table(self) -> RateTable:
        return self.rates if self.rates is not None else RateTable.load()

    @functools.cached_property
    def surely_in_range(self) -> dict[str, float]:
        """Currency -> the largest value in it that is within `max_event_value` at any rate
        of the table (its lowest rate against the reporting currency's highest): values
        up to it need no conversion to be judged."""
        table = self.rate_table.rates
        reporting = table.get(self.reporting_currency)
        if reporting is None:
            return {}
        highest = max(reporting[1])
        limits = {currency: self.max_event_value * min(rates) / highest for currency, (_, rates) in table.items()}
        limits[self.reporting_currency] = self.max_event_value
        return limits


class InvalidEvent(ValueError):
    """A record that breaks the contract; `code` says which way."""

    def __init__(self, code: ErrorCode, detail: str):
        super().__init__(f"{code.value}: {detail}")
        self.code = code
        self.detail = detail


def _micros(delta: dt.timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def parse_event(raw: bytes, source: str, config: ValidationConfig) -> Event:
    """Decodes one JSON record and validates it.

    Args:
      raw: the record's bytes as received (one JSON line or one message body).
      source: where it came from, kept on the event and on any dead letter.
      config: the limits to apply.

    Returns:
      The normalised `Event`.

    Raises:
      InvalidEvent: the record is not a valid event.
    """
    if len(raw) > config.max_event_bytes:
        raise InvalidEvent(ErrorCode.OVERSIZED, f"{len(raw)} bytes > limit of {config.max_event_bytes}")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise InvalidEvent(ErrorCode.INVALID_JSON, str(error)) from None
    return validate_record(obj, source, config)


def validate_record(obj: Any, source: str, config: ValidationConfig) -> Event:
    """Validates an already-decoded record (a JSON object or an Avro record)."""
    if not isinstance(obj, dict):
        raise InvalidEvent(ErrorCode.NOT_AN_OBJECT, f"top level is a JSON {type(obj).__name__}, not an object")

    event_id = _text(obj, "event_id", required=True, max_chars=MAX_EVENT_ID_CHARS)
    user_id = _text(obj, "user_id", required=True, max_chars=MAX_USER_ID_CHARS)
    event_type = _text(obj, "event_type", required=True)
    if event_type not in _EVENT_TYPES:
        raise InvalidEvent(ErrorCode.UNKNOWN_EVENT_TYPE, f"event_type {event_type[:64]!r} is not one of the contract's")
    if "timestamp" not in obj or obj["timestamp"] is None:
        raise InvalidEvent(ErrorCode.MISSING_FIELD, "timestamp is required")
    timestamp_us, utc_offset_min = _timestamp_us(obj["timestamp"])
    if not config.earliest_us <= timestamp_us <= config.latest_us:
        raise InvalidEvent(
            ErrorCode.TIMESTAMP_OUT_OF_RANGE,
            f"timestamp {_render_us(timestamp_us)} is outside [{_render_us(config.earliest_us)}, "
            f"{_render_us(config.latest_us)}]",
        )
    channel = _text(obj, "channel")
    if channel is not None and channel not in _CHANNELS:
        raise InvalidEvent(ErrorCode.INVALID_FIELD_VALUE, f"channel {channel[:64]!r} is not one of {', '.join(CHANNELS)}")

    props = _object(obj, "properties")
    value = _number(props, "properties.value", "value")
    if value is not None and value < 0:
        raise InvalidEvent(ErrorCode.NEGATIVE_VALUE, f"properties.value is {value}")
    if value is None and event_type in VALUE_REQUIRED_TYPES:
        raise InvalidEvent(ErrorCode.MISSING_FIELD, f"properties.value is required for {event_type}")
    currency = _text(props, "currency", label="properties.currency")
    if currency is not None:
        currency = currency.upper()
        if len(currency) != 3 or not currency.isascii() or not currency.isalpha():
            raise InvalidEvent(ErrorCode.INVALID_FIELD_VALUE, f"properties.currency {currency[:16]!r} is not ISO 4217")
    if value is not None and value > config.surely_in_range.get(currency or config.reporting_currency, 0.0):
        _check_value_range(value, currency, timestamp_us, config)
    quantity = props.get("quantity")
    if quantity is not None:
        if not isinstance(quantity, int) or isinstance(quantity, bool):
            raise InvalidEvent(ErrorCode.BAD_TYPE, f"properties.quantity is a {type(quantity).__name__}, not an integer")
        if quantity < 1:
            raise InvalidEvent(ErrorCode.INVALID_FIELD_VALUE, f"properties.quantity is {quantity}, must be >= 1")
        if quantity > MAX_QUANTITY:
            raise InvalidEvent(ErrorCode.VALUE_OUT_OF_RANGE,
                               f"properties.quantity is {quantity}, the contract allows at most {MAX_QUANTITY:,}")

    consent = _object(obj, "consent")
    flags = [consent.get(name) for name in CONSENT_FIELDS]
    for name, flag in zip(CONSENT_FIELDS, flags):
        if flag is not None and type(flag) is not bool:
            raise InvalidEvent(ErrorCode.BAD_TYPE, f"consent.{name} is a {type(flag).__name__}, not a boolean")
    analytics, personalization = flags

    # The optional strings, in the contract's order: most are absent or plain, and are
    # taken inline; anything else goes through `_text` for its error.
    texts = []
    for container, name, label in _OPTIONAL_TEXTS:
        text = (obj if container is None else props).get(name)
        if text is not None and not (type(text) is str and 0 < len(text) <= MAX_TEXT_CHARS):
            text = _text(obj if container is None else props, name, label=label)
        texts.append(text)
    session_id, device, product_id, category, page, search_query, campaign = texts
    duration_s = _duration_s(props) if _HAS_DURATION.intersection(props) else None
    order_id = props.get("order_id")
    if order_id is not None and not (type(order_id) is str and 0 < len(order_id) <= MAX_TEXT_CHARS):
        order_id = _text(props, "order_id", label="properties.order_id")

    # Event._make over a tuple in field order: a third of the cost of keyword arguments.
    return Event._make((
        event_id,
        user_id,
        event_type,
        timestamp_us,
        session_id,
        channel,
        device,
        product_id,
        category,
        value,
        currency,
        quantity,
        page,
        search_query,
        campaign,
        duration_s,
        analytics,
        personalization,
        order_id,
        utc_offset_min,
        source,
    ))


# (None: the top level, else properties; name; label in error details), in Event's order.
_OPTIONAL_TEXTS: tuple[tuple[Optional[str], str, Optional[str]], ...] = (
    (None, "session_id", None),
    (None, "device", None),
    ("properties", "product_id", "properties.product_id"),
    ("properties", "category", "properties.category"),
    ("properties", "page", "properties.page"),
    ("properties", "search_query", "properties.search_query"),
    ("properties", "campaign", "properties.campaign"),
)
_HAS_DURATION = frozenset(("duration_s", *DURATION_ALIASES))


def _text(obj: Mapping, name: str, *, required: bool = False, max_chars: int = MAX_TEXT_CHARS,
          label: Optional[str] = None) -> Optional[str]:
    value = obj.get(name)
    if type(value) is str and 0 < len(value) <= max_chars:  # the common case, checked first
        return value
    label = label or name
    if value is None:
        if required:
            raise InvalidEvent(ErrorCode.MISSING_FIELD, f"{label} is required")
        return None
    if not isinstance(value, str):
        raise InvalidEvent(ErrorCode.BAD_TYPE, f"{label} is a {type(value).__name__}, not a string")
    if not 1 <= len(value) <= max_chars:
        raise InvalidEvent(ErrorCode.INVALID_FIELD_VALUE, f"{label} has {len(value)} characters, allowed 1-{max_chars}")
    return value


def _object(obj: Mapping, name: str) -> Mapping:
    value = obj.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidEvent(ErrorCode.BAD_TYPE, f"{name} is a {type(value).__name__}, not an object")
    return value


def _number(obj: Mapping, label: str, name: str) -> Optional[float]:
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidEvent(ErrorCode.BAD_TYPE, f"{label} is a {type(value).__name__}, not a number")
    if not math.isfinite(value):
        raise InvalidEvent(ErrorCode.INVALID_FIELD_VALUE, f"{label} is not finite")
    return float(value)


def _duration_s(props: Mapping) -> Optional[float]:
    seconds = _number(props, "properties.duration_s", "duration_s")
    if seconds is None:
        for alias, unit_s in DURATION_ALIASES.items():
            if props.get(alias) is None:  # most events: skip building the label
                continue
            amount = _number(props, f"properties.{alias}", alias)
            if amount is not None:
                seconds = amount * unit_s
                break
    if seconds is not None:
        if seconds < 0:
            raise InvalidEvent(ErrorCode.INVALID_FIELD_VALUE, f"duration is {seconds} s, must be >= 0")
        if seconds > MAX_DURATION_S:
            raise InvalidEvent(ErrorCode.VALUE_OUT_OF_RANGE,
                               f"duration is {seconds:g} s, the contract allows at most {MAX_DURATION_S:g} s")
    return seconds


def _check_value_range(value: float, currency: Optional[str], timestamp_us: int, config: ValidationConfig) -> None:
    """`properties.value` must be at most `max_event_value` in the reporting currency (called
    for the rare value above `surely_in_range`: nearly every value needs no conversion)."""
    reporting = config.reporting_currency
    try:
        amount = config.rate_table.convert(value, currency or reporting, reporting, timestamp_us)
    except UnknownCurrency:
        amount = value  # never summed into spend (an unpriced line): bounded as written
    if amount > config.max_event_value:
        shown = f"{value:g} {currency}" if currency and currency != reporting else f"{value:g}"
        raise InvalidEvent(ErrorCode.VALUE_OUT_OF_RANGE,
                           f"properties.value {shown} is {amount:g} {reporting}, above the limit of "
                           f"{config.max_event_value:g} {reporting} (--max_event_value)")


def _timestamp_us(value: Any) -> tuple[int, Optional[int]]:
    """(UTC microseconds, the offset it was written with in minutes; None for epoch milliseconds)."""
    if isinstance(value, bool):
        raise InvalidEvent(ErrorCode.BAD_TYPE, "timestamp is a bool")
    if isinstance(value, int):  # epoch milliseconds
        return value * 1000, None
    if not isinstance(value, str):
        raise InvalidEvent(ErrorCode.BAD_TYPE, f"timestamp is a {type(value).__name__}, not a string or integer")
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidEvent(ErrorCode.BAD_TIMESTAMP, f"timestamp {value[:64]!r} is not RFC 3339") from None
    if parsed.tzinfo is None:
        raise InvalidEvent(ErrorCode.BAD_TIMESTAMP, f"timestamp {value[:64]!r} has no UTC offset")
    # timedelta // timedelta: exact integer arithmetic in C.
    return (parsed - _EPOCH) // _ONE_US, parsed.utcoffset() // _ONE_MINUTE


def _render_us(timestamp_us: int) -> str:
    try:
        return (_EPOCH + dt.timedelta(microseconds=timestamp_us)).isoformat()
    except OverflowError:
        return f"{timestamp_us} us"
