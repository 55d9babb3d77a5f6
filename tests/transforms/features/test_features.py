"""Golden test of `ComputeUserFeatures` (batch) and unit tests of its pieces.

Every expected number below is worked out by hand from the event table; the arithmetic
is written out as literals so that a reader can check it without running the code.
Windows: size 2 days, period 1 day, session gap 30 minutes.
"""

from __future__ import annotations

import math
from datetime import timedelta

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import BeamAssertException, assert_that
from apache_beam.transforms.window import TimestampedValue

from transforms.contracts.events import CHANNELS, Event
from transforms.features.partials import DEVICES, UserPartial, finalize
from transforms.contracts.feature_spec import MODEL_FEATURES
from transforms.features.records import FEATURE_RECORD_FIELDS
from transforms.features.compute import ComputeUserFeatures, feature_record_to_vector

SEC = 1_000_000
MIN = 60 * SEC
HOUR = 60 * MIN
DAY = 24 * HOUR
DAY0 = 20_000 * DAY  # 2024-10-04T00:00:00Z, a UTC midnight
DAY1 = DAY0 + DAY
DAY2 = DAY0 + 2 * DAY


def ev(event_id, user, t_us, kind, **fields) -> Event:
    return Event(event_id, user, kind, t_us, source=f"golden:{event_id}", **fields)


# u1: six sessions over three days (gap 30 min).
#   A  day0 08:00-08:20  e1 page_view, e2 product_view, e3 add_to_cart  -> cart, no purchase: abandoned
#   B  day0 13:00-13:05  e4 email_open, e5 email_click                  -> 2 events
#   C  day0 20:00        e6 search                                     -> bounce
#   D  day1 09:00-09:10  e7 product_view, e8 add_to_cart, e9 purchase   -> cart and purchase
#   E  day1 22:00        e10 refund                                    -> bounce
#   F  day1 23:50 - day2 00:10  e11 social_share, e12 page_view         -> spans midnight: day1
# u2: one purchase, day0 12:00.
GOLDEN_EVENTS = [
    ev("e1", "u1", DAY0 + 8 * HOUR, "page_view", channel="web", device="desktop", category="shoes"),
    ev("e2", "u1", DAY0 + 8 * HOUR + 10 * MIN, "product_view", channel="web", device="desktop", category="shoes"),
    ev("e3", "u1", DAY0 + 8 * HOUR + 20 * MIN, "add_to_cart", channel="web", device="desktop", category="shoes"),
    ev("e4", "u1", DAY0 + 13 * HOUR, "email_open", channel="email", device="mobile"),
    ev("e5", "u1", DAY0 + 13 * HOUR + 5 * MIN, "email_click", channel="email", device="mobile"),
    ev("e6", "u1", DAY0 + 20 * HOUR, "search", channel="app", device="mobile", category="bags"),
    ev("e7", "u1", DAY1 + 9 * HOUR, "product_view", channel="web", device="tablet", category="bags"),
    ev("e8", "u1", DAY1 + 9 * HOUR + 5 * MIN, "add_to_cart", channel="web", device="tablet", category="bags"),
    ev("e9", "u1", DAY1 + 9 * HOUR + 10 * MIN, "purchase", channel="web", device="tablet", category="bags",
       value=50.0),
    ev("e10", "u1", DAY1 + 22 * HOUR, "refund", channel="web", device="desktop", value=20.0),
    ev("e11", "u1", DAY1 + 23 * HOUR + 50 * MIN, "social_share", channel="social", device="console"),
    ev("e12", "u1", DAY2 + 10 * MIN, "page_view", channel="social", device="console"),
    ev("e13", "u2", DAY0 + 12 * HOUR, "purchase", channel="store", value=30.0),
]

_NO_CHANNEL = {name: 0.0 for name in CHANNELS}
_NO_DEVICE = {name: 0.0 for name in DEVICES}

# u1, window [day0, day2): e1..e11 (11 events; e12 is on day2). Sessions by start: A..F.
U1_W0 = {
    "user_key": "u1",
    "window_start_us": DAY0,
    "window_end_us": DAY2,
    "pane": "on_time",
    "feature_version": "v1",
    "event_count": 11,
    # last purchase e9 at day1 09:10; window end day2 00:00 -> 14 h 50 min = 890 min of 1440
    "recency_days": 890 / 1440,
    "frequency": 1.0,
    "purchase_days": 1.0,
    "monetary_total": 50.0 - 20.0,  # purchases minus refunds
    "monetary_avg": 30.0 / 1,
    "email_opens": 1.0,
    "email_clicks": 1.0,
    "email_ctr": (1 + 1) / (1 + 2),
    "social_interactions": 1.0,  # e11 (e12 is outside the window)
    "sessions": 6.0,
    # A 1200 s, B 300 s, C 0, D 600 s, E 0, F 1200 s (e11 -> e12, 20 min)
    "avg_session_duration_s": (1200 + 300 + 0 + 600 + 0 + 1200) / 6,
    "pages_per_session": (1 + 0 + 0 + 0 + 0 + 1) / 6,  # page views of A and F
    "bounce_rate": 2 / 6,  # C and E
    "active_days": 2.0,
    "product_views": 2.0,  # e2, e7
    "searches": 1.0,  # e6
    "intensity": 11 / 2,
    "funnel_stage": 3.0,
    "cart_adds": 2.0,  # e3, e8
    "cart_abandonment_rate": 1 / 2,  # A abandoned, D bought
    "checkout_starts": 0.0,
    "top_category_share": 4 / 7,  # bags: e6 e7 e8 e9; shoes: e1 e2 e3
    "category_entropy": -(4 / 7 * math.log(4 / 7) + 3 / 7 * math.log(3 / 7)),
    "tenure_days": (48 - 8) / 24,  # first seen e1 day0 08:00
    "share_night": 0 / 11,
    "share_morning": 6 / 11,  # e1 e2 e3 e7 e8 e9
    "share_afternoon": 2 / 11,  # e4 e5
    "share_evening": 3 / 11,  # e6 e10 e11
    "top_category": "bags",
    "channel_mix": {**_NO_CHANNEL, "web": 7 / 11, "email": 2 / 11, "app": 1 / 11, "social": 1 / 11},
    "device_mix": {**_NO_DEVICE, "desktop": 4 / 11, "mobile": 3 / 11, "tablet": 3 / 11, "other": 1 / 11},
    "first_seen_us": DAY0 + 8 * HOUR,
    "is_new": True,
    "funnel_stage_name": "purchase",
    "first_purchase_us": DAY1 + 9 * HOUR + 10 * MIN,
    "last_purchase_us": DAY1 + 9 * HOUR + 10 * MIN,
}


def _u2(window_start_us: int) -> dict:
    end = window_start_us + 2 * DAY
    purchase = DAY0 + 12 * HOUR
    return {
        "user_key": "u2",
        "window_start_us": window_start_us,
        "window_end_us": end,
        "pane": "on_time",
        "feature_version": "v1",
        "event_count": 1,
        "recency_days": (end - purchase) / DAY,  # 0.5 or 1.5
        "frequency": 1.0,
        "purchase_days": 1.0,
        "monetary_total": 30.0,
        "monetary_avg": 30.0,
        "email_opens": 0.0,
        "email_clicks": 0.0,
        "email_ctr": (0 + 1) / (0 + 2),
        "social_interactions": 0.0,
        "sessions": 1.0,
        "avg_session_duration_s": 0.0,
        "pages_per_session": 0.0,
        "bounce_rate": 1.0,
        "active_days": 1.0,
        "product_views": 0.0,
        "searches": 0.0,
        "intensity": 1.0,
        "funnel_stage": 3.0,
        "cart_adds": 0.0,
        "cart_abandonment_rate": 0.0,  # no session reached the cart
        "checkout_starts": 0.0,
        "top_category_share": 0.0,
        "category_entropy": 0.0,
        "tenure_days": (end - purchase) / DAY,
        "share_night": 0.0,
        "share_morning": 0.0,
        "share_afternoon": 1.0,
        "share_evening": 0.0,
        "top_category": None,
        "channel_mix": {**_NO_CHANNEL, "store": 1.0},
        "device_mix": {**_NO_DEVICE, "other": 1.0},
        "first_seen_us": purchase,
        "is_new": True,
        "funnel_stage_name": "purchase",
        "first_purchase_us": purchase,
        "last_purchase_us": purchase,
    }


# Partial expectations for u1's other windows (sessions, abandonment, bounds).
U1_OTHER_WINDOWS = {
    # [day-1, day1): e1..e6, sessions A B C; A abandoned of 1 cart session
    DAY0 - DAY: {"window_end_us": DAY1, "event_count": 6, "sessions": 3.0, "bounce_rate": 1 / 3,
                 "cart_abandonment_rate": 1 / 1, "avg_session_duration_s": (1200 + 300 + 0) / 3,
                 "recency_days": 2.0, "frequency": 0.0, "last_purchase_us": None},
    # [day1, day3): e7..e12, sessions D E F; D bought
    DAY1: {"window_end_us": DAY1 + 2 * DAY, "event_count": 6, "sessions": 3.0, "bounce_rate": 1 / 3,
           "cart_abandonment_rate": 0 / 1, "avg_session_duration_s": (600 + 0 + 1200) / 3,
           "pages_per_session": 1 / 3, "recency_days": (48 * 60 - (9 * 60 + 10)) / 1440,
           "social_interactions": 2.0, "active_days": 2.0},
    # [day2, day4): e12 only; its session F started on day1
    DAY2: {"window_end_us": DAY2 + 2 * DAY, "event_count": 1, "sessions": 0.0, "bounce_rate": 0.0,
           "pages_per_session": 0.0, "avg_session_duration_s": 0.0, "tenure_days": (48 * 60 - 10) / 1440,
           "funnel_stage_name": "awareness", "top_category": None},
}


def _close(actual, expected) -> bool:
    if isinstance(expected, float) and not isinstance(expected, bool):
        return isinstance(actual, float) and math.isclose(actual, expected, rel_tol=0, abs_tol=1e-9)
    if isinstance(expected, dict):
        return isinstance(actual, dict) and actual.keys() == expected.keys() and all(
            _close(actual[k], v) for k, v in expected.items())
    return type(actual) is type(expected) and actual == expected


def records_match(expected: dict[tuple[str, int], dict], exact_keys: bool = True):
    """A matcher: one record per (user, window start), each listed field within 1e-9."""

    def _match(actual):
        by_key = {}
        for record in actual:
            key = (record["user_key"], record["window_start_us"])
            if key in by_key:
                raise BeamAssertException(f"two records for {key}")
            by_key[key] = record
        if exact_keys and set(by_key) != set(expected):
            raise BeamAssertException(f"windows {sorted(by_key)} != {sorted(expected)}")
        for key, fields in expected.items():
            record = by_key.get(key)
            if record is None:
                raise BeamAssertException(f"no record for {key}")
            bad = {k: (record.get(k), v) for k, v in fields.items() if not _close(record.get(k), v)}
            if bad:
                raise BeamAssertException(f"{key}: (actual, expected) differ: {bad}")

    return _match


def _timestamped(events):
    return [TimestampedValue(e, e.timestamp_us / SEC) for e in events]


def test_golden_features():
    expected = {
        ("u1", DAY0): U1_W0,
        ("u2", DAY0 - DAY): _u2(DAY0 - DAY),
        ("u2", DAY0): _u2(DAY0),
        **{("u1", start): fields for start, fields in U1_OTHER_WINDOWS.items()},
    }
    assert set(U1_W0) == set(FEATURE_RECORD_FIELDS)
    with TestPipeline() as p:
        out = (
            p
            | beam.Create(_timestamped(GOLDEN_EVENTS))
            | ComputeUserFeatures(window_size=timedelta(days=2), window_period=timedelta(days=1))
        )
        assert_that(out.features, records_match(expected))
        assert_that(out.too_late, lambda dead: _empty(dead), label="NoTooLateInBatch")


def _empty(items):
    if list(items):
        raise BeamAssertException(f"expected nothing, got {list(items)}")


def test_record_to_vector_follows_model_features():
    record = dict(U1_W0)
    vector = feature_record_to_vector(record)
    assert vector == [float(U1_W0[name]) for name in MODEL_FEATURES]
    del record["sessions"]
    with pytest.raises(KeyError):
        feature_record_to_vector(record)


def test_finalize_of_empty_partial_has_no_nan():
    features = finalize(UserPartial(), DAY0, DAY2)
    numbers = [v for k, v in features.items() if k in MODEL_FEATURES]
    assert len(numbers) == len(MODEL_FEATURES)
    assert all(isinstance(v, float) and math.isfinite(v) for v in numbers)
    assert features["recency_days"] == 2.0  # no purchase: the window size in days
    assert features["email_ctr"] == 0.5


def test_category_map_is_bounded():
    partial = UserPartial()
    for i in range(3):
        partial.add_event(ev(f"f{i}", "u", DAY0, "product_view", category="fav"))
    for i in range(100):
        partial.add_event(ev(f"c{i}", "u", DAY0 + i * SEC, "product_view", category=f"cat{i:03d}"))
    assert len(partial.categories) == 32
    assert sum(partial.categories.values()) + partial.other_category == 103
    features = finalize(partial, DAY0, DAY2)
    assert features["top_category"] == "fav"
    assert features["top_category_share"] == 3 / 103


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window_size": timedelta(days=3), "window_period": timedelta(days=2)},
        {"window_period": timedelta(hours=5), "window_size": timedelta(hours=10)},
        {"early_firing": timedelta(seconds=1.5)},
    ],
)
def test_rejects_inconsistent_windows(kwargs):
    with pytest.raises(ValueError):
        ComputeUserFeatures(**kwargs)


def test_feature_record_keys_come_in_the_documented_order():
    # `feature_record` relies on `finalize` listing its features in this order.
    from transforms.features.partials import UserPartial
    from transforms.features.records import Pane, feature_record

    partial = UserPartial()
    for e in GOLDEN_EVENTS[:5]:
        partial.add_event(e)
    assert list(feature_record("u1", partial, DAY0, DAY0 + DAY, Pane.ON_TIME)) == list(FEATURE_RECORD_FIELDS)
    assert list(feature_record("u1", UserPartial(), DAY0, DAY0 + DAY, Pane.ON_TIME)) == list(FEATURE_RECORD_FIELDS)
