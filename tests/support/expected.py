"""Expected outputs worked out from generated input files, independently of the pipeline."""

from __future__ import annotations

import collections
import datetime as dt
import json

from transforms.ingest.privacy import DEMO_ID_KEY, pseudonymise

DAY = dt.timedelta(days=1)
END = dt.date(2026, 11, 1)


def expected_windows(path):
    """(user_key, window_end) pairs the job must assign, worked out from the raw records.

    The generator gives valid events ids "e-<seed>-<n>" and corrupt records other ids
    (or none); a valid event counts when it is consented and its id is new. Each of its
    user's 30-day windows ending at a midnight after the event and at most the midnight
    after the latest event (the as-of time) is expected.
    """
    seen, times = set(), collections.defaultdict(list)
    for line in path.read_bytes().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or not str(record.get("event_id", "")).startswith("e-"):
            continue
        consented = (record.get("consent") or {}).get("personalization") is True
        if not consented or record["event_id"] in seen:
            continue
        seen.add(record["event_id"])
        stamp = record["timestamp"]
        when = (dt.datetime.fromtimestamp(stamp / 1000, dt.timezone.utc) if isinstance(stamp, int)
                else dt.datetime.fromisoformat(stamp).astimezone(dt.timezone.utc))
        times[record["user_id"]].append(when)
    latest = max(t for ts in times.values() for t in ts)
    as_of = dt.datetime.combine(latest.date() + DAY, dt.time(), dt.timezone.utc)
    pairs = set()
    for user, stamps in times.items():
        key = pseudonymise(DEMO_ID_KEY, user)
        for when in stamps:
            first_end = dt.datetime.combine(when.date() + DAY, dt.time(), dt.timezone.utc)
            for offset in range(30):
                end = first_end + offset * DAY
                if end <= as_of:
                    pairs.add((key, end))
    return pairs
