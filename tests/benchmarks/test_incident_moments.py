"""The acceptance measurement of the checkout-friction moment (benchmarks/incident_moments.py):
its arithmetic on rows worked out by hand, and the whole measurement at a small size."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from benchmarks.incident_moments import measure, run_measurement
from devtools.generate.incidents import parse_incident

US_PER_DAY = 86_400_000_000
INCIDENT = parse_incident("checkout_failure:2026-10-11:2026-10-18:0.5")


def _midnight_after(day: dt.date) -> int:
    return ((day - dt.date(1970, 1, 1)).days + 1) * US_PER_DAY


def test_measure_by_hand():
    # Two affected users (a, b) and two unaffected (c, d), scored every day from 2026-10-04 to 2026-10-24.
    # a is in friction on 10-05 (before) and from 10-11 to 10-16; c is in friction on 10-12.
    rows = []
    day = dt.date(2026, 10, 4)
    while day <= dt.date(2026, 10, 24):
        friction = {"a": day == dt.date(2026, 10, 5) or dt.date(2026, 10, 11) <= day <= dt.date(2026, 10, 16),
                    "c": day == dt.date(2026, 10, 12)}
        for user in "abcd":
            rows.append({"user_key": user, "as_of_us": _midnight_after(day),
                         "moment": "checkout_friction" if friction.get(user) else "active_as_usual"})
        day += dt.timedelta(days=1)
    v = measure(rows, {"a", "b"}, INCIDENT)
    assert (v.affected_users, v.unaffected_users) == (2, 2)
    assert v.before_mean == pytest.approx(0.5 / 7)  # 10-04..10-10: a on one day of 7, half the group
    assert v.before_max == 0.5 and v.first_day == 0.5 and v.rises  # 0.5 >= 3 x 0.0714
    assert v.week_after == 0.0 and v.falls_back  # 10-24: 10-17 + 7 days
    assert v.unaffected_before == 0.0 and v.unaffected_during == pytest.approx(0.5 / 7)
    # c alone during the incident, nobody before: P(X = 1 | 1, 1/2) both sides = 1.
    assert (v.unaffected_users_before, v.unaffected_users_during, v.unaffected_p) == (0, 1, 1.0)
    assert v.unaffected_still
    # 9 users during against 1 before: 2 x P(X >= 9 | 10, 1/2) = 2 x 11 / 1024 = 0.0215, still;
    # 10 against 0: 2 / 1024 = 0.00195, a move.
    assert dataclasses.replace(v, unaffected_users_before=1, unaffected_users_during=9).unaffected_p == \
        pytest.approx(22 / 1024)
    assert not dataclasses.replace(v, unaffected_users_before=0, unaffected_users_during=10).unaffected_still
    with pytest.raises(ValueError, match="cover"):
        measure([r for r in rows if r["as_of_us"] < _midnight_after(dt.date(2026, 10, 20))], {"a", "b"}, INCIDENT)


def test_checkout_incident_is_seen_in_batch(tmp_path):
    """Generated data, the batch job, the shipped model's thresholds: the affected users' share in
    checkout_friction rises threefold on the incident's first day, is back a week after it ends,
    and the unaffected users' share stays where it was."""
    verdict, incident, _ = run_measurement(users=400, days=45, seed=29, end=dt.date(2026, 11, 1), share=0.6,
                                           folder=tmp_path)
    assert verdict.rises, (verdict.first_day, verdict.before_mean)
    assert verdict.falls_back, (verdict.week_after, verdict.before_max)
    assert verdict.unaffected_still, (verdict.unaffected_during, verdict.unaffected_before)
