"""The moments' rules on records whose figures are worked out by hand (models/moments.py)."""

from __future__ import annotations

import math

import pytest
from scipy.stats import poisson

from models import moments
from models.artifact import validate_card
from models.moments import MomentThresholds, learn_thresholds, moment_of, poisson_tail, usual_gap_days

DAY = 86_400_000_000
# G0 = 5 days, S0 = 0.5 sessions a day, C0 = 0.04 unconverted checkouts a session; policy defaults
# (m_g = 1 gap, m_s = 7 days, m_c = 5 sessions, surprise 0.01, quieter 1.5, lapsing 2, lapsed 4 and 30 days).
T = MomentThresholds(population_gap_days=5.0, population_sessions_per_day=0.5,
                     population_unconverted_per_session=0.04)


def record(**overrides) -> dict:
    """A customer first seen on day 0, active on 5 days up to day 20, scored 1 day later (as of day 21):
    usual gap (20 + 1 x 5) / (4 + 1) = 5 days; quiet in the last 7 days apart from day 20."""
    r = {
        "as_of_us": 21 * DAY, "first_seen_us": 0, "last_event_us": 20 * DAY,
        "days_since_last_event": 1.0, "tenure_days": 21.0, "active_days_7d": 1.0, "active_days_90d": 5.0,
        "lifetime_active_days": 5, "lifetime_sessions": 8.0,
        "sessions_1d": 0, "abandoned_cart_sessions_1d": 0, "orders_1d": 0,
        "sessions_7d": 1, "sessions_90d": 8, "unconverted_checkouts_7d": 0, "lifetime_unconverted_checkouts": 0,
        "first_event_7d_us": 20 * DAY, "last_event_before_7d_us": 12 * DAY,
    }
    r.update(overrides)
    return r


def silent(days: float) -> dict:
    """The same customer, `days` after their last event (day 20), with nothing since."""
    quiet_week = days >= 7
    return record(as_of_us=int((20 + days) * DAY), days_since_last_event=days, tenure_days=20 + days,
                  active_days_7d=0.0 if quiet_week else 1.0, sessions_7d=0 if quiet_week else 1,
                  first_event_7d_us=None if quiet_week else 20 * DAY,
                  last_event_before_7d_us=20 * DAY if quiet_week else 12 * DAY)


def test_poisson_tail_by_hand_and_against_scipy():
    # P(X >= 2 | 0.2) = 1 - e^-0.2 (1 + 0.2) = 1 - 0.8187308 x 1.2
    assert poisson_tail(2, 0.2) == pytest.approx(0.0175231, abs=1e-7)
    assert poisson_tail(0, 3.0) == 1.0 and poisson_tail(1, 0.0) == 0.0
    for k, mean in [(1, 0.5), (3, 0.104), (6, 1.108), (12, 4.0)]:
        assert poisson_tail(k, mean) == pytest.approx(poisson.sf(k - 1, mean), rel=1e-9)


def test_usual_gap_is_shrunk_towards_the_population():
    assert usual_gap_days(record(), T) == pytest.approx(5.0)  # (20 + 5) / (4 + 1)
    # One active day: no gap of their own, the population's 5 days.
    assert usual_gap_days(record(lifetime_active_days=1, first_seen_us=20 * DAY), T) == pytest.approx(5.0)
    # 11 active days over 10 days: (10 + 5) / (10 + 1)
    assert usual_gap_days(record(lifetime_active_days=11, first_seen_us=10 * DAY), T) == pytest.approx(15 / 11)


@pytest.mark.parametrize("days, expected", [
    (1.0, moments.ACTIVE_AS_USUAL),
    (7.5, moments.ACTIVE_AS_USUAL),  # not more than 1.5 x 5
    (7.6, moments.QUIETER_THAN_USUAL),
    (10.0, moments.QUIETER_THAN_USUAL),  # not more than 2 x 5
    (10.1, moments.LAPSING),
    (30.0, moments.LAPSING),  # 4 x 5 = 20 < 30 days: lapsed only after 30
    (30.5, moments.LAPSED),
])
def test_silence_against_the_usual_gap(days, expected):
    assert moment_of(silent(days), T).moment == expected


def test_a_daily_customer_lapses_sooner_but_not_before_thirty_days():
    # 21 active days over 20 days: usual gap (20 + 5) / (20 + 1) = 1.19 days.
    daily = dict(lifetime_active_days=21)
    assert moment_of(silent(2.0) | daily, T).moment == moments.QUIETER_THAN_USUAL  # 1.5 x 1.19 = 1.79
    assert moment_of(silent(2.5) | daily, T).moment == moments.LAPSING  # 2 x 1.19 = 2.38
    assert moment_of(silent(29.0) | daily, T).moment == moments.LAPSING
    assert moment_of(silent(31.0) | daily, T).moment == moments.LAPSED


def test_checkout_friction_against_the_customers_own_rate():
    # 3 attempts without a purchase in 2 sessions this week; before it 1 in 18 sessions:
    # rate (1 + 5 x 0.04) / (18 + 5) = 0.052174, expected 2 x 0.052174 = 0.104348; P(X >= 3) = 0.000175.
    r = record(lifetime_sessions=20.0, sessions_7d=2, unconverted_checkouts_7d=3, lifetime_unconverted_checkouts=4)
    moment, reason = moment_of(r, T)
    assert moment == moments.CHECKOUT_FRICTION
    assert "3 checkout attempts" in reason and "0.10 expected" in reason and "p = 0.00018" in reason
    # A customer who often leaves at checkout: 10 in 18 sessions before, rate (10 + 0.2) / 23 = 0.4435,
    # expected 0.887; P(X >= 2) = 0.2227: not unusual for them.
    usual = record(lifetime_sessions=20.0, sessions_7d=2, unconverted_checkouts_7d=2, lifetime_unconverted_checkouts=12)
    assert moment_of(usual, T).moment == moments.ACTIVE_AS_USUAL
    # One attempt is never friction (below `min_unconverted_checkouts`), however rare.
    once = record(lifetime_sessions=20.0, sessions_7d=2, unconverted_checkouts_7d=1, lifetime_unconverted_checkouts=1)
    assert moment_of(once, T).moment == moments.ACTIVE_AS_USUAL


def test_browsing_more_than_the_usual_rate():
    # Tenure 60: 53 days of the 90-day window before the last 7; 12 - 6 = 6 sessions in them.
    # Rate (6 + 7 x 0.5) / (53 + 7) = 0.158333 a day, 1.108333 a week; P(X >= 6) = 0.001006 < 0.01.
    r = record(tenure_days=60.0, sessions_90d=12, sessions_7d=6)
    moment, reason = moment_of(r, T)
    assert (moment, "6 sessions, 1.11 expected" in reason) == (moments.BROWSING_MORE, True)
    # Three sessions are P(X >= 3) = 0.0993: within the usual.
    assert moment_of(record(tenure_days=60.0, sessions_90d=9, sessions_7d=3), T).moment == moments.ACTIVE_AS_USUAL


def test_came_back_after_a_lapse():
    # Before the week: active 5 of 6 days from day 0 to day 10, gap (10 + 5) / (4 + 1) = 3; the lapse
    # horizon is max(4 x 3, 30) = 30 days; back on day 50 after 40 days.
    r = record(as_of_us=52 * DAY, last_event_us=51 * DAY, days_since_last_event=1.0, tenure_days=52.0,
               lifetime_active_days=6, active_days_7d=1.0, first_event_7d_us=50 * DAY,
               last_event_before_7d_us=10 * DAY)
    moment, reason = moment_of(r, T)
    assert moment == moments.CAME_BACK and "back after 40.0 days" in reason and "from 30.0" in reason
    # Back after 25 days: under the horizon.
    assert moment_of(dict(r, first_event_7d_us=35 * DAY), T).moment == moments.ACTIVE_AS_USUAL


def test_new_this_week_and_cart_abandoned_and_their_precedence():
    new = record(first_seen_us=18 * DAY, tenure_days=3.0, lifetime_active_days=2)
    assert moment_of(new, T).moment == moments.NEW_THIS_WEEK
    abandoned = dict(new, abandoned_cart_sessions_1d=1, sessions_1d=1)
    assert moment_of(abandoned, T).moment == moments.CART_ABANDONED_1D  # comes before new
    assert moment_of(dict(abandoned, orders_1d=1), T).moment == moments.NEW_THIS_WEEK  # they bought that day
    # New customer, no history before the week: rate C0 = 0.04, expected 2 x 0.04 = 0.08;
    # P(X >= 2) = 0.00308: friction comes first of all.
    friction = dict(abandoned, lifetime_sessions=2.0, sessions_7d=2, unconverted_checkouts_7d=2,
                    lifetime_unconverted_checkouts=2)
    assert moment_of(friction, T).moment == moments.CHECKOUT_FRICTION


def test_every_record_gets_exactly_one_of_the_moments():
    for days in (0.5, 3, 8, 12, 40):
        assert moment_of(silent(days), T).moment in moments.MOMENTS


def test_learn_thresholds_pools_the_training_rows():
    rows = [
        # span 20 days over 4 gaps; 53 baseline days with 6 sessions; 1 unconverted in 20 sessions
        record(tenure_days=60.0, sessions_90d=12, sessions_7d=6, lifetime_sessions=20.0,
               lifetime_unconverted_checkouts=1),
        # span 30 days over 1 gap; 23 baseline days with 2 sessions; 3 unconverted in 10 sessions
        record(first_seen_us=0, last_event_us=30 * DAY, lifetime_active_days=2, tenure_days=30.0,
               sessions_90d=2, sessions_7d=0, lifetime_sessions=10.0, lifetime_unconverted_checkouts=3),
        # one active day, no 90-day activity: counts only in the checkout pool (0 in 1 session)
        record(first_seen_us=0, last_event_us=0, lifetime_active_days=1, tenure_days=100.0,
               active_days_90d=0.0, sessions_90d=0, sessions_7d=0, lifetime_sessions=1.0),
    ]
    t = learn_thresholds(rows)
    assert t.population_gap_days == pytest.approx(50 / 5)  # (20 + 30) / (4 + 1)
    assert t.population_sessions_per_day == pytest.approx(8 / 76)  # (6 + 2) / (53 + 23)
    assert t.population_unconverted_per_session == pytest.approx(4 / 31)
    assert sum(t.training_shares.values()) == pytest.approx(1.0) and set(t.training_shares) == set(moments.MOMENTS)
    with pytest.raises(ValueError, match="too little history"):
        learn_thresholds(rows[2:])


def test_card_round_trip_and_validation():
    card = T.as_card()
    assert MomentThresholds.from_card(card) == T and MomentThresholds.from_card(None) is None
    assert card["precedence"] == list(moments.MOMENTS)
    assert moments.validate(card) == []
    assert moments.validate(dict(card, surprise=float("nan"))) == ["moments.surprise is nan, not a finite number >= 0"]
    assert "precedence" in moments.validate(dict(card, precedence=["lapsed"]))[0]
    assert any("moments.lapsing_ratio" in p for p in validate_card({moments.CARD_KEY: dict(card, lapsing_ratio=-1)}))
    assert math.isfinite(card["population_gap_days"])
