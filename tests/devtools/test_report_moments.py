"""The report's moment marks and the type x moment cross, on day counts worked out by hand."""

from __future__ import annotations

import datetime as dt

from devtools.report.moments import cross, mark, moment_series

D = [dt.date(2026, 10, 1) + dt.timedelta(days=k) for k in range(12)]


def test_mark_needs_the_ratio_and_three_users():
    # 100 users, baseline 2 %: 2 expected. 5 users (5 %) is a rise (>= 4 %, 3 more); 4 users is not (2 more).
    assert mark(0.05, 5, 100, 0.02) == "rise"
    assert mark(0.04, 4, 100, 0.02) is None
    # baseline 10 %: 10 expected; 5 users (5 %) is a fall (<= 5 %, 5 fewer); 6 is not (6 % > 5 %).
    assert mark(0.05, 5, 100, 0.10) == "fall"
    assert mark(0.06, 6, 100, 0.10) is None
    assert mark(0.5, 50, 100, None) is None  # no baseline yet
    assert mark(0.03, 3, 100, 0.0) == "rise"  # from nothing: 3 users


def test_moment_series_with_its_trailing_baseline():
    # 100 users a day; checkout_friction 1 user a day on days 0-9, 8 on day 10, 1 on day 11; the rest active.
    rows = []
    for k, day in enumerate(D):
        friction = 8 if k == 10 else 1
        rows += [{"day": day, "moment": "checkout_friction", "users": friction},
                 {"day": day, "moment": "active_as_usual", "users": 100 - friction}]
    out = moment_series(rows, start=D[7])
    assert out["days"] == [d.isoformat() for d in D[7:]] and out["totals"] == [100] * 5
    friction = out["series"]["checkout_friction"]
    assert friction["share"] == [0.01, 0.01, 0.01, 0.08, 0.01]
    # Day 10's baseline: days 3-9, 1 % each; day 11's: days 4-10, (6 x 1 + 8) / 7 = 2 %.
    assert friction["baseline"][3] == 0.01 and abs(friction["baseline"][4] - 0.02) < 1e-12
    assert friction["mark"] == [None, None, None, "rise", None]
    assert list(out["series"]) == ["checkout_friction", "active_as_usual"]  # the precedence order
    assert out["marks"] == [{"day": "2026-10-11", "moment": "checkout_friction", "mark": "rise", "share": 0.08,
                             "baseline": 0.01, "users": 8}]
    # Too few days before the first shown: no baseline, no mark.
    early = moment_series(rows, start=D[0])["series"]["checkout_friction"]
    assert early["baseline"][:3] == [None, None, None] and early["baseline"][3] == 0.01


def test_cross_fills_empty_cells_with_zero():
    got = cross([{"segment_id": 5, "moment": "checkout_friction", "users": 2},
                 {"segment_id": 0, "moment": "lapsed", "users": 7},
                 {"segment_id": 5, "moment": "lapsed", "users": 1}])
    assert got == {"moments": ["checkout_friction", "lapsed"], "segments": [0, 5],
                   "users": {"0": {"checkout_friction": 0, "lapsed": 7}, "5": {"checkout_friction": 2, "lapsed": 1}}}
