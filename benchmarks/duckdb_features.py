"""The DuckDB SQL reference of the v3 user profiles (variant c of the benchmark).

`compute` runs `duckdb_features.sql` over a JSON-lines event file and returns one dict per
user: the user's feature record as of one time (`segments run` with ``--history_days 0``),
keyed like the pipeline's records (`user_key` = HMAC pseudonym of the raw user id,
`as_of_us`, `scoring`, `feature_version`, `event_count`, every `MODEL_FEATURES` field and
every `PROFILE_FACTS` field; see `REFERENCE_FIELDS`). The test suite checks that they equal
the pipeline's records (`tests/benchmarks/test_duckdb_reference.py`).

Run alone::

    python -m benchmarks.duckdb_features events.jsonl
"""

from __future__ import annotations

import argparse
import datetime as dt
import pathlib
import time
from typing import Optional

from benchmarks.pseudonyms import BENCH_KEY, pseudonymise_rows

SQL_PATH = pathlib.Path(__file__).with_name("duckdb_features.sql")
# transforms/contracts/reference/fx_rates.csv, found without importing the package.
DEFAULT_FX_RATES = (pathlib.Path(__file__).resolve().parent.parent
                    / "transforms" / "contracts" / "reference" / "fx_rates.csv")

# The record fields both references produce, in the pipeline's order (`ProfileRules.record`);
# `tests/benchmarks/test_duckdb_reference.py` checks them against `feature_spec`.
IDENTITY_FIELDS: tuple[str, ...] = ("user_key", "as_of_us", "scoring", "feature_version", "event_count")
MODEL_FIELDS: tuple[str, ...] = (
    "active_days_7d", "active_days_30d", "active_days_90d", "sessions_30d", "days_since_last_event", "tenure_days",
    "page_views_per_session", "product_views_per_session", "searches_per_session", "cart_adds_per_session",
    "avg_session_duration_s", "bounce_rate", "cart_abandonment_rate", "purchase_session_share", "funnel_stage_7d",
    "social_share", "app_share", "store_share", "mobile_share", "email_opens_30d", "email_ctr",
    "share_night", "share_morning", "share_afternoon", "share_evening", "weekend_share",
    "top_category_share", "category_entropy",
    "orders", "orders_90d", "recency_days", "spend_total", "avg_order_value", "refund_rate",
    "lifetime_page_views_per_session", "lifetime_product_views_per_session", "lifetime_searches_per_session",
    "lifetime_cart_adds_per_session", "lifetime_avg_session_duration_s", "lifetime_bounce_rate",
    "lifetime_purchase_session_share", "lifetime_cart_abandonment_rate", "lifetime_social_share",
    "lifetime_app_share", "lifetime_email_channel_share", "lifetime_mobile_share", "lifetime_desktop_share",
    "lifetime_category_entropy", "lifetime_email_ctr", "lifetime_email_opens_per_session",
    "lifetime_sessions", "lifetime_events", "lifetime_cart_sessions", "lifetime_email_opens",
)  # fmt: skip
FACT_FIELDS: tuple[str, ...] = (
    "first_seen_us", "last_event_us", "first_purchase_us", "last_purchase_us", "purchase_days", "unpriced_lines",
    "top_category_30d", "funnel_stage_30d", "reporting_currency",
)  # fmt: skip
REFERENCE_FIELDS: tuple[str, ...] = IDENTITY_FIELDS + MODEL_FIELDS + FACT_FIELDS

US_PER_DAY = 86_400_000_000
# The validator's defaults (transforms.ingest.validation.ValidationConfig).
MAX_EVENT_BYTES = 16 * 1024
MAX_FUTURE_SKEW = dt.timedelta(days=1)
MAX_AGE = dt.timedelta(days=3650)


def validity_range(now_us: Optional[int] = None) -> tuple[int, int]:
    """The event times the validator accepts around `now_us` (default: the wall clock), inclusive."""
    if now_us is None:
        now_us = time.time_ns() // 1000
    return (now_us - MAX_AGE // dt.timedelta(microseconds=1),
            now_us + MAX_FUTURE_SKEW // dt.timedelta(microseconds=1))


def compute_raw(path: str, session_gap: dt.timedelta = dt.timedelta(minutes=30), as_of_us: Optional[int] = None,
                fx_rates: Optional[str] = None, reporting_currency: str = "EUR", now_us: Optional[int] = None,
                threads: Optional[int] = None) -> list[dict]:
    """Runs the SQL; one dict per raw user id (`user_id`, not pseudonymised).

    Args:
        path: JSON-lines file (or glob).
        session_gap: inactivity that closes a session.
        as_of_us: the scoring time; None = the midnight after the latest event.
        fx_rates: exchange-rate CSV; None = the shipped table.
        reporting_currency: currency of the money features.
        now_us: "now" of the validator's time range; None = the wall clock.
        threads: DuckDB threads; None = DuckDB's default (all cores).
    """
    import duckdb  # here, so that the Python loop can share this module's constants without loading DuckDB

    con = duckdb.connect()
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    earliest_us, latest_us = validity_range(now_us)
    *setup, query = con.extract_statements(SQL_PATH.read_text())
    for statement in setup:  # the macros
        con.execute(statement)
    cursor = con.execute(query, {
        "path": str(path),
        "fx_path": str(fx_rates or DEFAULT_FX_RATES),
        "reporting_currency": reporting_currency,
        "gap_us": session_gap // dt.timedelta(microseconds=1),
        "as_of_us": as_of_us,
        "earliest_us": earliest_us,
        "latest_us": latest_us,
        "max_event_bytes": MAX_EVENT_BYTES,
    })
    names = [column[0] for column in cursor.description]
    return [dict(zip(names, row)) for row in cursor.fetchall()]


def compute(path: str, key: bytes, **kwargs) -> list[dict]:
    """`compute_raw`, with `user_id` replaced by its pseudonym `user_key` (HMAC-SHA256, hex)."""
    return pseudonymise_rows(compute_raw(path, **kwargs), key)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", help="JSON-lines event file")
    args = parser.parse_args(argv)
    rows = compute(args.input, BENCH_KEY)
    print(f"{len(rows)} user profiles")


if __name__ == "__main__":
    main()
