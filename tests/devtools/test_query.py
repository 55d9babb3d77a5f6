"""`segments query`'s text tables: numbers right-aligned, long cells cut, NULLs and floats readable."""

from __future__ import annotations

import datetime as dt

from devtools.query import format_table, view_query


def test_a_table_aligns_numbers_right_and_text_left():
    table = format_table(["segment_name", "users"], [["Window shoppers", 162], ["Casual visitors", 63]])
    assert table.splitlines() == [
        "segment_name     users",
        "---------------  -----",
        "Window shoppers    162",
        "Casual visitors     63",
        "(2 rows)",
    ]


def test_cells_are_readable():
    table = format_table(["a", "b", "c", "d", "e"], [[None, 0.123456789, True, dt.datetime(2026, 12, 7, 1, 2, 3),
                                                     {"r": 1.0000001}]])
    row = table.splitlines()[2]
    assert row.split("  ")[:4] == ["NULL", "0.123457", "true", "2026-12-07 01:02:03"]
    assert row.endswith('{"r": 1.0}')
    assert table.endswith("(1 row)")


def test_a_long_cell_is_cut_with_an_ellipsis():
    table = format_table(["text"], [["x" * 100]], max_width=10)
    assert table.splitlines()[2] == "x" * 9 + "…"


def test_an_empty_result_is_a_header_and_no_rows():
    assert format_table(["a"], []).splitlines() == ["a", "-", "(0 rows)"]


def test_a_view_query_names_the_project_and_dataset():
    sql = view_query("p", "d", "current_segment")
    assert "`p.d.current_segment`" in sql
