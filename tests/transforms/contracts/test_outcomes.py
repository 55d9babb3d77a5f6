"""`first_line`: an error as the one line a user or a dead letter carries."""

from __future__ import annotations

import pytest

from transforms.contracts.outcomes import first_line


@pytest.mark.parametrize("error, line", [
    (ValueError("bad input\nTraceback details"), "bad input"),
    (ValueError("\n  \n  indented first\nsecond"), "indented first"),
    (KeyError(), "KeyError"),  # no message: the type says what it was
    (RuntimeError("x" * 600), "x" * 500),
])
def test_first_line(error, line):
    assert first_line(error) == line


def test_first_line_is_cut_at_the_limit():
    assert first_line(RuntimeError("abcdef"), limit=3) == "abc"
