"""`Activity`: what one user did over a span of time, as a fixed-size, mergeable accumulator.

A user's profile (`transforms.features.profile`) keeps one `Activity` per UTC day it holds
and one for everything older; rolling windows and lifetime figures are merges of them.
Every field merges associatively and commutatively (sums, min, max), so the result does
not depend on the order of the days. Session sums are *signed*: when an out-of-order
event changes a session, the old summary is subtracted and the new one added.

Size: fixed counters, 4 part-of-day, 6 channel and 4 device counts, and at most
`MAX_CATEGORIES` named category counts (the smallest are folded into ``other_category``
beyond that), whatever the number of events. Definitions of the features derived from
it: `transforms/features/FEATURES.md`.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

from transforms.contracts.events import CHANNELS, Event

US_PER_SECOND = 1_000_000
US_PER_MINUTE = 60 * US_PER_SECOND
US_PER_HOUR = 3_600 * US_PER_SECOND
US_PER_DAY = 86_400 * US_PER_SECOND

# Devices counted; anything else (or none) counts as "other".
DEVICES: tuple[str, ...] = ("desktop", "mobile", "tablet", "other")
# Parts of the local day: name -> [start hour, end hour).
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
    "product_view": 1, "search": 1, "add_to_cart": 2, "checkout_start": 2, "purchase": 3,
}
_COUNTED_TYPES: dict[str, str] = {
    "page_view": "page_views",
    "product_view": "product_views",
    "search": "searches",
    "add_to_cart": "cart_adds",
    "checkout_start": "checkout_starts",
    "purchase": "purchase_lines",
    "refund": "refunds",
    "email_open": "email_opens",
    "email_click": "email_clicks",
}
_CHANNEL_INDEX = {name: i for i, name in enumerate(CHANNELS)}
_DEVICE_INDEX = {name: i for i, name in enumerate(DEVICES)}
_OTHER_CHANNEL = _CHANNEL_INDEX["other"]
_OTHER_DEVICE = _DEVICE_INDEX["other"]


def local_hour_and_weekday(event: Event) -> tuple[int, int]:
    """The event's hour (0-23) and weekday (Monday 0) in its own local time.

    Local time is UTC plus the offset the timestamp was written with; a timestamp sent as
    epoch milliseconds carries none, and counts in UTC.
    """
    local_us = event.timestamp_us + (event.utc_offset_min or 0) * US_PER_MINUTE
    day, rest = divmod(local_us, US_PER_DAY)
    return rest // US_PER_HOUR, (day + 3) % 7  # 1970-01-01 was a Thursday


class SessionSummary(NamedTuple):
    """One session of one user: a run of events sharing a session id, less than the gap apart.

    `start_us`/`end_us` are its first and last event times; its duration is their difference.
    """

    start_us: int
    end_us: int
    events: int
    page_views: int
    product_views: int
    searches: int
    cart_adds: int
    purchases: int
    checkout_starts: int = 0  # a default: summaries kept by a job before the field existed unpickle

    @classmethod
    def of(cls, event: Event) -> "SessionSummary":
        kind = event.event_type
        return cls(event.timestamp_us, event.timestamp_us, 1, kind == "page_view", kind == "product_view",
                   kind == "search", kind == "add_to_cart", kind == "purchase", kind == "checkout_start")

    def merged(self, other: "SessionSummary") -> "SessionSummary":
        return SessionSummary(min(self.start_us, other.start_us), max(self.end_us, other.end_us),
                              *(a + b for a, b in zip(self[2:], other[2:])))


def _min(a: Optional[int], b: Optional[int]) -> Optional[int]:
    return b if a is None else a if b is None else min(a, b)


def _max(a: Optional[int], b: Optional[int]) -> Optional[int]:
    return b if a is None else a if b is None else max(a, b)


class Activity:
    """Mutable accumulator of one user's activity; see the module docstring."""

    __slots__ = (
        "events", "active_days", "first_event_us", "last_event_us",
        "page_views", "product_views", "searches", "cart_adds", "checkout_starts",
        "purchase_lines", "purchase_days", "orders", "refunds", "email_opens", "email_clicks", "social",
        "spend", "refunded", "unpriced_lines", "first_purchase_us", "last_purchase_us", "funnel",
        "day_parts", "weekend_events", "channels", "devices", "categories", "other_category",
        "sessions", "session_duration_us", "session_events", "session_page_views", "session_product_views",
        "session_searches", "session_cart_adds", "bounces", "cart_sessions", "abandoned_sessions",
        "purchase_sessions", "unconverted_checkouts",
    )  # fmt: skip

    def __init__(self) -> None:
        self.events = self.active_days = 0
        self.first_event_us: Optional[int] = None
        self.last_event_us: Optional[int] = None
        self.page_views = self.product_views = self.searches = self.cart_adds = self.checkout_starts = 0
        self.purchase_lines = self.purchase_days = self.orders = self.refunds = 0
        self.email_opens = self.email_clicks = self.social = 0
        self.spend = 0.0  # purchase value, reporting currency
        self.refunded = 0.0  # refund value, reporting currency
        self.unpriced_lines = 0  # purchase or refund lines whose currency has no rate
        self.first_purchase_us: Optional[int] = None
        self.last_purchase_us: Optional[int] = None
        self.funnel = -1  # -1: no event yet
        self.day_parts = [0] * len(DAY_PARTS)
        self.weekend_events = 0
        self.channels = [0] * len(CHANNELS)
        self.devices = [0] * len(DEVICES)
        self.categories: dict[str, int] = {}
        self.other_category = 0
        # Signed session sums (a retraction subtracts a summary).
        self.sessions = self.session_duration_us = self.session_events = 0
        self.session_page_views = self.session_product_views = self.session_searches = self.session_cart_adds = 0
        self.bounces = self.cart_sessions = self.abandoned_sessions = self.purchase_sessions = 0
        # `checkout_start` events in sessions without a purchase: a payment that fails and is
        # retried counts every attempt, a plain change of mind once.
        self.unconverted_checkouts = 0

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Activity) and all(
            getattr(self, name) == getattr(other, name) for name in self.__slots__)

    def __repr__(self) -> str:
        return f"Activity(events={self.events}, active_days={self.active_days}, orders={self.orders})"

    def __getstate__(self):
        return tuple(getattr(self, name) for name in self.__slots__)

    def __setstate__(self, state) -> None:
        if len(state) < len(self.__slots__):
            # Kept by a job before the later fields existed (a streaming job updated in place):
            # those start from 0 (fields are only ever appended).
            self.__init__()
        for name, value in zip(self.__slots__, state):
            setattr(self, name, value)

    def copy(self) -> "Activity":
        twin = Activity()
        twin.__setstate__(self.__getstate__())
        twin.day_parts, twin.channels, twin.devices = list(self.day_parts), list(self.channels), list(self.devices)
        twin.categories = dict(self.categories)
        return twin

    # -- one day's inputs --------------------------------------------------------------

    def add_event(self, event: Event, money: Optional[float], new_order: bool) -> None:
        """Adds an event to the Activity of its UTC day.

        Args:
            event: the event.
            money: its value in the reporting currency (purchases and refunds), None when
                its currency has no rate.
            new_order: it is the first line of an order (purchases only).
        """
        t = event.timestamp_us
        if self.events == 0:
            self.active_days = 1
        self.events += 1
        self.first_event_us = _min(self.first_event_us, t)
        self.last_event_us = _max(self.last_event_us, t)
        kind = event.event_type
        counted = _COUNTED_TYPES.get(kind)
        if counted is not None:
            setattr(self, counted, getattr(self, counted) + 1)
        if kind == "social_share" or event.channel == "social":
            self.social += 1
        if kind == "purchase":
            if self.purchase_lines == 1:
                self.purchase_days = 1
            self.orders += new_order
            self.first_purchase_us = _min(self.first_purchase_us, t)
            self.last_purchase_us = _max(self.last_purchase_us, t)
            if money is None:
                self.unpriced_lines += 1
            else:
                self.spend += money
        elif kind == "refund":
            if money is None:
                self.unpriced_lines += 1
            else:
                self.refunded += money
        stage = _FUNNEL_OF_TYPE.get(kind, 0)
        if stage > self.funnel:
            self.funnel = stage
        hour, weekday = local_hour_and_weekday(event)
        self.day_parts[hour // 6] += 1
        self.weekend_events += weekday >= 5
        self.channels[_CHANNEL_INDEX.get(event.channel, _OTHER_CHANNEL)] += 1
        device = event.device.lower() if event.device else "other"
        self.devices[_DEVICE_INDEX.get(device, _OTHER_DEVICE)] += 1
        if event.category:
            self.categories[event.category] = self.categories.get(event.category, 0) + 1
            if len(self.categories) > MAX_CATEGORIES:
                self._cap_categories()

    def add_session(self, s: SessionSummary, sign: int) -> None:
        """Adds (+1) or retracts (-1) a session, in the Activity of the day it started."""
        self.sessions += sign
        self.session_duration_us += sign * (s.end_us - s.start_us)
        self.session_events += sign * s.events
        self.session_page_views += sign * s.page_views
        self.session_product_views += sign * s.product_views
        self.session_searches += sign * s.searches
        self.session_cart_adds += sign * s.cart_adds
        self.bounces += sign * (s.events == 1)
        self.cart_sessions += sign * (s.cart_adds > 0)
        self.abandoned_sessions += sign * (s.cart_adds > 0 and s.purchases == 0)
        self.purchase_sessions += sign * (s.purchases > 0)
        self.unconverted_checkouts += sign * (s.checkout_starts if s.purchases == 0 else 0)

    # -- merging -----------------------------------------------------------------------

    def merge(self, o: "Activity") -> None:
        # Spelled out field by field: this runs once per day per window of every
        # snapshot, and getattr/setattr over a name list cost several times as much.
        self.events += o.events
        self.active_days += o.active_days
        self.first_event_us = _min(self.first_event_us, o.first_event_us)
        self.last_event_us = _max(self.last_event_us, o.last_event_us)
        self.page_views += o.page_views
        self.product_views += o.product_views
        self.searches += o.searches
        self.cart_adds += o.cart_adds
        self.checkout_starts += o.checkout_starts
        self.purchase_lines += o.purchase_lines
        self.purchase_days += o.purchase_days
        self.orders += o.orders
        self.refunds += o.refunds
        self.email_opens += o.email_opens
        self.email_clicks += o.email_clicks
        self.social += o.social
        self.spend += o.spend
        self.refunded += o.refunded
        self.unpriced_lines += o.unpriced_lines
        self.first_purchase_us = _min(self.first_purchase_us, o.first_purchase_us)
        self.last_purchase_us = _max(self.last_purchase_us, o.last_purchase_us)
        if o.funnel > self.funnel:
            self.funnel = o.funnel
        self.day_parts = [a + b for a, b in zip(self.day_parts, o.day_parts)]
        self.weekend_events += o.weekend_events
        self.channels = [a + b for a, b in zip(self.channels, o.channels)]
        self.devices = [a + b for a, b in zip(self.devices, o.devices)]
        if o.categories:
            categories = self.categories
            for name, n in o.categories.items():
                categories[name] = categories.get(name, 0) + n
            if len(categories) > MAX_CATEGORIES:
                self._cap_categories()
        self.other_category += o.other_category
        self.sessions += o.sessions
        self.session_duration_us += o.session_duration_us
        self.session_events += o.session_events
        self.session_page_views += o.session_page_views
        self.session_product_views += o.session_product_views
        self.session_searches += o.session_searches
        self.session_cart_adds += o.session_cart_adds
        self.bounces += o.bounces
        self.cart_sessions += o.cart_sessions
        self.abandoned_sessions += o.abandoned_sessions
        self.purchase_sessions += o.purchase_sessions
        self.unconverted_checkouts += o.unconverted_checkouts

    def _cap_categories(self) -> None:
        ranked = sorted(self.categories.items(), key=lambda kv: (-kv[1], kv[0]))
        self.categories = dict(ranked[:MAX_CATEGORIES])
        self.other_category += sum(n for _, n in ranked[MAX_CATEGORIES:])
