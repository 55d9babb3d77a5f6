"""Expected outputs worked out from generated input files, independently of the pipeline."""

from __future__ import annotations

import datetime as dt
import json

from transforms.ingest.privacy import DEMO_ID_KEY, pseudonymise

DAY = dt.timedelta(days=1)
END = dt.date(2026, 11, 1)


def expected_scorings(path, history_days):
    """(user_key, score_date) pairs the job must write, worked out from the raw records.

    The generator gives valid events ids "e-<seed>-<n>" and corrupt records other ids
    (or none); a valid event counts when it is consented. The as-of time is the midnight
    after the latest event; a user is scored as of it and the `history_days` midnights
    before it, from the first midnight after their first event on. A scoring as of a
    midnight describes the day before it.
    """
    first = {}
    for line in path.read_bytes().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict) or not str(record.get("event_id", "")).startswith("e-"):
            continue
        if (record.get("consent") or {}).get("personalization") is not True:
            continue
        stamp = record["timestamp"]
        when = (dt.datetime.fromtimestamp(stamp / 1000, dt.timezone.utc) if isinstance(stamp, int)
                else dt.datetime.fromisoformat(stamp).astimezone(dt.timezone.utc))
        user = record["user_id"]
        first[user] = min(first.get(user, when), when)
        first["__latest__"] = max(first.get("__latest__", when), when)
    latest = first.pop("__latest__")
    as_of = latest.date() + DAY
    pairs = set()
    for user, when in first.items():
        key = pseudonymise(DEMO_ID_KEY, user)
        for back in range(history_days + 1):
            midnight = as_of - back * DAY
            if when.date() < midnight:
                pairs.add((key, midnight - DAY))
    return pairs
