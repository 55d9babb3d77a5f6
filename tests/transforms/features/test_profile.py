"""The profile: features of a hand-built history computed by hand, the rules for sessions,
orders, money, dedupe and lateness, and properties (arrival order, duplicates, folding)."""

from __future__ import annotations

import csv
import datetime as dt
import math
import pathlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from transforms.contracts.events import CHANNELS, Event
from transforms.contracts.feature_spec import MODEL_FEATURES, MOMENT_FACTS, PROFILE_FACTS
from transforms.features.profile import Outcome, Profile, ProfileRules, build_profile

US = 1_000_000
MIN = 60 * US
HOUR = 60 * MIN
DAY = 24 * HOUR
D0 = 20_000  # 2024-10-04, a Friday
RULES = ProfileRules()
FX_TABLE = pathlib.Path(__file__).resolve().parents[3] / "transforms" / "contracts" / "reference" / "fx_rates.csv"


def at(day: int, hours: float) -> int:
    return (D0 + day) * DAY + round(hours * HOUR)


def usd_per_eur_on(date: dt.date) -> float:
    """Read from the shipped CSV here: the latest USD row on or before `date`."""
    with FX_TABLE.open() as handle:
        rows = [r for r in csv.DictReader(line for line in handle if not line.startswith("#"))
                if r["currency"] == "USD" and dt.date.fromisoformat(r["date"]) <= date]
    return float(max(rows, key=lambda r: r["date"])["units_per_eur"])


def hand_built_history() -> list[Event]:
    e = Event
    return [
        # Day 0, Friday: a checkout session at 10:00 UTC written at +01:00, one order of two lines in USD.
        e("e1", "u", "page_view", at(0, 10), session_id="s1", channel="web", device="desktop", category="shoes",
          utc_offset_min=60),
        e("e2", "u", "product_view", at(0, 10 + 5 / 60), session_id="s1", category="shoes", utc_offset_min=60),
        e("e3", "u", "add_to_cart", at(0, 10 + 10 / 60), session_id="s1", category="shoes", utc_offset_min=60),
        e("e4", "u", "checkout_start", at(0, 10 + 20 / 60), session_id="s1", utc_offset_min=60),
        e("e5", "u", "purchase", at(0, 10 + 25 / 60), session_id="s1", category="shoes", value=100.0,
          currency="USD", order_id="o1", utc_offset_min=60),
        e("e6", "u", "purchase", at(0, 10 + 25 / 60), session_id="s1", category="bags", value=50.0, currency="USD",
          order_id="o1", utc_offset_min=60),
        # Day 2, Sunday: an e-mail opened and clicked at 20:00 UTC, sent as epoch milliseconds (no offset).
        e("e7", "u", "email_open", at(2, 20), channel="email"),
        e("e8", "u", "email_click", at(2, 20 + 1 / 60), channel="email"),
        # Day 5, Wednesday: a mobile session at 23:00 UTC written at -05:00 (18:00 local), cart left.
        e("e9", "u", "page_view", at(5, 23), session_id="s2", device="Mobile", utc_offset_min=-300),
        e("e10", "u", "add_to_cart", at(5, 23 + 10 / 60), session_id="s2", device="mobile", category="hats",
          utc_offset_min=-300),
        # Day 8, Saturday: a refund and a store purchase without session or order id, in UTC.
        e("e11", "u", "refund", at(8, 12), value=20.0, currency="EUR", utc_offset_min=0),
        e("e12", "u", "purchase", at(8, 15), channel="store", value=30.0, utc_offset_min=0),
    ]


def test_a_hand_built_history_gives_the_hand_computed_record():
    as_of = at(10, 0)
    record = RULES.snapshot("u", build_profile(RULES, hand_built_history()), as_of, "daily")
    usd = usd_per_eur_on(dt.date(2024, 10, 4))
    spend = 150.0 / usd + 30.0 - 20.0
    shares = [4 / 6, 1 / 6, 1 / 6]
    expected = {
        "active_days_7d": 2.0,  # days 5 and 8 (the window: days 3..9)
        "active_days_30d": 4.0, "active_days_90d": 4.0,
        "sessions_30d": 2.0,  # e-mail, refund and store events have no session
        "days_since_last_event": (as_of - at(8, 15)) / DAY,
        "tenure_days": (as_of - at(0, 10)) / DAY,
        "page_views_per_session": 1.0, "product_views_per_session": 0.5, "searches_per_session": 0.0,
        "cart_adds_per_session": 1.0,
        "avg_session_duration_s": (25 * 60 + 10 * 60) / 2,
        "bounce_rate": 0.0,
        "cart_abandonment_rate": 0.5,  # s2 filled a cart and did not buy
        "purchase_session_share": 0.5,
        "funnel_stage_7d": 3.0,  # the store purchase on day 8
        "social_share": 0.0, "app_share": 0.0, "store_share": 1 / 12, "mobile_share": 2 / 12,
        "email_opens_30d": 1.0, "email_ctr": 2 / 3,
        # local hours: 11:xx (x6), 20:00 UTC (x2, no offset), 18:00 (x2), 12:00, 15:00
        "share_night": 0.0, "share_morning": 6 / 12, "share_afternoon": 2 / 12, "share_evening": 4 / 12,
        "weekend_share": 4 / 12,  # Sunday's e-mails, Saturday's refund and purchase
        "top_category_share": 4 / 6,
        "category_entropy": -sum(s * math.log(s) for s in shares),
        "orders": 2.0,  # o1 (two lines) and the store purchase
        "orders_90d": 2.0,
        "recency_days": (as_of - at(8, 15)) / DAY,
        "spend_total": spend,
        "avg_order_value": spend / 2,
        "refund_rate": 1 / 3,
        # Lifetime (every event is before as_of): the same sessions, all 12 events.
        "lifetime_page_views_per_session": 1.0, "lifetime_product_views_per_session": 0.5,
        "lifetime_searches_per_session": 0.0, "lifetime_cart_adds_per_session": 1.0,
        "lifetime_avg_session_duration_s": (25 * 60 + 10 * 60) / 2, "lifetime_bounce_rate": 0.0,
        "lifetime_purchase_session_share": 0.5, "lifetime_cart_abandonment_rate": 0.5,
        "lifetime_social_share": 0.0, "lifetime_app_share": 0.0,
        "lifetime_email_channel_share": 2 / 12,  # the open and the click
        "lifetime_mobile_share": 2 / 12, "lifetime_desktop_share": 1 / 12,  # e1 only; e2.. carry no device
        "lifetime_category_entropy": -sum(s * math.log(s) for s in shares),
        "lifetime_email_ctr": 1.0,  # one click of one open, unsmoothed: the model shrinks it
        "lifetime_email_opens_per_session": 1 / 2,
        "lifetime_sessions": 2.0, "lifetime_events": 12.0, "lifetime_cart_sessions": 2.0,
        "lifetime_email_opens": 1.0,
    }
    assert set(expected) == set(MODEL_FEATURES)
    for name, value in expected.items():
        assert record[name] == pytest.approx(value, rel=1e-12, abs=1e-12), name
    assert {name: record[name] for name in PROFILE_FACTS} == {
        "first_seen_us": at(0, 10), "last_event_us": at(8, 15), "first_purchase_us": at(0, 10 + 25 / 60),
        "last_purchase_us": at(8, 15), "purchase_days": 2, "unpriced_lines": 0, "top_category_30d": "shoes",
        "funnel_stage_30d": "purchase", "reporting_currency": "EUR"}
    assert (record["event_count"], record["as_of_us"], record["scoring"]) == (12, as_of, "daily")


def test_a_record_reads_no_event_at_or_after_its_time():
    history = hand_built_history()
    profile = build_profile(RULES, history)
    as_of = at(5, 0)  # before the mobile session, the refund and the store purchase
    record = RULES.snapshot("u", profile, as_of, "daily")
    earlier = RULES.snapshot("u", build_profile(RULES, [e for e in history if e.timestamp_us < as_of]), as_of, "daily")
    assert record == earlier
    assert (record["event_count"], record["orders"], record["sessions_30d"]) == (8, 1.0, 1.0)


def test_silence_shows_recency_and_tenure_keep_growing_and_windows_empty():
    profile = build_profile(RULES, hand_built_history())
    later = [RULES.snapshot("u", profile, at(day, 0), "daily") for day in (10, 40, 100)]
    assert [r["recency_days"] for r in later] == pytest.approx([(at(d, 0) - at(8, 15)) / DAY for d in (10, 40, 100)])
    assert [r["tenure_days"] for r in later] == pytest.approx([(at(d, 0) - at(0, 10)) / DAY for d in (10, 40, 100)])
    assert [r["active_days_30d"] for r in later] == [4.0, 0.0, 0.0]  # day 40's window: days 10..39
    assert [r["active_days_90d"] for r in later] == [4.0, 4.0, 0.0]
    assert later[2]["orders"] == 2.0 and later[2]["orders_90d"] == 0.0  # lifetime stays, windows empty
    # Behaviour: the 30-day rates empty out, the lifetime ones stay what the history says.
    assert later[2]["cart_adds_per_session"] == 0.0 and later[2]["lifetime_cart_adds_per_session"] == 1.0
    assert later[2]["lifetime_sessions"] == 2.0 and later[2]["sessions_30d"] == 0.0


def test_orders_by_order_id_else_session_else_line():
    e = Event
    events = [
        e("a", "u", "purchase", at(0, 1), session_id="s1", value=1.0, order_id="o1"),
        e("b", "u", "purchase", at(0, 1), session_id="s1", value=1.0, order_id="o1"),
        e("c", "u", "purchase", at(0, 1), session_id="s1", value=1.0, order_id="o2"),  # second order, same session
        e("d", "u", "purchase", at(1, 1), session_id="s2", value=1.0),  # a checkout of two lines
        e("f", "u", "purchase", at(1, 1), session_id="s2", value=1.0),
        e("g", "u", "purchase", at(2, 1), value=1.0),  # no order, no session: a line is an order
        e("h", "u", "purchase", at(2, 2), value=1.0),
    ]
    record = RULES.snapshot("u", build_profile(RULES, events), at(3, 0), "daily")
    assert (record["orders"], record["purchase_days"]) == (5.0, 3)


def test_an_out_of_order_event_bridging_two_sessions_merges_them():
    first = Event("a", "u", "page_view", at(0, 1), session_id="s")
    second = Event("b", "u", "page_view", at(0, 1 + 40 / 60), session_id="s")  # 40 min later: a new session
    bridge = Event("c", "u", "product_view", at(0, 1 + 20 / 60), session_id="s")
    profile = Profile()
    for event in (first, second):
        RULES.add(profile, event, check=True)
    split = RULES.snapshot("u", profile, at(1, 0), "daily")
    assert (split["sessions_30d"], split["bounce_rate"], split["avg_session_duration_s"]) == (2.0, 1.0, 0.0)
    RULES.add(profile, bridge, check=True)
    merged = RULES.snapshot("u", profile, at(1, 0), "daily")
    assert (merged["sessions_30d"], merged["bounce_rate"], merged["avg_session_duration_s"]) == (1.0, 0.0, 2400.0)
    assert merged["product_views_per_session"] == 1.0


def test_money_without_a_rate_is_counted_not_invented():
    events = [Event("a", "u", "purchase", at(0, 1), value=10.0, currency="CHF"),
              Event("b", "u", "purchase", at(0, 2), value=5.0)]  # no currency: the reporting currency
    record = RULES.snapshot("u", build_profile(RULES, events), at(1, 0), "daily")
    assert (record["spend_total"], record["unpriced_lines"], record["orders"]) == (5.0, 1, 2.0)


def test_streaming_checks_drop_duplicates_and_refuse_events_behind_the_clock():
    profile = Profile()
    assert RULES.add(profile, Event("a", "u", "page_view", at(10, 1)), check=True) == Outcome.ADDED
    assert RULES.add(profile, Event("a", "u", "page_view", at(10, 1)), check=True) == Outcome.DUPLICATE
    profile.watermark_day = D0 + 11  # the daily timer fired at day 11's midnight
    lateness = RULES.allowed_lateness // dt.timedelta(microseconds=1)
    assert RULES.add(profile, Event("b", "u", "page_view", at(11, 0) - lateness - 1), check=True) == Outcome.TOO_LATE
    assert RULES.add(profile, Event("c", "u", "page_view", at(11, 0) - lateness), check=True) == Outcome.ADDED
    assert RULES.snapshot("u", profile, at(12, 0), "daily")["event_count"] == 2


def test_folding_bounds_the_state_and_changes_no_record():
    events = [Event(f"e{i}", "u", kind, at(3 * i, 12), session_id=f"s{i}", value=2.0 if kind == "purchase" else None)
              for i, kind in enumerate(["page_view", "purchase", "search", "add_to_cart"] * 50)]  # 600 days
    as_of = at(601, 0)
    unfolded = build_profile(RULES, events)
    folded = build_profile(RULES, events)
    RULES.fold(folded, D0 + 600)
    assert len(folded.days) <= RULES.retention_days < len(unfolded.days)
    _close(RULES.snapshot("u", unfolded, as_of, "daily"), RULES.snapshot("u", folded, as_of, "daily"))


# ----------------------------------------------------------------------------- properties

KINDS = ("page_view", "product_view", "search", "add_to_cart", "checkout_start", "purchase", "refund",
         "email_open", "email_click", "social_share")


@st.composite
def histories(draw):
    """One user's events over two weeks (minute resolution, so sessions form and merge), an
    arrival order, and some redeliveries."""
    n = draw(st.integers(min_value=1, max_value=25))
    events = []
    for i in range(n):
        kind = draw(st.sampled_from(KINDS))
        events.append(Event(
            event_id=f"e{i}", user_id="u", event_type=kind,
            timestamp_us=D0 * DAY + draw(st.integers(min_value=0, max_value=14 * 24 * 60)) * MIN,
            session_id=draw(st.sampled_from((None, "s1", "s2"))),
            channel=draw(st.sampled_from((None,) + CHANNELS)),
            device=draw(st.sampled_from((None, "desktop", "MOBILE", "fridge"))),
            category=draw(st.sampled_from((None, "shoes", "bags", "hats"))),
            value=draw(st.sampled_from((0.1, 9.99, 20.0))) if kind in ("purchase", "refund") else None,
            currency=draw(st.sampled_from((None, "USD", "GBP"))),
            order_id=draw(st.sampled_from((None, "o1", "o2"))) if kind == "purchase" else None,
            utc_offset_min=draw(st.sampled_from((None, 0, 60, -300, 330))),
            source=f"prop:{i}"))
    arrival = draw(st.permutations(events)) + draw(st.lists(st.sampled_from(events), max_size=5))
    return events, arrival


def _close(a: dict | None, b: dict | None) -> None:
    if a is None or b is None:  # no event before the scoring time: no record, in both
        assert a is None and b is None
        return
    assert a.keys() == b.keys()
    for name in a:
        if isinstance(a[name], float):
            assert a[name] == pytest.approx(b[name], rel=1e-9, abs=1e-9), name
        else:
            assert a[name] == b[name], name


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(example=histories())
def test_arrival_order_and_redeliveries_change_nothing(example):
    events, arrival = example
    in_order = build_profile(RULES, events)
    as_it_came = Profile()
    for event in arrival:  # the streaming job's way: any order, duplicates checked
        RULES.add(as_it_came, event, check=True)
    for day in (1, 7, 15, 40):
        _close(RULES.snapshot("u", in_order, at(day, 0), "daily"), RULES.snapshot("u", as_it_came, at(day, 0),
                                                                                 "daily"))


def test_the_moment_facts_of_a_hand_built_history():
    """`MOMENT_FACTS` as of the midnight after day 19 (1-day window: day 19; 7 days: days 13..19)."""
    e = Event
    history = [
        # Day 0: a checkout that bought (o1): no unconverted attempt.
        e("m1", "u", "add_to_cart", at(0, 9), session_id="a", category="shoes"),
        e("m2", "u", "checkout_start", at(0, 9.1), session_id="a"),
        e("m3", "u", "purchase", at(0, 9.2), session_id="a", value=10.0, order_id="o1"),
        # Day 5: a payment tried twice, nothing bought: two unconverted attempts.
        e("m4", "u", "add_to_cart", at(5, 9), session_id="b", category="shoes"),
        e("m5", "u", "checkout_start", at(5, 9.1), session_id="b"),
        e("m6", "u", "checkout_start", at(5, 9.2), session_id="b"),
        # Day 10: a page view (the last event before the 7-day window).
        e("m7", "u", "page_view", at(10, 18), session_id="c"),
        # Day 15: one checkout left: one attempt, inside the week.
        e("m8", "u", "checkout_start", at(15, 8), session_id="d"),
        # Day 19: a cart left in a session, and a store purchase without a session.
        e("m9", "u", "add_to_cart", at(19, 12), session_id="e", category="hats"),
        e("m10", "u", "purchase", at(19, 16), channel="store", value=5.0),
    ]
    record = RULES.snapshot("u", build_profile(RULES, history), at(20, 0), "daily")
    assert {name: record[name] for name in MOMENT_FACTS} == {
        "lifetime_active_days": 5,  # days 0, 5, 10, 15, 19
        "sessions_1d": 1, "sessions_7d": 2, "sessions_90d": 5,  # e; d and e; a to e
        "abandoned_cart_sessions_1d": 1,  # e
        "orders_1d": 1,  # the store purchase
        "unconverted_checkouts_7d": 1,  # d
        "lifetime_unconverted_checkouts": 3,  # b twice, d once; a bought
        "first_event_7d_us": at(15, 8),
        "last_event_before_7d_us": at(10, 18),
    }
    # As of an event on day 19 (a time within the day): the day so far is the 1-day window.
    within = RULES.snapshot("u", build_profile(RULES, history[:-1]), at(19, 13), "event")
    assert (within["orders_1d"], within["abandoned_cart_sessions_1d"], within["sessions_1d"]) == (0, 1, 1)
    # A user silent for the whole week: no first event in it.
    silent = RULES.snapshot("u", build_profile(RULES, history[:7]), at(20, 0), "daily")
    assert (silent["first_event_7d_us"], silent["last_event_before_7d_us"], silent["sessions_7d"]) == (
        None, at(10, 18), 0)


def test_state_kept_before_the_moment_fields_still_loads():
    """A streaming job updated in place reads profiles pickled before `unconverted_checkouts` and
    `SessionSummary.checkout_starts` existed: they load, those fields at 0."""
    import pickle

    from transforms.features.activity import Activity, SessionSummary

    day = Activity()
    day.events, day.sessions = 3, 1
    old_state = day.__getstate__()[:-1]  # without the last field
    loaded = Activity.__new__(Activity)
    loaded.__setstate__(old_state)
    assert (loaded.events, loaded.sessions, loaded.unconverted_checkouts) == (3, 1, 0)
    old_summary = pickle.loads(pickle.dumps(tuple(SessionSummary(1, 2, 1, 0, 1, 0, 0, 0))[:8]))
    assert SessionSummary(*old_summary).checkout_starts == 0
