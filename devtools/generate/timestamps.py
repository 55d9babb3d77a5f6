"""RFC 3339 timestamps with milliseconds, in UTC ("Z") or with a local offset."""

from __future__ import annotations

import datetime as dt

from devtools.generate.archetypes import DAY_MS, HOUR_MS

_date_cache: dict[int, str] = {}


def _date_text(day_number: int) -> str:
    text = _date_cache.get(day_number)
    if text is None:
        text = (dt.date(1970, 1, 1) + dt.timedelta(days=day_number)).isoformat()
        _date_cache[day_number] = text
    return text


def format_timestamp(ts_ms: int, offset_min: int, zulu: bool) -> str:
    """RFC 3339 with milliseconds: UTC with "Z" when `zulu`, else local time with the given offset."""
    if zulu:
        offset_min = 0
    local = ts_ms + offset_min * 60_000
    day, rem = divmod(local, DAY_MS)
    hour, rem = divmod(rem, HOUR_MS)
    minute, rem = divmod(rem, 60_000)
    second, milli = divmod(rem, 1000)
    if zulu:
        suffix = "Z"
    else:
        sign = "+" if offset_min >= 0 else "-"
        suffix = f"{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"
    return f"{_date_text(day)}T{hour:02d}:{minute:02d}:{second:02d}.{milli:03d}{suffix}"
