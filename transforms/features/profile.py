"""A living customer profile: one user's history as day-by-day activity, scored as of any time.

`Profile` is the state both jobs keep per user (batch builds it from the user's sorted
events, streaming keeps it in Beam state); `ProfileRules` holds the configuration and the
three things done to a profile:

* `add`: an event goes into the `Activity` of its UTC day (money converted to the
  reporting currency at that day's rate, orders counted once, sessions re-summarised);
  in streaming it first passes the dedupe and lateness checks;
* `fold`: days that no rolling window can reach any more are folded into one settled
  `Activity`, so the state stays bounded (about `retention_days` day activities, plus
  the ids of the last `allowed_lateness` of events for the dedupe);
* `snapshot`: the feature record as of a time `as_of`: rolling windows (the days before
  `as_of`), lifetime figures (everything before `as_of`) and the values derived from them
  (recency, tenure, BG/NBD inputs), never reading an event after `as_of`.

A day is UTC, and midnight ends a session, so each day's `Activity` holds exactly the
events stamped in that day. A record as of `t` reads the events stamped before `t`: for
`t` at a midnight, the days before it; for a time within a day (the streaming job's
updates on a user's events, as of 1 µs after the latest one), that day too, all of whose
events applied so far are before `t`. Definitions of every field:
`transforms/features/FEATURES.md`.
"""

from __future__ import annotations

import dataclasses
import math
from datetime import timedelta
from typing import Iterable, Optional

from transforms.contracts.currency import DEFAULT_REPORTING_CURRENCY, RateTable, UnknownCurrency
from transforms.contracts.events import CHANNELS, MAX_EVENT_VALUE_LIMIT, Event
from transforms.contracts.feature_spec import FEATURE_VERSION, WINDOWS_DAYS
from transforms.features.activity import (DAY_PARTS, FUNNEL_STAGES, US_PER_DAY, US_PER_SECOND, Activity,
                                          SessionSummary)

_SHARE_KEYS = tuple(f"share_{name}" for name, _, _ in DAY_PARTS)
_APP = CHANNELS.index("app")
_EMAIL = CHANNELS.index("email")
_STORE = CHANNELS.index("store")
_DESKTOP = 0  # activity.DEVICES.index("desktop")
_MOBILE = 1  # activity.DEVICES.index("mobile")


class Outcome:
    """What `ProfileRules.add` did with an event."""

    ADDED = "added"
    DUPLICATE = "duplicate"
    TOO_LATE = "too_late"


class Profile:
    """One user's state (plain data: pickled into Beam state between updates).

    Attributes:
        days: UTC day number -> that day's `Activity`.
        settled: the sum of the days folded away (all before `settled_before`).
        settled_before: day number before which every day is folded (None: none yet).
        seen: event id -> day number, for the streaming dedupe (recent days only).
        orders: order key -> day number of its first line (retained days only).
        sessions: session id -> its summaries that a late event could still change.
        watermark_day: the latest day boundary the event-time clock is known to have
            passed (streaming; None in batch): events too far behind it are too late.
    """

    __slots__ = ("days", "settled", "settled_before", "seen", "orders", "sessions", "watermark_day")

    def __init__(self) -> None:
        self.days: dict[int, Activity] = {}
        self.settled = Activity()
        self.settled_before: Optional[int] = None
        self.seen: dict[str, int] = {}
        self.orders: dict[str, int] = {}
        self.sessions: dict[str, list[SessionSummary]] = {}
        self.watermark_day: Optional[int] = None

    def __getstate__(self):
        return tuple(getattr(self, name) for name in self.__slots__)

    def __setstate__(self, state) -> None:
        for name, value in zip(self.__slots__, state):
            setattr(self, name, value)

    @property
    def first_seen_us(self) -> Optional[int]:
        firsts = [a.first_event_us for a in self.days.values()] + [self.settled.first_event_us]
        firsts = [t for t in firsts if t is not None]
        return min(firsts) if firsts else None

    @property
    def last_event_us(self) -> Optional[int]:
        lasts = [a.last_event_us for a in self.days.values()] + [self.settled.last_event_us]
        lasts = [t for t in lasts if t is not None]
        return max(lasts) if lasts else None


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else 0.0


def category_entropy(activity: Activity) -> float:
    """Shannon entropy (nats) of the categories of `activity`'s events (the overflow bucket counts as one)."""
    total = sum(activity.categories.values()) + activity.other_category
    entropy = 0.0
    for n in list(activity.categories.values()) + [activity.other_category]:
        if n > 0:
            share = n / total
            entropy -= share * math.log(share)
    return entropy


def lifetime_behaviour(life: Activity) -> dict[str, float]:
    """The lifetime behaviour rates (raw ratios, 0 with a zero denominator) and their evidence.

    The model shrinks each rate towards the population's rate by its evidence
    (`transforms.contracts.feature_spec.RATE_EVIDENCE`); the record keeps them raw.
    """
    sessions = max(life.sessions, 0)
    events = life.events
    return {
        "lifetime_page_views_per_session": _ratio(life.session_page_views, sessions),
        "lifetime_product_views_per_session": _ratio(life.session_product_views, sessions),
        "lifetime_searches_per_session": _ratio(life.session_searches, sessions),
        "lifetime_cart_adds_per_session": _ratio(life.session_cart_adds, sessions),
        "lifetime_avg_session_duration_s": _ratio(life.session_duration_us / US_PER_SECOND, sessions),
        "lifetime_bounce_rate": _ratio(life.bounces, sessions),
        "lifetime_purchase_session_share": _ratio(life.purchase_sessions, sessions),
        "lifetime_cart_abandonment_rate": _ratio(life.abandoned_sessions, life.cart_sessions),
        "lifetime_social_share": _ratio(life.social, events),
        "lifetime_app_share": _ratio(life.channels[_APP], events),
        "lifetime_email_channel_share": _ratio(life.channels[_EMAIL], events),
        "lifetime_mobile_share": _ratio(life.devices[_MOBILE], events),
        "lifetime_desktop_share": _ratio(life.devices[_DESKTOP], events),
        "lifetime_category_entropy": category_entropy(life),
        "lifetime_email_ctr": _ratio(life.email_clicks, life.email_opens),
        "lifetime_email_opens_per_session": life.email_opens / max(sessions, 1),
        "lifetime_sessions": float(sessions),
        "lifetime_events": float(events),
        "lifetime_cart_sessions": float(max(life.cart_sessions, 0)),
        "lifetime_email_opens": float(life.email_opens),
    }


def moment_facts(life: Activity, windows: dict[int, Activity], last_before_week_us: Optional[int]) -> dict:
    """What the moments read beside the model features (`MOMENT_FACTS`; `models/moments.py`).

    Args:
        life: every day before `as_of`.
        windows: the rolling windows by length in days, the 1-day window included.
        last_before_week_us: the last event before the 7-day window; None when there is none.
    """
    day1, week, quarter = windows[1], windows[7], windows[90]
    return {
        "lifetime_active_days": life.active_days,
        "sessions_1d": max(day1.sessions, 0),
        "abandoned_cart_sessions_1d": max(day1.abandoned_sessions, 0),
        "orders_1d": day1.orders,
        "sessions_7d": max(week.sessions, 0),
        "sessions_90d": max(quarter.sessions, 0),
        "unconverted_checkouts_7d": max(week.unconverted_checkouts, 0),
        "lifetime_unconverted_checkouts": max(life.unconverted_checkouts, 0),
        "first_event_7d_us": week.first_event_us,
        "last_event_before_7d_us": last_before_week_us,
    }


def order_key(event: Event) -> str:
    """What makes purchase lines one order: the order id, else the session (one checkout),
    else the event itself."""
    if event.order_id:
        return "o:" + event.order_id
    if event.session_id:
        return "s:" + event.session_id
    return "e:" + event.event_id


@dataclasses.dataclass(frozen=True)
class ProfileRules:
    """How profiles are built and scored.

    Attributes:
        session_gap: inactivity that closes a session.
        allowed_lateness: streaming: how far behind the event-time clock an event may
            arrive and still be counted (and checked against duplicates).
        rates: exchange rates into the reporting currency.
        reporting_currency: the currency of every money feature.
    """

    session_gap: timedelta = timedelta(minutes=30)
    allowed_lateness: timedelta = timedelta(hours=48)
    rates: RateTable = dataclasses.field(default_factory=RateTable.load)
    reporting_currency: str = DEFAULT_REPORTING_CURRENCY

    def __post_init__(self):
        if self.reporting_currency not in self.rates.currencies:
            raise ValueError(f"reporting currency {self.reporting_currency} is not in the rate table "
                             f"({', '.join(sorted(self.rates.currencies))})")
        if not self.session_gap > timedelta(0):
            raise ValueError("session_gap must be positive")

    @property
    def gap_us(self) -> int:
        return self.session_gap // timedelta(microseconds=1)

    @property
    def lateness_days(self) -> int:
        """Whole days of allowed lateness, rounded up."""
        return -(-(self.allowed_lateness // timedelta(microseconds=1)) // US_PER_DAY)

    @property
    def retention_days(self) -> int:
        """Days kept as day activities: the longest window, plus the lateness, plus today."""
        return max(WINDOWS_DAYS) + self.lateness_days + 1

    # -- events ------------------------------------------------------------------------

    def money(self, event: Event) -> Optional[float]:
        """The event's value in the reporting currency (0 without a value); None when its
        currency has no rate, or the amount is outside the contract's range. A missing
        currency is the reporting currency."""
        if event.value is None:
            return 0.0
        try:
            amount = self.rates.convert(event.value, event.currency or self.reporting_currency,
                                        self.reporting_currency, event.timestamp_us)
        except UnknownCurrency:
            return None
        # The validator bounds values (`--max_event_value`); an amount beyond even the
        # contract's ceiling (an event that skipped it) counts as unpriced, so that spend
        # sums bounded amounts and stays finite whatever the events.
        return amount if 0.0 <= amount <= MAX_EVENT_VALUE_LIMIT else None

    def add(self, profile: Profile, event: Event, check: bool = False) -> str:
        """Adds `event` to `profile`; returns an `Outcome`.

        With `check` (streaming), an event more than `allowed_lateness` behind the
        profile's `watermark_day` is refused as too late, and a repeated (user,
        event_id) as a duplicate. Batch runs deduplicate before (`ingest.dedupe`) and
        have no clock to be late against.
        """
        t = event.timestamp_us
        day = t // US_PER_DAY
        if check:
            if profile.watermark_day is not None and t < (profile.watermark_day * US_PER_DAY
                                                          - self.allowed_lateness // timedelta(microseconds=1)):
                return Outcome.TOO_LATE
            if event.event_id in profile.seen:
                return Outcome.DUPLICATE
            profile.seen[event.event_id] = day
        activity = profile.days.get(day)
        if activity is None:
            if profile.settled_before is not None and day < profile.settled_before:
                activity = profile.settled  # a late event for a folded day (batch: never)
            else:
                activity = profile.days[day] = Activity()
        new_order = False
        if event.event_type == "purchase":
            key = order_key(event)
            counted_on = profile.orders.get(key)
            if counted_on is None:
                new_order = True
            elif day < counted_on:  # an earlier line arrived late: the order counts on its first day
                self._activity_of(profile, counted_on * US_PER_DAY).orders -= 1
                new_order = True
            if new_order:
                profile.orders[key] = day
        activity.add_event(event, self.money(event) if event.event_type in ("purchase", "refund") else 0.0,
                           new_order)
        if event.session_id:
            self._sessionize(profile, event)
        return Outcome.ADDED

    def _sessionize(self, profile: Profile, event: Event) -> None:
        """Puts the event into its session, merging the sessions it bridges (Beam `Sessions`
        semantics: a run of events of one session id, consecutive ones less than the gap apart,
        within one UTC day)."""
        gap, t = self.gap_us, event.timestamp_us
        day = t // US_PER_DAY
        summaries = profile.sessions.setdefault(event.session_id, [])
        merged = SessionSummary.of(event)
        kept = []
        for summary in summaries:
            # Midnight ends a session too: every day then holds whole sessions, so a record
            # as of a midnight reads exactly the events before it.
            if summary.start_us // US_PER_DAY == day and summary.start_us - gap < t < summary.end_us + gap:
                self._activity_of(profile, summary.start_us).add_session(summary, -1)
                merged = merged.merged(summary)
            else:
                kept.append(summary)
        kept.append(merged)
        profile.sessions[event.session_id] = kept
        self._activity_of(profile, merged.start_us).add_session(merged, +1)

    @staticmethod
    def _activity_of(profile: Profile, t_us: int) -> Activity:
        day = t_us // US_PER_DAY
        if profile.settled_before is not None and day < profile.settled_before:
            return profile.settled
        activity = profile.days.get(day)
        if activity is None:
            activity = profile.days[day] = Activity()
        return activity

    # -- bounding the state -------------------------------------------------------------

    def fold(self, profile: Profile, today: int) -> None:
        """Folds the days no window reaches from `today` on, and forgets what can no longer
        change: ids and sessions older than the allowed lateness, orders of folded days."""
        before = today - self.retention_days + 1
        old = [day for day in profile.days if day < before]
        for day in sorted(old):
            profile.settled.merge(profile.days.pop(day))
        if old or profile.settled_before is not None:
            profile.settled_before = max(before, profile.settled_before or before)
        horizon = today - self.lateness_days - 1
        profile.seen = {eid: day for eid, day in profile.seen.items() if day >= horizon}
        profile.orders = {key: day for key, day in profile.orders.items() if day >= before}
        horizon_us = horizon * US_PER_DAY - self.gap_us
        profile.sessions = {sid: kept for sid, summaries in profile.sessions.items()
                            if (kept := [s for s in summaries if s.end_us >= horizon_us])}

    # -- scoring -----------------------------------------------------------------------

    def snapshot(self, user_key: str, profile: Profile, as_of_us: int, scoring: str) -> Optional[dict]:
        """The feature record of `profile` as of `as_of_us`; None when the user is not known yet."""
        end_day = -(-as_of_us // US_PER_DAY)  # days beginning before as_of
        days = sorted((d for d in profile.days if d < end_day), reverse=True)
        # The last day is a window of its own for the moments (`models.moments`), not a model input.
        windows = sorted({1, *WINDOWS_DAYS})
        totals: dict[int, Activity] = {}
        running, i = Activity(), 0
        before_week: Optional[int] = None  # the newest day before the 7-day window
        for length in windows:
            while i < len(days) and days[i] >= end_day - length:
                running.merge(profile.days[days[i]])
                i += 1
            totals[length] = running.copy()
            if length == 7 and i < len(days):
                before_week = days[i]
        for day in days[i:]:
            running.merge(profile.days[day])
        running.merge(profile.settled)
        lifetime = running
        if lifetime.events == 0:
            return None
        record = self.record(user_key, as_of_us, scoring, lifetime, totals)
        last_before_week = (profile.days[before_week].last_event_us if before_week is not None
                            else profile.settled.last_event_us)
        record.update(moment_facts(lifetime, totals, last_before_week))
        return record

    def record(self, user_key: str, as_of_us: int, scoring: str, life: Activity,
               windows: dict[int, Activity]) -> dict:
        """The feature record from lifetime and window totals (fields: `transforms/features/FEATURES.md`)."""
        day = US_PER_DAY
        w7, w30, w90 = windows[7], windows[30], windows[90]
        sessions = max(w30.sessions, 0)
        bought = life.purchase_lines > 0
        last_purchase = life.last_purchase_us if bought else None
        categorised = sum(w30.categories.values()) + w30.other_category
        top, top_count = (min(w30.categories.items(), key=lambda kv: (-kv[1], kv[0])) if w30.categories
                          else (None, 0))
        events30 = w30.events
        spend = max(0.0, life.spend - life.refunded)
        record = {
            "user_key": user_key,
            "as_of_us": as_of_us,
            "scoring": scoring,
            "feature_version": FEATURE_VERSION,
            "event_count": life.events,
            # Activity level
            "active_days_7d": float(w7.active_days),
            "active_days_30d": float(w30.active_days),
            "active_days_90d": float(w90.active_days),
            "sessions_30d": float(sessions),
            "days_since_last_event": (as_of_us - life.last_event_us) / day,
            "tenure_days": (as_of_us - life.first_event_us) / day,
            # Behaviour per session (30 days)
            "page_views_per_session": _ratio(w30.session_page_views, sessions),
            "product_views_per_session": _ratio(w30.session_product_views, sessions),
            "searches_per_session": _ratio(w30.session_searches, sessions),
            "cart_adds_per_session": _ratio(w30.session_cart_adds, sessions),
            "avg_session_duration_s": _ratio(w30.session_duration_us / US_PER_SECOND, sessions),
            "bounce_rate": _ratio(w30.bounces, sessions),
            "cart_abandonment_rate": _ratio(w30.abandoned_sessions, w30.cart_sessions),
            "purchase_session_share": _ratio(w30.purchase_sessions, sessions),
            "funnel_stage_7d": float(max(w7.funnel, 0)),
            # Channels, devices, e-mail (30 days)
            "social_share": _ratio(w30.social, events30),
            "app_share": _ratio(w30.channels[_APP], events30),
            "store_share": _ratio(w30.channels[_STORE], events30),
            "mobile_share": _ratio(w30.devices[_MOBILE], events30),
            "email_opens_30d": float(w30.email_opens),
            "email_ctr": (w30.email_clicks + 1.0) / (w30.email_opens + 2.0),
            # Time pattern, local time (30 days)
            **dict(zip(_SHARE_KEYS, (_ratio(n, events30) for n in w30.day_parts))),
            "weekend_share": _ratio(w30.weekend_events, events30),
            # Affinity (30 days)
            "top_category_share": _ratio(top_count, categorised),
            "category_entropy": category_entropy(w30),
            # Value (lifetime, reporting currency)
            "orders": float(life.orders),
            "orders_90d": float(w90.orders),
            "recency_days": (as_of_us - (last_purchase if bought else life.first_event_us)) / day,
            "spend_total": spend,
            "avg_order_value": _ratio(spend, life.orders),
            "refund_rate": _ratio(life.refunds, life.purchase_lines),
            # Behaviour over the whole history, and the evidence of each rate
            **lifetime_behaviour(life),
            # Not model inputs
            "first_seen_us": life.first_event_us,
            "last_event_us": life.last_event_us,
            "first_purchase_us": life.first_purchase_us if bought else None,
            "last_purchase_us": last_purchase,
            "purchase_days": life.purchase_days,
            "unpriced_lines": life.unpriced_lines,
            "top_category_30d": top,
            "funnel_stage_30d": FUNNEL_STAGES[max(w30.funnel, 0)],
            "reporting_currency": self.reporting_currency,
        }
        return record


def silent_too_long(as_of_us: int, last_event_us: int, max_silent: timedelta) -> bool:
    """Whether a user whose last event before `as_of_us` was at `last_event_us` is no longer
    scored as of it: both jobs score a user at a midnight only while their silence is
    shorter than `max_silent` (`FEATURES.md`, "Who is scored, and when")."""
    return as_of_us - last_event_us >= max_silent // timedelta(microseconds=1)


def build_profile(rules: ProfileRules, events: Iterable[Event]) -> Profile:
    """A profile of `events` (one user's, deduplicated), added in time order."""
    profile = Profile()
    for event in sorted(events, key=lambda e: (e.timestamp_us, e.source, e.event_id)):
        rules.add(profile, event)
    return profile
