"""Variant d of the benchmark: the v3 user profiles in a plain Python loop (orjson + dicts).

Same scope and output as `benchmarks.duckdb_features.compute` (one dict per user: the
feature record as of one time, the fields of `duckdb_features.REFERENCE_FIELDS`), so the
test suite can check both against the pipeline. No Beam, no SQL, and none of the
pipeline's feature code: read and validate the lines, keep each user's unique consented
events in a dict, then walk each user's events once in time order, counting into the
7/30/90-day windows and the lifetime totals as of the as-of time.

Run alone::

    python -m benchmarks.python_loop events.jsonl
"""

from __future__ import annotations

import argparse
import bisect
import csv
import datetime as dt
import math
from sys import intern
from typing import Optional

import orjson

from benchmarks.duckdb_features import DEFAULT_FX_RATES, MAX_EVENT_BYTES, validity_range
from benchmarks.pseudonyms import BENCH_KEY, pseudonymise_rows

US_PER_SECOND = 1_000_000
US_PER_MINUTE = 60 * US_PER_SECOND
US_PER_HOUR = 3_600 * US_PER_SECOND
US_PER_DAY = 86_400 * US_PER_SECOND
FEATURE_VERSION = "v3"  # what this reference computes (the test compares it with the pipeline's)
FUNNEL_NAMES = ("awareness", "consideration", "intent", "purchase")
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
# The event contract (transforms/contracts/events.py), spelled out.
_TYPES = frozenset({"page_view", "product_view", "search", "add_to_cart", "remove_from_cart", "checkout_start",
                    "purchase", "refund", "email_open", "email_click", "app_open", "social_share", "signup"})
_CHANNELS = frozenset({"web", "app", "email", "social", "store", "other"})
_TEXT_PROPERTIES = ("product_id", "category", "page", "search_query", "campaign", "order_id")
_FUNNEL = {"product_view": 1, "search": 1, "add_to_cart": 2, "checkout_start": 2, "purchase": 3}
_MONEY_TYPES = frozenset({"purchase", "refund"})

# A unique event: (timestamp_us, line number, event_type, session_id, channel, device, category,
# value, currency, order_id, offset minutes or None); keyed by event id per user.
TS, LINE, KIND, SESSION, CHANNEL, DEVICE, CATEGORY, VALUE, CURRENCY, ORDER, OFFSET = range(11)


class _Invalid(Exception):
    pass


def _text(obj: dict, name: str, max_chars: int = 1024, required: bool = False) -> Optional[str]:
    value = obj.get(name)
    if value is None:
        if required:
            raise _Invalid
        return None
    if type(value) is not str or not 1 <= len(value) <= max_chars:
        raise _Invalid
    return value


def _number(obj: dict, name: str) -> Optional[float]:
    value = obj.get(name)
    if value is None:
        return None
    if type(value) not in (int, float) or not math.isfinite(value):
        raise _Invalid
    return float(value)


def _timestamp(value) -> tuple[int, Optional[int]]:
    """(UTC microseconds, offset minutes or None) of integer epoch ms or an ISO 8601 string with an offset."""
    if type(value) is int:
        return value * 1000, None
    if type(value) is not str:
        raise _Invalid
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        raise _Invalid from None
    offset = parsed.utcoffset()
    if offset is None:
        raise _Invalid
    delta = parsed - _EPOCH
    return ((delta.days * 86_400 + delta.seconds) * US_PER_SECOND + delta.microseconds,
            (offset.days * 86_400 + offset.seconds) // 60)


def _event(obj, line_no: int, earliest_us: int, latest_us: int) -> tuple:
    """(user_id, event_id, personalization, event tuple) of a valid record; raises _Invalid."""
    if type(obj) is not dict:
        raise _Invalid
    event_id = _text(obj, "event_id", 128, required=True)
    user_id = _text(obj, "user_id", 256, required=True)
    kind = _text(obj, "event_type", required=True)
    if kind not in _TYPES:
        raise _Invalid
    if obj.get("timestamp") is None:
        raise _Invalid
    ts, offset = _timestamp(obj["timestamp"])
    if not earliest_us <= ts <= latest_us:
        raise _Invalid
    channel = _text(obj, "channel")
    if channel is not None and channel not in _CHANNELS:
        raise _Invalid
    props = obj.get("properties")
    if props is None:
        props = {}
    elif type(props) is not dict:
        raise _Invalid
    value = _number(props, "value")
    if value is None and kind in _MONEY_TYPES or value is not None and value < 0:
        raise _Invalid
    currency = _text(props, "currency")
    if currency is not None:
        currency = currency.upper()
        if len(currency) != 3 or not currency.isascii() or not currency.isalpha():
            raise _Invalid
    quantity = props.get("quantity")
    if quantity is not None and (type(quantity) is not int or quantity < 1):
        raise _Invalid
    consent = obj.get("consent")
    if consent is None:
        consent = {}
    elif type(consent) is not dict:
        raise _Invalid
    for flag in (consent.get("analytics"), consent.get("personalization")):
        if flag is not None and type(flag) is not bool:
            raise _Invalid
    session_id, device = _text(obj, "session_id"), _text(obj, "device")
    texts = [_text(props, name) for name in _TEXT_PROPERTIES]
    duration = _number(props, "duration_s")  # else the first alias given, in its unit: only the sign matters
    if duration is None:
        for alias in ("duration_ms", "duration_min"):
            if props.get(alias) is not None:
                duration = _number(props, alias)
                break
    if duration is not None and duration < 0:
        raise _Invalid
    category = texts[1]
    # Repeated values share one string (memory, at millions of events).
    return (user_id, event_id, consent.get("personalization") is True,
            (ts, line_no, intern(kind), session_id, channel and intern(channel), device and intern(device),
             category and intern(category), value, currency and intern(currency), texts[5], offset))


def read_unique(path: str, now_us: Optional[int] = None) -> tuple[dict[str, dict[str, tuple]], Optional[int]]:
    """Valid, consented events: user_id -> event_id -> the copy with the smallest (time, source).

    Returns the events and the latest time of any valid consented event, duplicates included.
    """
    earliest_us, latest_us = validity_range(now_us)
    users: dict[str, dict[str, tuple]] = {}
    latest = None
    with open(path, "rb") as handle:
        for line_no, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            raw = line.rstrip(b"\r\n")
            if len(raw) > MAX_EVENT_BYTES:
                continue
            try:
                user_id, event_id, consented, event = _event(orjson.loads(raw), line_no, earliest_us, latest_us)
            except (_Invalid, orjson.JSONDecodeError):
                continue
            if not consented:
                continue
            ts = event[TS]
            if latest is None or ts > latest:
                latest = ts
            events = users.get(user_id)
            if events is None:
                events = users[user_id] = {}
            best = events.get(event_id)
            # The source is "path:line": same file, so compare the line numbers as text.
            if best is None or (ts, str(line_no)) < (best[TS], str(best[LINE])):
                events[event_id] = event
    return users, latest


class Rates:
    """Units per EUR by currency from the row dated on or before a day (the first row before them)."""

    def __init__(self, path: Optional[str] = None):
        rows: dict[str, dict[int, float]] = {}
        with open(path or DEFAULT_FX_RATES, encoding="utf-8") as handle:
            lines = [line for line in handle if line.strip() and not line.lstrip().startswith("#")]
        for row in csv.DictReader(lines):
            day = (dt.date.fromisoformat(row["date"].strip()) - dt.date(1970, 1, 1)).days
            by_day = rows.setdefault(row["currency"].strip().upper(), {})
            by_day[day] = max(by_day.get(day, 0.0), float(row["units_per_eur"]))
        self._days = {c: sorted(by_day) for c, by_day in rows.items()}
        self._units = {c: [rows[c][d] for d in days] for c, days in self._days.items()}

    def units(self, currency: str, day: int) -> Optional[float]:
        days = self._days.get(currency)
        if days is None:
            return None
        return self._units[currency][max(bisect.bisect_right(days, day) - 1, 0)]


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else 0.0


def _entropy(counts: dict[str, int]) -> float:
    """Shannon entropy (nats) of a category distribution."""
    total = sum(counts.values())
    entropy = 0.0
    for n in counts.values():
        entropy -= n / total * math.log(n / total)
    return entropy


def profile(user_id: str, events: list, as_of_us: int, gap_us: int, rates: Rates, currency: str) -> dict:
    """The record of one user's events (unique, consented, before as_of, in time order)."""
    end_day = -(-as_of_us // US_PER_DAY)
    from7, from30, from90 = end_day - 7, end_day - 30, end_day - 90
    days7, days30, days90, purchase_days = set(), set(), set(), set()
    funnel7 = funnel30 = -1
    events30 = social = app = store = mobile = opens = clicks = weekend = 0
    parts = [0, 0, 0, 0]
    categories: dict[str, int] = {}
    # Lifetime: every event before as_of.
    life_social = life_app = life_email = life_mobile = life_desktop = life_opens = life_clicks = 0
    life_categories: dict[str, int] = {}
    purchase_lines = refunds = unpriced = 0
    spend = refunded = 0.0
    first_purchase = last_purchase = None
    orders: dict = {}  # order key -> day of its first line
    open_sessions: dict[str, list] = {}  # session_id -> [number, start, end, events, pv, prv, se, ca, pu]
    sessions: list[list] = []
    for event_id, e in events:
        ts, kind = e[TS], e[KIND]
        day = ts // US_PER_DAY
        life_social += kind == "social_share" or e[CHANNEL] == "social"
        life_app += e[CHANNEL] == "app"
        life_email += e[CHANNEL] == "email"
        life_mobile += e[DEVICE] is not None and e[DEVICE].lower() == "mobile"
        life_desktop += e[DEVICE] is not None and e[DEVICE].lower() == "desktop"
        life_opens += kind == "email_open"
        life_clicks += kind == "email_click"
        if e[CATEGORY] is not None:
            life_categories[e[CATEGORY]] = life_categories.get(e[CATEGORY], 0) + 1
        if day >= from90:
            days90.add(day)
            if day >= from30:
                days30.add(day)
                events30 += 1
                stage = _FUNNEL.get(kind, 0)
                funnel30 = max(funnel30, stage)
                if day >= from7:
                    days7.add(day)
                    funnel7 = max(funnel7, stage)
                channel = e[CHANNEL]
                social += kind == "social_share" or channel == "social"
                app += channel == "app"
                store += channel == "store"
                device = e[DEVICE]
                mobile += device is not None and device.lower() == "mobile"
                opens += kind == "email_open"
                clicks += kind == "email_click"
                local_day, local_rest = divmod(ts + (e[OFFSET] or 0) * US_PER_MINUTE, US_PER_DAY)
                parts[local_rest // (6 * US_PER_HOUR)] += 1
                weekend += (local_day + 3) % 7 >= 5  # 1970-01-01 was a Thursday
                if e[CATEGORY] is not None:
                    categories[e[CATEGORY]] = categories.get(e[CATEGORY], 0) + 1
        session_id = e[SESSION]
        session = None
        if session_id is not None:
            session = open_sessions.get(session_id)
            # the gap, or midnight UTC, ends a session
            if session is None or ts - session[2] >= gap_us or ts // US_PER_DAY != session[2] // US_PER_DAY:
                session = [0 if session is None else session[0] + 1, ts, ts, 0, 0, 0, 0, 0, 0]
                open_sessions[session_id] = session
                sessions.append(session)
            session[2] = ts
            session[3] += 1
            session[4] += kind == "page_view"
            session[5] += kind == "product_view"
            session[6] += kind == "search"
            session[7] += kind == "add_to_cart"
            session[8] += kind == "purchase"
        if kind in _MONEY_TYPES:
            cur = e[CURRENCY] or currency
            if cur == currency:
                amount = e[VALUE]
            else:
                units_from, units_to = rates.units(cur, day), rates.units(currency, day)
                amount = None if units_from is None else e[VALUE] / units_from * units_to
            if kind == "purchase":
                purchase_lines += 1
                purchase_days.add(day)
                if first_purchase is None:
                    first_purchase = ts
                last_purchase = ts
                if amount is None:
                    unpriced += 1
                else:
                    spend += amount
                key = (("o", e[ORDER]) if e[ORDER] is not None
                       else ("s", session_id) if session_id is not None
                       else ("e", event_id))
                if key not in orders:
                    orders[key] = day
            else:
                refunds += 1
                if amount is None:
                    unpriced += 1
                else:
                    refunded += amount
    # Session sums: [sessions, duration, page views, product views, searches, cart adds, bounces,
    # cart sessions, abandoned, purchase sessions], over 30 days and over the lifetime.
    recent, life = [0] * 10, [0] * 10
    for _, start, end, n, pv, prv, se, ca, pu in sessions:
        sums = (1, end - start, pv, prv, se, ca, n == 1, ca > 0, ca > 0 and pu == 0, pu > 0)
        life = [a + b for a, b in zip(life, sums)]
        if start // US_PER_DAY >= from30:
            recent = [a + b for a, b in zip(recent, sums)]
    n_sessions, duration_us, page_views, product_views, searches, cart_adds = recent[:6]
    bounces, cart_sessions, abandoned, purchase_sessions = recent[6:]
    categorised = sum(categories.values())
    top, top_n = min(categories.items(), key=lambda kv: (-kv[1], kv[0])) if categories else (None, 0)
    first_ts, last_ts = events[0][1][TS], events[-1][1][TS]
    n_orders = len(orders)
    total = max(0.0, spend - refunded)
    return {
        "user_id": user_id,
        "as_of_us": as_of_us,
        "scoring": "daily",
        "feature_version": FEATURE_VERSION,
        "event_count": len(events),
        "active_days_7d": float(len(days7)),
        "active_days_30d": float(len(days30)),
        "active_days_90d": float(len(days90)),
        "sessions_30d": float(n_sessions),
        "days_since_last_event": (as_of_us - last_ts) / US_PER_DAY,
        "tenure_days": (as_of_us - first_ts) / US_PER_DAY,
        "page_views_per_session": _ratio(page_views, n_sessions),
        "product_views_per_session": _ratio(product_views, n_sessions),
        "searches_per_session": _ratio(searches, n_sessions),
        "cart_adds_per_session": _ratio(cart_adds, n_sessions),
        "avg_session_duration_s": _ratio(duration_us / US_PER_SECOND, n_sessions),
        "bounce_rate": _ratio(bounces, n_sessions),
        "cart_abandonment_rate": _ratio(abandoned, cart_sessions),
        "purchase_session_share": _ratio(purchase_sessions, n_sessions),
        "funnel_stage_7d": float(max(funnel7, 0)),
        "social_share": _ratio(social, events30),
        "app_share": _ratio(app, events30),
        "store_share": _ratio(store, events30),
        "mobile_share": _ratio(mobile, events30),
        "email_opens_30d": float(opens),
        "email_ctr": (clicks + 1.0) / (opens + 2.0),
        "share_night": _ratio(parts[0], events30),
        "share_morning": _ratio(parts[1], events30),
        "share_afternoon": _ratio(parts[2], events30),
        "share_evening": _ratio(parts[3], events30),
        "weekend_share": _ratio(weekend, events30),
        "top_category_share": _ratio(top_n, categorised),
        "category_entropy": _entropy(categories),
        "orders": float(n_orders),
        "orders_90d": float(sum(day >= from90 for day in orders.values())),
        "recency_days": (as_of_us - (last_purchase if purchase_lines else first_ts)) / US_PER_DAY,
        "spend_total": total,
        "avg_order_value": _ratio(total, n_orders),
        "refund_rate": _ratio(refunds, purchase_lines),
        "lifetime_page_views_per_session": _ratio(life[2], life[0]),
        "lifetime_product_views_per_session": _ratio(life[3], life[0]),
        "lifetime_searches_per_session": _ratio(life[4], life[0]),
        "lifetime_cart_adds_per_session": _ratio(life[5], life[0]),
        "lifetime_avg_session_duration_s": _ratio(life[1] / US_PER_SECOND, life[0]),
        "lifetime_bounce_rate": _ratio(life[6], life[0]),
        "lifetime_purchase_session_share": _ratio(life[9], life[0]),
        "lifetime_cart_abandonment_rate": _ratio(life[8], life[7]),
        "lifetime_social_share": _ratio(life_social, len(events)),
        "lifetime_app_share": _ratio(life_app, len(events)),
        "lifetime_email_channel_share": _ratio(life_email, len(events)),
        "lifetime_mobile_share": _ratio(life_mobile, len(events)),
        "lifetime_desktop_share": _ratio(life_desktop, len(events)),
        "lifetime_category_entropy": _entropy(life_categories),
        "lifetime_email_ctr": _ratio(life_clicks, life_opens),
        "lifetime_email_opens_per_session": life_opens / max(life[0], 1),
        "lifetime_sessions": float(life[0]),
        "lifetime_events": float(len(events)),
        "lifetime_cart_sessions": float(life[7]),
        "lifetime_email_opens": float(life_opens),
        "first_seen_us": first_ts,
        "last_event_us": last_ts,
        "first_purchase_us": first_purchase,
        "last_purchase_us": last_purchase,
        "purchase_days": len(purchase_days),
        "unpriced_lines": unpriced,
        "top_category_30d": top,
        "funnel_stage_30d": FUNNEL_NAMES[max(funnel30, 0)],
        "reporting_currency": currency,
    }


def compute_raw(path: str, session_gap: dt.timedelta = dt.timedelta(minutes=30), as_of_us: Optional[int] = None,
                fx_rates: Optional[str] = None, reporting_currency: str = "EUR",
                now_us: Optional[int] = None) -> list[dict]:
    """One dict per raw `user_id` with an event before the as-of time; see the module docstring.

    Args: as `duckdb_features.compute_raw`.
    """
    gap_us = session_gap // dt.timedelta(microseconds=1)
    users, latest = read_unique(path, now_us)
    if latest is None:
        return []
    if as_of_us is None:
        as_of_us = (latest // US_PER_DAY + 1) * US_PER_DAY
    rates = Rates(fx_rates)
    rows = []
    for user_id in sorted(users):
        events = sorted(((event_id, e) for event_id, e in users[user_id].items() if e[TS] < as_of_us),
                        key=lambda item: (item[1][TS], item[0]))
        if events:
            rows.append(profile(user_id, events, as_of_us, gap_us, rates, reporting_currency))
    return rows


def compute(path: str, key: bytes, **kwargs) -> list[dict]:
    """`compute_raw`, with `user_id` replaced by its pseudonym `user_key` (HMAC-SHA256, hex)."""
    return pseudonymise_rows(compute_raw(path, **kwargs), key)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="JSON-lines event file")
    args = parser.parse_args(argv)
    print(f"{len(compute(args.input, BENCH_KEY))} user profiles")


if __name__ == "__main__":
    main()
