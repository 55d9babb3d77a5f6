"""Every dead-letter code of the parser, one record each, plus normalisation."""

import datetime as dt
import json

import pytest

from transforms.contracts.events import EXAMPLE_EVENT, Event
from transforms.contracts.outcomes import ErrorCode
from transforms.ingest.validation import InvalidEvent, ValidationConfig, parse_event

NOW_US = 1_793_577_600_000_000  # 2026-11-02T00:00:00Z
CONFIG = ValidationConfig(max_event_bytes=2048, now_us=NOW_US)


def record(**changes) -> dict:
    event = json.loads(json.dumps(EXAMPLE_EVENT))
    event["timestamp"] = "2026-11-01T10:00:00Z"
    for key, value in changes.items():
        if value is _DROP:
            event.pop(key)
        else:
            event[key] = value
    return event


_DROP = object()


def encode(obj) -> bytes:
    return json.dumps(obj).encode("utf-8")


def props(**changes) -> dict:
    merged = dict(EXAMPLE_EVENT["properties"])
    for key, value in changes.items():
        if value is _DROP:
            merged.pop(key)
        else:
            merged[key] = value
    return merged


CASES = [
    ("invalid_json_truncated", b'{"event_id": "a", "user_id": ', ErrorCode.INVALID_JSON),
    ("invalid_json_not_utf8", b'{"event_id": "\xff\xfe"}', ErrorCode.INVALID_JSON),
    ("not_an_object_array", b"[1, 2, 3]", ErrorCode.NOT_AN_OBJECT),
    ("not_an_object_number", b"42", ErrorCode.NOT_AN_OBJECT),
    ("missing_event_id", encode(record(event_id=_DROP)), ErrorCode.MISSING_FIELD),
    ("missing_timestamp", encode(record(timestamp=_DROP)), ErrorCode.MISSING_FIELD),
    ("missing_purchase_value", encode(record(properties=props(value=_DROP))), ErrorCode.MISSING_FIELD),
    ("bad_type_event_id", encode(record(event_id=17)), ErrorCode.BAD_TYPE),
    ("bad_type_quantity", encode(record(properties=props(quantity="2"))), ErrorCode.BAD_TYPE),
    ("bad_type_value_bool", encode(record(properties=props(value=True))), ErrorCode.BAD_TYPE),
    ("bad_type_timestamp_float", encode(record(timestamp=1.5e12)), ErrorCode.BAD_TYPE),
    ("bad_type_properties", encode(record(properties="shoes")), ErrorCode.BAD_TYPE),
    ("bad_type_consent", encode(record(consent={"personalization": "yes"})), ErrorCode.BAD_TYPE),
    ("unknown_event_type", encode(record(event_type="teleport")), ErrorCode.UNKNOWN_EVENT_TYPE),
    ("bad_timestamp_garbage", encode(record(timestamp="yesterday")), ErrorCode.BAD_TIMESTAMP),
    ("bad_timestamp_no_offset", encode(record(timestamp="2026-11-01T10:00:00")), ErrorCode.BAD_TIMESTAMP),
    ("out_of_range_past", encode(record(timestamp="1990-01-01T00:00:00Z")), ErrorCode.TIMESTAMP_OUT_OF_RANGE),
    ("out_of_range_future", encode(record(timestamp="2026-11-03T00:00:01Z")), ErrorCode.TIMESTAMP_OUT_OF_RANGE),
    ("out_of_range_epoch_ms", encode(record(timestamp=10**17)), ErrorCode.TIMESTAMP_OUT_OF_RANGE),
    ("negative_value", encode(record(properties=props(value=-0.01))), ErrorCode.NEGATIVE_VALUE),
    ("oversized", encode(record(properties=props(search_query="x" * 1000), page="y" * 1000)), ErrorCode.OVERSIZED),
    ("invalid_channel", encode(record(channel="carrier-pigeon")), ErrorCode.INVALID_FIELD_VALUE),
    ("invalid_quantity_zero", encode(record(properties=props(quantity=0))), ErrorCode.INVALID_FIELD_VALUE),
    ("invalid_currency", encode(record(properties=props(currency="euro"))), ErrorCode.INVALID_FIELD_VALUE),
    ("invalid_empty_event_id", encode(record(event_id="")), ErrorCode.INVALID_FIELD_VALUE),
    ("invalid_long_user_id", encode(record(user_id="u" * 257)), ErrorCode.INVALID_FIELD_VALUE),
    ("invalid_negative_duration", encode(record(properties=props(duration_s=-1))), ErrorCode.INVALID_FIELD_VALUE),
    ("value_1e308", encode(record(properties=props(value=1e308))), ErrorCode.VALUE_OUT_OF_RANGE),
    ("value_above_limit_after_conversion", encode(record(properties=props(value=900_000, currency="GBP"))),
     ErrorCode.VALUE_OUT_OF_RANGE),
    ("value_unknown_currency_above_limit", encode(record(properties=props(value=2e6, currency="XYZ"))),
     ErrorCode.VALUE_OUT_OF_RANGE),
    ("quantity_above_limit", encode(record(properties=props(quantity=10**9))), ErrorCode.VALUE_OUT_OF_RANGE),
    ("duration_above_a_week", encode(record(properties=props(duration_min=10**6))), ErrorCode.VALUE_OUT_OF_RANGE),
]


@pytest.mark.parametrize("raw, code", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_each_invalid_record_gets_its_code(raw, code):
    with pytest.raises(InvalidEvent) as caught:
        parse_event(raw, "test:1", CONFIG)
    assert caught.value.code is code
    assert caught.value.detail


def test_every_parser_code_is_covered():
    # corrupt_file is the file reader's (an unreadable Avro block): tests/transforms/ingest/test_avro_blocks.py.
    parser_codes = {code for code in ErrorCode} - {ErrorCode.TOO_LATE, ErrorCode.INFERENCE_FAILED, ErrorCode.ROW_REJECTED,
                                                   ErrorCode.CORRUPT_FILE}
    assert {case[2] for case in CASES} == parser_codes


def test_example_event_normalises():
    event = parse_event(encode(record(timestamp="2026-11-01T11:30:00.250+01:30")), "f:3", CONFIG)
    # 11:30:00.250 at +01:30 is 10:00:00.250 UTC on 2026-11-01 = NOW - 14 h + 0.25 s.
    assert event.timestamp_us == NOW_US - 14 * 3600 * 1_000_000 + 250_000
    assert event.currency == "EUR"
    assert event.value == 89.90
    assert event.quantity == 1
    assert event.consent_personalization is True
    assert event.source == "f:3"


def test_epoch_millis_and_rfc3339_agree():
    from_string = parse_event(encode(record(timestamp="2026-11-01T10:00:00Z")), "s", CONFIG)
    millis = int(dt.datetime(2026, 11, 1, 10, tzinfo=dt.timezone.utc).timestamp()) * 1000
    from_millis = parse_event(encode(record(timestamp=millis)), "s", CONFIG)
    assert from_string.timestamp_us == from_millis.timestamp_us == millis * 1000


@pytest.mark.parametrize("field, value, seconds", [("duration_s", 12.5, 12.5), ("duration_ms", 1500, 1.5),
                                                    ("duration_min", 2, 120.0)])
def test_durations_normalise_to_seconds(field, value, seconds):
    event = parse_event(encode(record(event_type="page_view", properties={field: value})), "s", CONFIG)
    assert event.duration_s == seconds


def test_unknown_fields_are_ignored():
    event = parse_event(encode(record(extra_field={"a": 1})), "s", CONFIG)
    assert isinstance(event, Event)


def test_every_field_lands_in_its_place():
    raw = {
        "event_id": "e-1", "user_id": "u-1", "event_type": "purchase", "timestamp": "2026-11-01T10:00:00.5+01:00",
        "session_id": "s-1", "channel": "app", "device": "tablet",
        "properties": {"product_id": "p-1", "category": "shoes", "value": 12, "currency": "eur", "quantity": 2,
                       "page": "/p", "search_query": "red", "campaign": "c-9", "duration_ms": 1500,
                       "order_id": "o-3"},
        "consent": {"analytics": False, "personalization": True},
    }
    expected = Event(
        event_id="e-1", user_id="u-1", event_type="purchase",
        timestamp_us=1_793_523_600_500_000,  # 09:00:00.5 UTC on 2026-11-01
        session_id="s-1", channel="app", device="tablet", product_id="p-1", category="shoes", value=12.0,
        currency="EUR", quantity=2, page="/p", search_query="red", campaign="c-9", duration_s=1.5,
        consent_analytics=False, consent_personalization=True, order_id="o-3",
        utc_offset_min=60,  # the offset the timestamp was written with
        source="f:7",
    )
    assert parse_event(encode(raw), "f:7", CONFIG) == expected
    assert dt.datetime(2026, 11, 1, 9, 0, 0, 500000, tzinfo=dt.timezone.utc).timestamp() * 1e6 == expected.timestamp_us
    # Epoch milliseconds carry no offset; "Z" is offset 0; "-05:30" is -330 minutes.
    assert parse_event(encode(dict(raw, timestamp=1_793_523_600_500)), "f:7", CONFIG).utc_offset_min is None
    assert parse_event(encode(dict(raw, timestamp="2026-11-01T09:00:00.5Z")), "f:7", CONFIG).utc_offset_min == 0
    assert parse_event(encode(dict(raw, timestamp="2026-11-01T03:30:00.5-05:30")), "f:7", CONFIG).utc_offset_min == -330


@pytest.mark.parametrize("value, currency", [(1_000_000, "EUR"), (1_100_000, "USD"), (0, None), (1e6, None)])
def test_values_up_to_the_limit_in_the_reporting_currency_are_valid(value, currency):
    # 1,100,000 USD is about 940,000 EUR at the shipped table's rate for November 2026.
    event = parse_event(encode(record(properties=props(value=value, currency=currency))), "test:1", CONFIG)
    assert event.value == value


def test_the_value_limit_is_configurable_and_named_in_the_detail():
    strict = ValidationConfig(max_event_bytes=2048, now_us=NOW_US, max_event_value=100.0)
    with pytest.raises(InvalidEvent) as caught:
        parse_event(encode(record(properties=props(value=100.5))), "test:1", strict)
    assert caught.value.code is ErrorCode.VALUE_OUT_OF_RANGE
    assert "100.5" in caught.value.detail and "--max_event_value" in caught.value.detail
    assert parse_event(encode(record(properties=props(value=100.0))), "test:1", strict).value == 100.0


def test_values_judged_without_conversion_are_within_the_limit_on_every_day_of_the_table():
    table = CONFIG.rate_table
    days = sorted({day for days, _ in table.rates.values() for day in days})
    for currency, limit in CONFIG.surely_in_range.items():
        for day in days + [days[0] - 400, days[-1] + 400]:
            converted = table.convert(limit, currency, CONFIG.reporting_currency, day * 86_400_000_000)
            assert converted <= CONFIG.max_event_value * (1 + 1e-12), (currency, day)
