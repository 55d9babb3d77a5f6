"""Model-stage assignments for the warehouse tests, and expected values computed apart from the code.

`assignment(...)` builds the dict `models.handler.to_assignment` returns (the input of
`transforms.bigquery.rows.assignment_row`). The `expected_*` helpers compute what the row
should hold with plain Python (hashlib, json, datetime), never through `transforms.bigquery`.

Days are counted from `T0`, 2024-01-01 00:00:00 UTC (day 0). `closing(d)` is the daily
scoring as of the midnight that ends day `d` (it describes day `d`, is final);
`during(d, hours)` is an event scoring inside day `d`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from typing import Any, Mapping

from transforms.contracts.feature_spec import MODEL_FEATURES

UTC = dt.timezone.utc
HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
T0 = 1_704_067_200_000_000  # 2024-01-01 00:00:00 UTC
MODEL_A = "20240101-aaaaaaaaaaaa"  # model versions as models.artifact makes them: data end date, digest
MODEL_B = "20240102-bbbbbbbbbbbb"  # sorts after MODEL_A


def closing(day: int) -> int:
    """as_of of the daily scoring that closes `day` (its following midnight)."""
    return T0 + (day + 1) * DAY_US


def during(day: int, hours: float) -> int:
    """as_of of an event scoring `hours` into `day`."""
    return T0 + day * DAY_US + int(hours * HOUR_US)


def calendar_day(day: int) -> dt.date:
    return dt.date(2024, 1, 1) + dt.timedelta(days=day)


def utc(us: int) -> dt.datetime:
    """UTC microseconds as an aware datetime (what the client returns for a TIMESTAMP)."""
    return dt.datetime(1970, 1, 1, tzinfo=UTC) + dt.timedelta(microseconds=us)


def features(base: float = 0.0, **values: float) -> dict:
    """A complete features record: feature i is `base + i`, unless given in `values`."""
    unknown = set(values) - set(MODEL_FEATURES)
    assert not unknown, unknown
    return {name: values.get(name, base + i) for i, name in enumerate(MODEL_FEATURES)}


def profile(as_of_us: int, prospect: bool = False) -> dict:
    """The profile facts of `to_assignment` (with `_us` keys), first seen 10 days before `as_of_us`."""
    return {
        "first_seen_us": as_of_us - 10 * DAY_US,
        "last_event_us": as_of_us - HOUR_US,
        "first_purchase_us": None if prospect else as_of_us - 9 * DAY_US,
        "last_purchase_us": None if prospect else as_of_us - 2 * DAY_US,
        "purchase_days": 0 if prospect else 3,
        "unpriced_lines": 0,
        "top_category_30d": "shoes",
        "funnel_stage_30d": "browse" if prospect else "purchase",
        "reporting_currency": "EUR",
    }


def assignment(user: str, as_of_us: int, segment: int, *, model: str = MODEL_A, events: int = 5,
               prospect: bool = False, feature_values: Mapping[str, float] | None = None, **overrides: Any) -> dict:
    """A `to_assignment` dict; `scoring` is "daily" for a midnight `as_of_us`, else "event"."""
    a = {
        "user_key": user,
        "as_of_us": as_of_us,
        "scoring": "daily" if as_of_us % DAY_US == 0 else "event",
        "segment_id": segment,
        "segment_name": f"segment-{segment}",
        "distance": 0.125 * segment,
        "margin": 0.5,
        "rfm": {"r": 0, "f": 0, "m": 0, "rfm_segment": "Prospect"} if prospect
        else {"r": 4, "f": 2, "m": 3, "rfm_segment": "Loyal"},
        "p_alive": None if prospect else 0.75,
        "expected_purchases_30d": None if prospect else 1.25,
        "p_purchase_30d": None if prospect else 0.375,
        "p_purchase_90d": None if prospect else 0.75,
        "churn_risk": None if prospect else 0.25,
        "features": dict(feature_values) if feature_values is not None else features(events / 8),
        "profile": profile(as_of_us, prospect),
        "feature_version": "v2",
        "model_version": model,
        "event_count": events,
    }
    a.update(overrides)
    return a


# ----------------------------------------------------------------------------- expected values


def expected_row_key(user: str, date_text: str, model: str) -> str:
    """sha256 of user, score date (YYYY-MM-DD) and model version, joined by the unit separator."""
    return hashlib.sha256(f"{user}\x1f{date_text}\x1f{model}".encode("utf-8")).hexdigest()


def expected_content_sha256(row: Mapping[str, Any]) -> str:
    """sha256 of the row's content columns as compact JSON with sorted keys (floats in shortest form)."""
    content = {k: v for k, v in row.items() if k not in ("row_key", "content_sha256", "assigned_at")}
    text = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def timestamp_text(us: int) -> str:
    """UTC microseconds as BigQuery's canonical TIMESTAMP text, by calendar arithmetic."""
    return utc(us).strftime("%Y-%m-%d %H:%M:%S.%f UTC")
