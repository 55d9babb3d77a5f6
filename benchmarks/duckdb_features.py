"""The DuckDB SQL reference of the user-window features (variant c of the benchmark).

`compute` runs `duckdb_features.sql` over a JSON-lines event file and returns one dict
per user and 30-day/1-day sliding window, keyed like the pipeline's feature records
(`user_key` = HMAC pseudonym of the raw user id, `window_start_us`, `window_end_us`,
the features of `REFERENCE_FEATURES`). The test suite checks that they equal the
pipeline's records (`tests/benchmarks/test_duckdb_reference.py`).

Run alone::

    python -m benchmarks.duckdb_features events.jsonl
"""

from __future__ import annotations

import argparse
import datetime as dt
import pathlib
from typing import Optional

import duckdb

from benchmarks.pseudonyms import BENCH_KEY, pseudonymise_rows

SQL_PATH = pathlib.Path(__file__).with_name("duckdb_features.sql")

# The feature-record fields the SQL reproduces (every model feature plus some extras).
REFERENCE_FEATURES: tuple[str, ...] = (
    "event_count", "recency_days", "frequency", "purchase_days", "monetary_total", "monetary_avg",
    "email_opens", "email_clicks", "email_ctr", "social_interactions", "sessions",
    "avg_session_duration_s", "pages_per_session", "bounce_rate", "active_days", "product_views",
    "searches", "intensity", "funnel_stage", "cart_adds", "cart_abandonment_rate", "checkout_starts",
    "top_category_share", "category_entropy", "tenure_days", "share_night", "share_morning",
    "share_afternoon", "share_evening", "top_category", "first_seen_us", "first_purchase_us",
    "last_purchase_us",
)  # fmt: skip


def compute_raw(path: str, session_gap: dt.timedelta = dt.timedelta(minutes=30), window_days: int = 30,
                as_of_us: Optional[int] = None, threads: Optional[int] = None) -> list[dict]:
    """Runs the SQL; one dict per (raw user id, window), `user_id` not pseudonymised.

    Args:
        path: JSON-lines file (or glob).
        session_gap: inactivity that closes a session.
        window_days: window size in days (period: one day).
        as_of_us: keep windows ending by this time; None = midnight after the latest event.
        threads: DuckDB threads; None = DuckDB's default (all cores).
    """
    con = duckdb.connect()
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    cursor = con.execute(SQL_PATH.read_text(), {
        "path": str(path),
        "gap_us": session_gap // dt.timedelta(microseconds=1),
        "size_days": int(window_days),
        "as_of_us": as_of_us,
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
    print(f"{len(rows)} user windows")


if __name__ == "__main__":
    main()
