"""Fixed-size per-user partial aggregates and the combiners that build and merge them.

A `UserPartial` summarises one user's events and session summaries over some span of
event time (one window period, then a whole sliding window). It has a fixed number of
counters plus three collections whose size is bounded independently of the event count:

* ``active_days`` / ``purchase_days``: sets of UTC day numbers (days since the epoch);
  at most ``window_size / 1 day`` entries (30 by default), because a partial never
  spans more than one user window.
* ``categories``: at most `MAX_CATEGORIES` named counts; when a merge would exceed it,
  the smallest counts (ties: the larger name) are folded into ``other_category``.

Every field merges associatively and commutatively (sums, min, max, set union), and the
session sums are *signed* so that a retraction (see `transforms.features.sessions`) cancels a
session summary exactly. Hence the result does not depend on the order of the input.
Definitions of the features derived from a partial: `transforms/features/FEATURES.md`.
"""

from __future__ import annotations

import math
from typing import Iterable, Optional

import apache_beam as beam

from transforms.contracts.events import CHANNELS, Event
from transforms.features.sessions import SignedSession

US_PER_SECOND = 1_000_000
US_PER_HOUR = 3_600 * US_PER_SECOND
US_PER_DAY = 86_400 * US_PER_SECOND

# Devices reported in `device_mix`; anything else (or no device) counts as "other".
DEVICES: tuple[str, ...] = ("desktop", "mobile", "tablet", "other")
# Parts of the UTC day: name -> [start hour, end hour).
DAY_PARTS: tuple[tuple[str, int, int], ...] = (
    ("night", 0, 6),
    ("morning", 6, 12),
    ("afternoon", 12, 18),
    ("evening", 18, 24),
)
MAX_CATEGORIES = 32

# Funnel stages, ordinal = position.
FUNNEL_STAGES: tuple[str, ...] = ("awareness", "consideration", "intent", "purchase")
_FUNNEL_OF_TYPE: dict[str, int] = {
    "product_view": 1,
    "search": 1,
    "add_to_cart": 2,
    "checkout_start": 2,
    "purchase": 3,
}
_CHANNEL_INDEX = {name: i for i, name in enumerate(CHANNELS)}
_DEVICE_INDEX = {name: i for i, name in enumerate(DEVICES)}
_COUNTED_TYPES: dict[str, str] = {
    "page_view": "page_views",
    "product_view": "product_views",
    "search": "searches",
    "add_to_cart": "cart_adds",
    "checkout_start": "checkout_starts",
    "purchase": "purchases",
    "refund": "refunds",
    "email_open": "email_opens",
    "email_click": "email_clicks",
}


def _min(a: Optional[int], b: Optional[int]) -> Optional[int]:
    return b if a is None else a if b is None else min(a, b)


def _max(a: Optional[int], b: Optional[int]) -> Optional[int]:
    return b if a is None else a if b is None else max(a, b)


class UserPartial:
    """Mutable accumulator; see the module docstring for its size bound."""

    __slots__ = (
        "events", "first_seen_us",
        "page_views", "product_views", "searches", "cart_adds", "checkout_starts",
        "purchases", "refunds", "email_opens", "email_clicks", "social",
        "purchase_value", "refund_value", "first_purchase_us", "last_purchase_us",
        "funnel", "active_days", "purchase_days", "day_parts", "channels", "devices",
        "categories", "other_category",
        "sessions", "session_duration_us", "session_page_views", "bounces",
        "cart_sessions", "abandoned_sessions",
    )  # fmt: skip

    def __init__(self) -> None:
        self.events = 0
        self.first_seen_us: Optional[int] = None
        self.page_views = self.product_views = self.searches = 0
        self.cart_adds = self.checkout_starts = self.purchases = self.refunds = 0
        self.email_opens = self.email_clicks = self.social = 0
        self.purchase_value = 0.0
        self.refund_value = 0.0
        self.first_purchase_us: Optional[int] = None
        self.last_purchase_us: Optional[int] = None
        self.funnel = -1  # -1: no event yet
        self.active_days: set[int] = set()
        self.purchase_days: set[int] = set()
        self.day_parts = [0] * len(DAY_PARTS)
        self.channels = [0] * len(CHANNELS)
        self.devices = [0] * len(DEVICES)
        self.categories: dict[str, int] = {}
        self.other_category = 0
        # Signed session sums (a retraction subtracts a summary).
        self.sessions = 0
        self.session_duration_us = 0
        self.session_page_views = 0
        self.bounces = 0
        self.cart_sessions = 0
        self.abandoned_sessions = 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, UserPartial) and all(
            getattr(self, name) == getattr(other, name) for name in self.__slots__
        )

    def __repr__(self) -> str:
        return f"UserPartial(events={self.events}, sessions={self.sessions})"

    def __getstate__(self):
        return tuple(getattr(self, name) for name in self.__slots__)

    def __setstate__(self, state) -> None:
        for name, value in zip(self.__slots__, state):
            setattr(self, name, value)

    # -- adding inputs ---------------------------------------------------------------

    def add_event(self, event: Event) -> None:
        t = event.timestamp_us
        self.events += 1
        self.first_seen_us = _min(self.first_seen_us, t)
        counted = _COUNTED_TYPES.get(event.event_type)
        if counted is not None:
            setattr(self, counted, getattr(self, counted) + 1)
        if event.event_type == "social_share" or event.channel == "social":
            self.social += 1
        if event.event_type == "purchase":
            self.purchase_value += float(event.value or 0.0)
            self.first_purchase_us = _min(self.first_purchase_us, t)
            self.last_purchase_us = _max(self.last_purchase_us, t)
            self.purchase_days.add(t // US_PER_DAY)
        elif event.event_type == "refund":
            self.refund_value += float(event.value or 0.0)
        self.funnel = max(self.funnel, _FUNNEL_OF_TYPE.get(event.event_type, 0))
        self.active_days.add(t // US_PER_DAY)
        hour = (t % US_PER_DAY) // US_PER_HOUR
        self.day_parts[hour // 6] += 1
        self.channels[_CHANNEL_INDEX.get(event.channel or "other", _CHANNEL_INDEX["other"])] += 1
        device = (event.device or "other").lower()
        self.devices[_DEVICE_INDEX.get(device, _DEVICE_INDEX["other"])] += 1
        if event.category:
            self.categories[event.category] = self.categories.get(event.category, 0) + 1
            self._cap_categories()

    def add_session(self, signed: SignedSession) -> None:
        s, sign = signed.session, signed.sign
        self.sessions += sign
        self.session_duration_us += sign * (s.end_us - s.start_us)
        self.session_page_views += sign * s.page_views
        self.bounces += sign * int(s.bounce)
        self.cart_sessions += sign * int(s.reached_cart)
        self.abandoned_sessions += sign * int(s.abandoned_cart)

    def merge(self, other: "UserPartial") -> None:
        # Spelled out field by field: this runs once per partial per overlapping window,
        # and getattr/setattr over a name list cost about three times as much.
        self.events += other.events
        self.page_views += other.page_views
        self.product_views += other.product_views
        self.searches += other.searches
        self.cart_adds += other.cart_adds
        self.checkout_starts += other.checkout_starts
        self.purchases += other.purchases
        self.refunds += other.refunds
        self.email_opens += other.email_opens
        self.email_clicks += other.email_clicks
        self.social += other.social
        self.purchase_value += other.purchase_value
        self.refund_value += other.refund_value
        self.other_category += other.other_category
        self.sessions += other.sessions
        self.session_duration_us += other.session_duration_us
        self.session_page_views += other.session_page_views
        self.bounces += other.bounces
        self.cart_sessions += other.cart_sessions
        self.abandoned_sessions += other.abandoned_sessions
        self.first_seen_us = _min(self.first_seen_us, other.first_seen_us)
        self.first_purchase_us = _min(self.first_purchase_us, other.first_purchase_us)
        self.last_purchase_us = _max(self.last_purchase_us, other.last_purchase_us)
        if other.funnel > self.funnel:
            self.funnel = other.funnel
        self.active_days |= other.active_days
        self.purchase_days |= other.purchase_days
        self.day_parts = [a + b for a, b in zip(self.day_parts, other.day_parts)]
        self.channels = [a + b for a, b in zip(self.channels, other.channels)]
        self.devices = [a + b for a, b in zip(self.devices, other.devices)]
        if other.categories:
            categories = self.categories
            for name, n in other.categories.items():
                categories[name] = categories.get(name, 0) + n
            self._cap_categories()

    def _cap_categories(self) -> None:
        if len(self.categories) <= MAX_CATEGORIES:
            return
        ranked = sorted(self.categories.items(), key=lambda kv: (-kv[1], kv[0]))
        self.categories = dict(ranked[:MAX_CATEGORIES])
        self.other_category += sum(n for _, n in ranked[MAX_CATEGORIES:])


def merge_all(partials: Iterable[UserPartial]) -> UserPartial:
    merged = UserPartial()
    for partial in partials:
        merged.merge(partial)
    return merged


class _UserPartialCombineFn(beam.CombineFn):
    """A `UserPartial` accumulator: fixed size, merged field by field."""

    def create_accumulator(self) -> UserPartial:
        return UserPartial()

    def merge_accumulators(self, accumulators: Iterable[UserPartial]) -> UserPartial:
        accumulators = iter(accumulators)
        first = next(accumulators, None) or UserPartial()
        for acc in accumulators:
            first.merge(acc)
        return first

    def extract_output(self, acc: UserPartial) -> UserPartial:
        return acc


class PeriodPartialFn(_UserPartialCombineFn):
    """Events and signed session summaries of one user and one period -> `UserPartial`."""

    def add_input(self, acc: UserPartial, element: Event | SignedSession) -> UserPartial:
        if isinstance(element, SignedSession):
            acc.add_session(element)
        else:
            acc.add_event(element)
        return acc



class MergePartialsFn(_UserPartialCombineFn):
    """Period partials of one user -> the partial of a whole user window."""

    def add_input(self, acc: UserPartial, partial: UserPartial) -> UserPartial:
        acc.merge(partial)
        return acc


_SHARE_KEYS = tuple(f"share_{name}" for name, _, _ in DAY_PARTS)


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator) / float(denominator) if denominator > 0 else 0.0


def _shares(counts: list[int], total: int) -> list[float]:
    """Each count's share of `total` (0.0 when there is none), as `_ratio` but one call per list."""
    return [n / total for n in counts] if total > 0 else [0.0] * len(counts)


def finalize(p: UserPartial, window_start_us: int, window_end_us: int) -> dict:
    """The features of one user window (everything except identity and pane).

    Args:
        p: the merged partial of the window.
        window_start_us: window start, UTC microseconds (inclusive).
        window_end_us: window end, UTC microseconds (exclusive).

    Returns:
        A dict with every feature documented in `transforms/features/FEATURES.md`.
    """
    frequency = p.purchases
    monetary_total = max(0.0, p.purchase_value - p.refund_value)
    window_days = (window_end_us - window_start_us) / US_PER_DAY
    if p.last_purchase_us is None:
        recency_days = window_days
    else:
        recency_days = (window_end_us - p.last_purchase_us) / US_PER_DAY
    sessions = max(p.sessions, 0)
    active_days = len(p.active_days)
    categorised = sum(p.categories.values()) + p.other_category
    if p.categories:
        top_category, top_count = min(p.categories.items(), key=lambda kv: (-kv[1], kv[0]))
    else:
        top_category, top_count = None, 0
    entropy = 0.0
    for n in p.categories.values():
        if n > 0:
            share = n / categorised
            entropy -= share * math.log(share)
    if p.other_category > 0:
        share = p.other_category / categorised
        entropy -= share * math.log(share)
    funnel = max(p.funnel, 0)
    first_seen = p.first_seen_us if p.first_seen_us is not None else window_start_us
    features = {
        "event_count": p.events,
        "recency_days": recency_days,
        "frequency": float(frequency),
        "purchase_days": float(len(p.purchase_days)),
        "monetary_total": monetary_total,
        "monetary_avg": _ratio(monetary_total, frequency),
        "email_opens": float(p.email_opens),
        "email_clicks": float(p.email_clicks),
        "email_ctr": (p.email_clicks + 1.0) / (p.email_opens + 2.0),
        "social_interactions": float(p.social),
        "sessions": float(sessions),
        "avg_session_duration_s": _ratio(p.session_duration_us / US_PER_SECOND, sessions),
        "pages_per_session": _ratio(p.session_page_views, sessions),
        "bounce_rate": _ratio(p.bounces, sessions),
        "active_days": float(active_days),
        "product_views": float(p.product_views),
        "searches": float(p.searches),
        "intensity": _ratio(p.events, active_days),
        "funnel_stage": float(funnel),
        "cart_adds": float(p.cart_adds),
        "cart_abandonment_rate": _ratio(p.abandoned_sessions, p.cart_sessions),
        "checkout_starts": float(p.checkout_starts),
        "top_category_share": _ratio(top_count, categorised),
        "category_entropy": entropy,
        "tenure_days": (window_end_us - first_seen) / US_PER_DAY,
        **dict(zip(_SHARE_KEYS, _shares(p.day_parts, p.events))),
        # Non-model features.
        "top_category": top_category,
        "channel_mix": dict(zip(CHANNELS, _shares(p.channels, p.events))),
        "device_mix": dict(zip(DEVICES, _shares(p.devices, p.events))),
        "first_seen_us": p.first_seen_us,
        "is_new": p.first_seen_us is not None and p.first_seen_us >= window_end_us - 7 * US_PER_DAY,
        "funnel_stage_name": FUNNEL_STAGES[funnel],
        "first_purchase_us": p.first_purchase_us,
        "last_purchase_us": p.last_purchase_us,
    }
    return features
