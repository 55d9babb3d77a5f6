"""Bad records of `--corrupt-rate`: every dead-letter kind the validator can produce, and duplicates."""

from __future__ import annotations

import collections
import itertools
from typing import Any, Callable

import numpy as np
import orjson

from devtools.generate.archetypes import CATEGORIES, DAY_MS
from devtools.generate.randomness import _STREAM_CORRUPTION, _Draws
from devtools.generate.timestamps import format_timestamp
from transforms.contracts.outcomes import ErrorCode

# Bad-record kinds of `--corrupt-rate`, in round-robin order.
DUPLICATE = "duplicate"
CORRUPT_CODES: tuple[ErrorCode, ...] = (
    ErrorCode.INVALID_JSON, ErrorCode.NOT_AN_OBJECT, ErrorCode.MISSING_FIELD, ErrorCode.BAD_TYPE,
    ErrorCode.UNKNOWN_EVENT_TYPE, ErrorCode.BAD_TIMESTAMP, ErrorCode.TIMESTAMP_OUT_OF_RANGE,
    ErrorCode.NEGATIVE_VALUE, ErrorCode.OVERSIZED, ErrorCode.INVALID_FIELD_VALUE,
)
CORRUPTION_KINDS: tuple[str, ...] = tuple(code.value for code in CORRUPT_CODES) + (DUPLICATE,)
OVERSIZED_BYTES = 16 * 1024  # the validator's default limit; oversized records exceed it


def _copy(event: dict) -> dict:
    copied = dict(event)
    if "properties" in copied:
        copied["properties"] = dict(copied["properties"])
    return copied


def _as_purchase(event: dict, value: Any) -> dict:
    props = event.get("properties") or {}
    event["event_type"] = "purchase"
    event["properties"] = {
        "product_id": props.get("product_id", "p-00000"), "category": props.get("category", CATEGORIES[0]),
        "value": value, "currency": props.get("currency", "EUR"), "quantity": props.get("quantity", 1)}
    if value is None:
        del event["properties"]["value"]
    return event


def _as_cart(event: dict, quantity: Any) -> dict:
    props = event.get("properties") or {}
    event["event_type"] = "add_to_cart"
    event["properties"] = {"product_id": props.get("product_id", "p-00000"),
                           "category": props.get("category", CATEGORIES[0]), "quantity": quantity}
    return event


def _with(event: dict, **fields: Any) -> dict:
    event.update(fields)
    return event


def _without(event: dict, name: str) -> dict:
    del event[name]
    return event


def _bad_currency(event: dict) -> dict:
    event["properties"]["currency"] = "euro"
    return event


def _shift_year(ts_ms: int, year: int) -> str:
    text = format_timestamp(ts_ms, 0, True)
    return f"{year:04d}{text[4:]}".replace("-02-29T", "-02-28T")


def _invalid_utf8(event: dict) -> bytes:
    event["device"] = "@@BAD@@"
    return orjson.dumps(event).replace(b"@@BAD@@", b"mob\xff\xfeile")


# A variant: (name, avro-representable, make(template copy with the corrupt id, ts_ms, draws) -> record).
_Variant = tuple[str, bool, Callable[[dict, int, _Draws], Any]]
_VARIANTS: dict[str, tuple[_Variant, ...]] = {
    ErrorCode.INVALID_JSON.value: (
        ("truncated", False, lambda e, ts, r: (lambda b: b[: len(b) // 2])(orjson.dumps(e))),
        ("invalid_utf8", False, lambda e, ts, r: _invalid_utf8(e)),
    ),
    ErrorCode.NOT_AN_OBJECT.value: (
        ("array", False, lambda e, ts, r: [e]),
        ("number", False, lambda e, ts, r: 42),
        ("string", False, lambda e, ts, r: e["event_type"]),
    ),
    ErrorCode.MISSING_FIELD.value: (
        ("no_user_id", False, lambda e, ts, r: _without(e, "user_id")),
        ("no_event_type", False, lambda e, ts, r: _without(e, "event_type")),
        ("no_timestamp", False, lambda e, ts, r: _without(e, "timestamp")),
        ("no_event_id", False, lambda e, ts, r: _without(e, "event_id")),
        ("purchase_without_value", True, lambda e, ts, r: _as_purchase(e, None)),
    ),
    ErrorCode.BAD_TYPE.value: (
        ("numeric_event_id", False, lambda e, ts, r: _with(e, event_id=int(e["event_id"].rsplit("-", 1)[1]))),
        ("string_quantity", False, lambda e, ts, r: _as_cart(e, "2")),
        ("string_value", False, lambda e, ts, r: _as_purchase(e, "12.50")),
        ("properties_list", False, lambda e, ts, r: _with(e, properties=["page", "/"])),
        ("string_consent", False, lambda e, ts, r: _with(e, consent={"analytics": "yes", "personalization": True})),
    ),
    ErrorCode.UNKNOWN_EVENT_TYPE.value: (
        ("login", True, lambda e, ts, r: _with(e, event_type="login")),
        ("typo", True, lambda e, ts, r: _with(e, event_type="page_vew")),
        ("wishlist", True, lambda e, ts, r: _with(e, event_type="wishlist_add")),
    ),
    ErrorCode.BAD_TIMESTAMP.value: (
        ("no_offset", True, lambda e, ts, r: _with(e, timestamp=format_timestamp(ts, 0, True)[:-1])),
        ("prose", True, lambda e, ts, r: _with(e, timestamp="yesterday at noon")),
        ("impossible_date", True, lambda e, ts, r: _with(e, timestamp="2026-13-45T25:61:00Z")),
        ("slashes", True, lambda e, ts, r: _with(e, timestamp=format_timestamp(ts, 0, True)[:10].replace("-", "/"))),
    ),
    ErrorCode.TIMESTAMP_OUT_OF_RANGE.value: (
        ("year_1990", True, lambda e, ts, r: _with(e, timestamp=_shift_year(ts, 1990))),
        ("year_2100", True, lambda e, ts, r: _with(e, timestamp=_shift_year(ts, 2100))),
        ("epoch_ms_1990", True, lambda e, ts, r: _with(e, timestamp=631_152_000_000 + ts % DAY_MS)),
    ),
    ErrorCode.NEGATIVE_VALUE.value: (
        ("negative_purchase", True, lambda e, ts, r: _as_purchase(e, -round(1 + 99 * r.u(), 2))),
    ),
    ErrorCode.OVERSIZED.value: (
        ("huge_search_query", True, lambda e, ts, r: _with(
            e, event_type="search",
            properties={"search_query": "cheap running shoes " * (OVERSIZED_BYTES // 20 + 1 + int(r.u() * 400)),
                        "page": "/search"})),
    ),
    ErrorCode.INVALID_FIELD_VALUE.value: (
        ("channel", True, lambda e, ts, r: _with(e, channel="carrier-pigeon")),
        ("zero_quantity", True, lambda e, ts, r: _as_cart(e, 0)),
        ("currency", True, lambda e, ts, r: _bad_currency(_as_purchase(e, 19.99))),
        ("empty_event_id", True, lambda e, ts, r: _with(e, event_id="")),
        ("long_user_id", True, lambda e, ts, r: _with(e, user_id="u-" + "9" * 300)),
    ),
}


class _Corruptor:
    """Decides where bad records go and makes them (its own random stream).

    The writer calls `remember(written)` for every valid record and
    `next_count()` after it: the number of bad records (Poisson with mean
    R / (1 - R), so that they are a fraction R of the output) to write next,
    which `make` builds, taking kinds round-robin from `kinds`.
    """

    _RECENT = 64  # duplicates re-emit one of the last 64 valid records

    def __init__(self, seed: int, rate: float, avro: bool):
        self.seed = seed
        self.avro = avro
        mean = rate / (1.0 - rate)
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, _STREAM_CORRUPTION])))
        self.r = _Draws(rng)
        if mean > 0.0:
            blocks = (rng.poisson(mean, size=1 << 15).tolist() for _ in itertools.count())
            self.next_count: Callable[[], int] = itertools.chain.from_iterable(blocks).__next__
        else:
            self.next_count = itertools.repeat(0).__next__
        self.recent: collections.deque = collections.deque(maxlen=self._RECENT)
        self.remember: Callable[[Any], None] = self.recent.append
        self.kinds = [k for k in CORRUPTION_KINDS
                      if k == DUPLICATE or any(avro_ok or not avro for _, avro_ok, _ in _VARIANTS[k])]
        self.next_kind = 0
        self.serial = 0
        self.by_code: dict[str, int] = {code.value: 0 for code in CORRUPT_CODES}
        self.duplicates = 0

    def make(self, count: int, event: dict, ts: int) -> list[Any]:
        """`count` bad records to write after the valid `event` (time `ts` ms)."""
        out = []
        for _ in range(count):
            kind = self.kinds[self.next_kind]
            self.next_kind = (self.next_kind + 1) % len(self.kinds)
            if kind == DUPLICATE:
                self.duplicates += 1
                out.append(self.recent[int(self.r.u() * len(self.recent))])
                continue
            variants = [v for v in _VARIANTS[kind] if v[1] or not self.avro]
            _, _, make = variants[int(self.r.u() * len(variants))]
            template = _copy(event)
            template["event_id"] = f"x-{self.seed}-{self.serial:07d}"
            self.serial += 1
            self.by_code[kind] += 1
            out.append(make(template, ts, self.r))
        return out

