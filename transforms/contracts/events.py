"""Event contract v1: the one definition of a behavioural event.

Everything that reads, writes or checks events derives from the constants here:
the validator (`transforms.ingest.validation`), the Avro schema file
(`transforms/contracts/schemas/event_v1.avsc`, checked against `avro_schema()` by a test),
the generator and the README's example.

A validated event is an `Event`: flat, typed, timestamps in UTC microseconds and
durations in seconds.
"""

from __future__ import annotations

import json
import pathlib
from typing import NamedTuple, Optional

EVENT_TYPES: tuple[str, ...] = (
    "page_view",
    "product_view",
    "search",
    "add_to_cart",
    "remove_from_cart",
    "checkout_start",
    "purchase",
    "refund",
    "email_open",
    "email_click",
    "app_open",
    "social_share",
    "signup",
)
CHANNELS: tuple[str, ...] = ("web", "app", "email", "social", "store", "other")
# Event types whose `properties.value` is required (money moved).
VALUE_REQUIRED_TYPES: frozenset[str] = frozenset({"purchase", "refund"})

MAX_EVENT_ID_CHARS = 128
MAX_USER_ID_CHARS = 256
MAX_TEXT_CHARS = 1024  # any other free-text string field

# Finite ranges of the numbers an event carries. Beyond them the event is dead-lettered
# (`value_out_of_range`): one absurd amount summed into a profile must not make a feature
# infinite and stop its customer from being scored.
# `properties.value`, in the reporting currency (converted at the event day's rate; a
# currency the rate table lacks is compared as written): the default of `--max_event_value`.
DEFAULT_MAX_EVENT_VALUE = 1_000_000.0
# The largest `--max_event_value` may be set to: a profile sums values, and 1e12 times any
# count of events a profile can hold stays far inside a float.
MAX_EVENT_VALUE_LIMIT = 1e12
MAX_QUANTITY = 1_000_000  # `properties.quantity`, items on one line
MAX_DURATION_S = 7 * 86_400.0  # `properties.duration_s` (after unit normalisation): a week

# Top-level fields: name -> (JSON type, required).  "timestamp" is special-cased:
# an RFC 3339 string with an offset, or integer epoch milliseconds.
TOP_LEVEL_FIELDS: dict[str, tuple[str, bool]] = {
    "event_id": ("string", True),
    "user_id": ("string", True),
    "event_type": ("string", True),
    "timestamp": ("timestamp", True),
    "session_id": ("string", False),
    "channel": ("string", False),
    "device": ("string", False),
    "properties": ("object", False),
    "consent": ("object", False),
}
# properties.*: name -> JSON type.  All optional except `value` for purchase/refund.
PROPERTY_FIELDS: dict[str, str] = {
    "product_id": "string",
    "category": "string",
    "value": "number",
    "currency": "string",
    "quantity": "integer",
    "page": "string",
    "search_query": "string",
    "campaign": "string",
    "duration_s": "number",
    "order_id": "string",
}
# Accepted alternative duration units, normalised to seconds: name -> seconds per unit.
DURATION_ALIASES: dict[str, float] = {"duration_ms": 0.001, "duration_min": 60.0}
CONSENT_FIELDS: tuple[str, ...] = ("analytics", "personalization")


class Event(NamedTuple):
    """A validated, normalised event.

    `user_id` holds the raw id until the privacy step (`transforms.ingest.privacy`)
    replaces it with its HMAC-SHA256 pseudonym; from then on it is the user key.
    """

    event_id: str
    user_id: str
    event_type: str
    timestamp_us: int  # UTC, microseconds since the epoch
    session_id: Optional[str] = None
    channel: Optional[str] = None
    device: Optional[str] = None
    product_id: Optional[str] = None
    category: Optional[str] = None
    value: Optional[float] = None
    currency: Optional[str] = None
    quantity: Optional[int] = None
    page: Optional[str] = None
    search_query: Optional[str] = None
    campaign: Optional[str] = None
    duration_s: Optional[float] = None  # seconds
    consent_analytics: Optional[bool] = None
    consent_personalization: Optional[bool] = None
    order_id: Optional[str] = None  # groups the purchase lines of one order
    # The UTC offset the timestamp was written with, in minutes (None: epoch milliseconds):
    # local time of day is read in it.
    utc_offset_min: Optional[int] = None
    source: str = ""  # where it came from: "path:line", "path#record" or "pubsub:<message id>"


EXAMPLE_EVENT: dict = {
    "event_id": "e-000017",
    "user_id": "u-42",
    "event_type": "purchase",
    "timestamp": "2026-11-02T14:03:07.250+01:00",
    "session_id": "s-42-0009",
    "channel": "web",
    "device": "desktop",
    "properties": {
        "product_id": "p-1203",
        "category": "shoes",
        "value": 89.90,
        "currency": "EUR",
        "quantity": 1,
        "order_id": "o-7781",
    },
    "consent": {"analytics": True, "personalization": True},
}

SCHEMA_DIR = pathlib.Path(__file__).parent / "schemas"
AVRO_SCHEMA_PATH = SCHEMA_DIR / "event_v1.avsc"

_AVRO_TYPES = {"string": "string", "number": "double", "integer": "long"}


def avro_schema() -> dict:
    """The Avro schema of an input event, derived from the contract above.

    Optional fields are `["null", T]` unions with a null default. `timestamp` is
    a `["string", "long"]` union, mirroring the two accepted JSON forms.
    """
    properties = {
        "type": "record",
        "name": "Properties",
        "fields": [
            {"name": name, "type": ["null", _AVRO_TYPES[kind]], "default": None}
            for name, kind in PROPERTY_FIELDS.items()
        ],
    }
    consent = {
        "type": "record",
        "name": "Consent",
        "fields": [{"name": name, "type": ["null", "boolean"], "default": None} for name in CONSENT_FIELDS],
    }
    fields = []
    for name, (kind, required) in TOP_LEVEL_FIELDS.items():
        if name == "timestamp":
            avro_type: object = ["string", "long"]
        elif name == "properties":
            avro_type = properties
        elif name == "consent":
            avro_type = consent
        else:
            avro_type = _AVRO_TYPES[kind]
        if required:
            fields.append({"name": name, "type": avro_type})
        else:
            fields.append({"name": name, "type": ["null", avro_type], "default": None})
    return {
        "type": "record",
        "name": "BehaviouralEvent",
        "namespace": "segments.events.v1",
        "doc": "Behavioural event, contract v1 (see transforms/contracts/events.py).",
        "fields": fields,
    }


def load_avro_schema() -> dict:
    """The committed `.avsc` file (what producers are given)."""
    return json.loads(AVRO_SCHEMA_PATH.read_text())
