"""The report's moments: sizes over time with rises and falls marked, and the type x moment cross.

A day's share of a moment is marked against its **trailing baseline**, the mean share of the
`TRAILING_DAYS` days before it (at least `MIN_TRAILING_DAYS` of them scored):

* ``rise``: share >= `RISE` x baseline, and at least `MIN_USERS` more users than the baseline
  share of the day's users (so that 1 -> 3 users in a moment is not an alarm);
* ``fall``: share <= `FALL` x baseline, and at least `MIN_USERS` fewer.

An incident (a checkout that breaks) or a campaign (a burst of browsing) shows as a rise of
one moment on the day after it starts (the daily scoring as of the midnight that ends it).
"""

from __future__ import annotations

import datetime as dt
from typing import Mapping, Optional, Sequence

from models.moments import MOMENTS

TRAILING_DAYS = 7
MIN_TRAILING_DAYS = 3
RISE = 2.0
FALL = 0.5
MIN_USERS = 3


def mark(share: float, users: int, total: int, baseline: Optional[float]) -> Optional[str]:
    """``rise``, ``fall`` or None for one day of one moment (module docstring)."""
    if baseline is None:
        return None
    expected = baseline * total
    if share >= RISE * baseline and users - expected >= MIN_USERS:
        return "rise"
    if share <= FALL * baseline and expected - users >= MIN_USERS:
        return "fall"
    return None


def moment_series(rows: Sequence[Mapping], start: dt.date) -> dict:
    """Per moment, users, shares, trailing baselines and marks of the days from `start` on.

    Args:
        rows: ``day``, ``moment``, ``users`` per day and moment (`moment_sizes_daily`), from
            `TRAILING_DAYS` before `start` on, so the first days have their baseline too.
        start: the first day shown.
    """
    days = sorted({r["day"] for r in rows})
    totals = {day: 0 for day in days}
    users: dict[str, dict[dt.date, int]] = {}
    for r in rows:
        totals[r["day"]] += int(r["users"])
        users.setdefault(r["moment"], {})[r["day"]] = int(r["users"])
    shown = [day for day in days if day >= start]
    order = [m for m in MOMENTS if m in users] + sorted(m for m in users if m not in MOMENTS)
    series = {}
    for moment in order:
        share = {day: users[moment].get(day, 0) / totals[day] for day in days if totals[day]}
        out = {"users": [], "share": [], "baseline": [], "mark": []}
        for day in shown:
            before = [share[d] for d in days if day - dt.timedelta(days=TRAILING_DAYS) <= d < day and d in share]
            baseline = sum(before) / len(before) if len(before) >= MIN_TRAILING_DAYS else None
            n = users[moment].get(day, 0)
            out["users"].append(n)
            out["share"].append(share.get(day, 0.0))
            out["baseline"].append(baseline)
            out["mark"].append(mark(share.get(day, 0.0), n, totals[day], baseline))
        series[moment] = out
    marks = [{"day": shown[i].isoformat(), "moment": m, "mark": s["mark"][i], "share": s["share"][i],
              "baseline": s["baseline"][i], "users": s["users"][i]}
             for m, s in series.items() for i in range(len(shown)) if s["mark"][i]]
    return {"days": [d.isoformat() for d in shown], "totals": [totals[d] for d in shown], "series": series,
            "marks": marks}


def cross(rows: Sequence[Mapping]) -> dict:
    """The type x moment cross of one day: ``segment_id``, ``moment``, ``users`` rows -> a table."""
    moments_seen = {r["moment"] for r in rows}
    columns = [m for m in MOMENTS if m in moments_seen] + sorted(moments_seen - set(MOMENTS))
    segments = sorted({int(r["segment_id"]) for r in rows})
    counts = {(int(r["segment_id"]), r["moment"]): int(r["users"]) for r in rows}
    return {"moments": columns, "segments": segments,
            "users": {str(s): {m: counts.get((s, m), 0) for m in columns} for s in segments}}
