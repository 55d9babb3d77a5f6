"""Variant d of the benchmark: the user-window features in a plain Python loop (orjson + dicts).

Same scope and output as `benchmarks.duckdb_features.compute` (valid, consented, unique
events; one dict per user and 30-day/1-day sliding window ending by the as-of time; the
features of `duckdb_features.REFERENCE_FEATURES`), so the test suite can check the two
against each other. No Beam, no SQL: read lines, keep per-user daily partials in dicts,
then sum the partials of each window.

Run alone::

    python -m benchmarks.python_loop events.jsonl
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
from collections import defaultdict
from typing import Optional

import orjson

from transforms.contracts.events import EVENT_TYPES
from benchmarks.pseudonyms import BENCH_KEY, pseudonymise_rows

US_PER_DAY = 86_400_000_000
US_PER_HOUR = 3_600_000_000
_TYPES = frozenset(EVENT_TYPES)
_FUNNEL = {"product_view": 1, "search": 1, "add_to_cart": 2, "checkout_start": 2, "purchase": 3}
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
# Daily partial: positions in a list.
(EVENTS, FIRST, PURCHASES, PVALUE, RVALUE, FIRST_P, LAST_P, OPENS, CLICKS, SOCIAL, PVIEWS, SEARCHES,
 CARTS, CHECKOUTS, FUNNEL, NIGHT, MORNING, AFTERNOON, EVENING) = range(19)
_COUNTED = {"purchase": PURCHASES, "email_open": OPENS, "email_click": CLICKS, "product_view": PVIEWS,
            "search": SEARCHES, "add_to_cart": CARTS, "checkout_start": CHECKOUTS}


def _timestamp_us(value) -> Optional[int]:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value * 1000
    try:
        parsed = dt.datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    if parsed.tzinfo is None:
        return None
    delta = parsed - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _read_unique(path: str) -> dict[tuple, tuple]:
    """(user_id, event_id) -> (ts_us, line_no, user_id, event_type, session_id, channel, category, value)."""
    unique: dict[tuple, tuple] = {}
    with open(path, "rb") as handle:
        for line_no, line in enumerate(handle):
            if not line.strip():
                continue
            obj = orjson.loads(line)
            if not (obj.get("consent") or {}).get("personalization") is True:
                continue
            kind = obj.get("event_type")
            event_id, user_id = obj.get("event_id"), obj.get("user_id")
            if kind not in _TYPES or event_id is None or user_id is None:
                continue
            ts = _timestamp_us(obj.get("timestamp"))
            if ts is None:
                continue
            props = obj.get("properties") or {}
            record = (ts, line_no, user_id, kind, obj.get("session_id"), obj.get("channel"),
                      props.get("category"), props.get("value") or 0.0)
            best = unique.get((user_id, event_id))
            if best is None or record[:2] < best[:2]:
                unique[(user_id, event_id)] = record
    return unique


def compute_raw(path: str, session_gap: dt.timedelta = dt.timedelta(minutes=30), window_days: int = 30,
                as_of_us: Optional[int] = None) -> list[dict]:
    """One dict per (raw `user_id`, window); see the module docstring."""
    gap_us = session_gap // dt.timedelta(microseconds=1)
    unique = _read_unique(path)
    daily: dict[str, dict[int, list]] = defaultdict(dict)
    daily_categories: dict[str, dict[int, dict[str, int]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(int)))
    session_events: dict[tuple, list] = defaultdict(list)
    latest = None
    for ts, _, user, kind, session_id, channel, category, value in unique.values():
        latest = ts if latest is None else max(latest, ts)
        day = ts // US_PER_DAY
        p = daily[user].get(day)
        if p is None:
            p = daily[user][day] = [0, ts, 0, 0.0, 0.0, None, None, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
        p[EVENTS] += 1
        p[FIRST] = min(p[FIRST], ts)
        slot = _COUNTED.get(kind)
        if slot is not None:
            p[slot] += 1
        if kind == "purchase":
            p[PVALUE] += float(value)
            p[FIRST_P] = ts if p[FIRST_P] is None else min(p[FIRST_P], ts)
            p[LAST_P] = ts if p[LAST_P] is None else max(p[LAST_P], ts)
        elif kind == "refund":
            p[RVALUE] += float(value)
        if kind == "social_share" or channel == "social":
            p[SOCIAL] += 1
        p[FUNNEL] = max(p[FUNNEL], _FUNNEL.get(kind, 0))
        p[NIGHT + (ts % US_PER_DAY) // US_PER_HOUR // 6] += 1
        if category is not None:
            daily_categories[user][day][category] += 1
        session_events[(user, session_id)].append((ts, kind))
    # Sessions: [sessions, duration_us, page_views, bounces, cart_sessions, abandoned] per start day.
    daily_sessions: dict[str, dict[int, list]] = defaultdict(lambda: defaultdict(lambda: [0, 0, 0, 0, 0, 0]))

    def close(user, run):
        s = daily_sessions[user][run[0][0] // US_PER_DAY]
        kinds = {kind for _, kind in run}
        s[0] += 1
        s[1] += run[-1][0] - run[0][0]
        s[2] += sum(kind == "page_view" for _, kind in run)
        s[3] += len(run) == 1
        s[4] += "add_to_cart" in kinds
        s[5] += "add_to_cart" in kinds and "purchase" not in kinds

    for (user, _), items in session_events.items():
        items.sort()
        run = [items[0]]
        for item in items[1:]:
            if item[0] - run[-1][0] >= gap_us:
                close(user, run)
                run = []
            run.append(item)
        close(user, run)
    if latest is None:
        return []
    as_of_day = (as_of_us if as_of_us is not None else (latest // US_PER_DAY + 1) * US_PER_DAY) // US_PER_DAY
    rows = []
    for user in sorted(daily):
        days = daily[user]
        ends = sorted({end for day in days for end in range(day + 1, day + 1 + window_days) if end <= as_of_day})
        for end in ends:
            parts = [days[d] for d in range(end - window_days, end) if d in days]
            if not parts:
                continue
            rows.append(_finalize(user, end, window_days, parts,
                                  [daily_sessions[user][d] for d in range(end - window_days, end)
                                   if d in daily_sessions[user]],
                                  [daily_categories[user][d] for d in range(end - window_days, end)
                                   if d in daily_categories[user]]))
    return rows


def _ratio(a: float, b: float) -> float:
    return a / b if b > 0 else 0.0


def _finalize(user: str, end_day: int, window_days: int, parts: list, sessions: list, categories: list) -> dict:
    total = [0 if i in (FIRST, FIRST_P, LAST_P) else sum(p[i] for p in parts) for i in range(19)]
    firsts = [p[FIRST_P] for p in parts if p[FIRST_P] is not None]
    lasts = [p[LAST_P] for p in parts if p[LAST_P] is not None]
    end_us = end_day * US_PER_DAY
    events, purchases = total[EVENTS], total[PURCHASES]
    monetary = max(0.0, total[PVALUE] - total[RVALUE])
    s = [sum(x[i] for x in sessions) for i in range(6)]
    counts: dict[str, int] = defaultdict(int)
    for day in categories:
        for name, n in day.items():
            counts[name] += n
    categorised = sum(counts.values())
    top = min(counts.items(), key=lambda kv: (-kv[1], kv[0])) if counts else (None, 0)
    entropy = -sum((n / categorised) * math.log(n / categorised) for n in counts.values())
    first_seen = min(p[FIRST] for p in parts)
    return {
        "user_id": user,
        "window_start_us": (end_day - window_days) * US_PER_DAY,
        "window_end_us": end_us,
        "event_count": events,
        "recency_days": (end_us - max(lasts)) / US_PER_DAY if lasts else float(window_days),
        "frequency": float(purchases),
        "purchase_days": float(sum(p[PURCHASES] > 0 for p in parts)),
        "monetary_total": monetary,
        "monetary_avg": _ratio(monetary, purchases),
        "email_opens": float(total[OPENS]),
        "email_clicks": float(total[CLICKS]),
        "email_ctr": (total[CLICKS] + 1.0) / (total[OPENS] + 2.0),
        "social_interactions": float(total[SOCIAL]),
        "sessions": float(s[0]),
        "avg_session_duration_s": _ratio(s[1] / 1e6, s[0]),
        "pages_per_session": _ratio(s[2], s[0]),
        "bounce_rate": _ratio(s[3], s[0]),
        "active_days": float(len(parts)),
        "product_views": float(total[PVIEWS]),
        "searches": float(total[SEARCHES]),
        "intensity": events / len(parts),
        "funnel_stage": float(max(p[FUNNEL] for p in parts)),
        "cart_adds": float(total[CARTS]),
        "cart_abandonment_rate": _ratio(s[5], s[4]),
        "checkout_starts": float(total[CHECKOUTS]),
        "top_category_share": _ratio(top[1], categorised),
        "category_entropy": entropy + 0.0,
        "tenure_days": (end_us - first_seen) / US_PER_DAY,
        "share_night": total[NIGHT] / events,
        "share_morning": total[MORNING] / events,
        "share_afternoon": total[AFTERNOON] / events,
        "share_evening": total[EVENING] / events,
        "top_category": top[0],
        "first_seen_us": first_seen,
        "first_purchase_us": min(firsts) if firsts else None,
        "last_purchase_us": max(lasts) if lasts else None,
    }


def compute(path: str, key: bytes, **kwargs) -> list[dict]:
    """`compute_raw`, with `user_id` replaced by its pseudonym `user_key` (HMAC-SHA256, hex)."""
    return pseudonymise_rows(compute_raw(path, **kwargs), key)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="JSON-lines event file")
    args = parser.parse_args(argv)
    print(f"{len(compute(args.input, BENCH_KEY))} user windows")


if __name__ == "__main__":
    main()
