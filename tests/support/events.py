"""Hypothesis strategies of event sets, and helpers to run them through pipelines."""

from __future__ import annotations

from apache_beam.transforms.window import TimestampedValue
from hypothesis import strategies as st

from transforms.contracts.events import CHANNELS, Event

SEC = 1_000_000
MIN = 60 * SEC
DAY0 = 20_000 * 86_400 * SEC

KINDS = ("page_view", "product_view", "search", "add_to_cart", "checkout_start", "purchase", "refund",
         "email_open", "email_click", "social_share")


@st.composite
def event_sets(draw):
    n = draw(st.integers(min_value=1, max_value=12))
    events = []
    for i in range(n):
        kind = draw(st.sampled_from(KINDS))
        events.append(Event(
            event_id=f"e{i}",
            user_id=draw(st.sampled_from(("u1", "u2"))),
            event_type=kind,
            # three days, minute resolution, so that sessions (30 min gap) form and merge
            timestamp_us=DAY0 + draw(st.integers(min_value=0, max_value=3 * 24 * 60)) * MIN,
            session_id=draw(st.sampled_from((None, None, "s1"))),
            channel=draw(st.sampled_from((None,) + CHANNELS)),
            device=draw(st.sampled_from((None, "desktop", "mobile", "fridge"))),
            category=draw(st.sampled_from((None, "shoes", "bags", "hats"))),
            value=draw(st.sampled_from((0.1, 9.99, 20.0))) if kind in ("purchase", "refund") else None,
            source=f"prop:{i}",
        ))
    shuffled = draw(st.permutations(events))
    repeated = draw(st.lists(st.sampled_from(events), max_size=4))
    return events, list(shuffled) + repeated


def prefixed(events, branch):
    return [TimestampedValue(e._replace(user_id=f"{branch}|{e.user_id}"), e.timestamp_us / SEC) for e in events]
