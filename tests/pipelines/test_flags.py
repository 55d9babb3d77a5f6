"""The shared parsers of command-line values: what each accepts, what it refuses and how it says so."""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys

import pytest

from pipelines import flags


@pytest.mark.parametrize("parse, text, value", [
    (flags.int_in(1, 10), "10", 10),
    (flags.int_in(0, 10), "0", 0),
    (flags.non_negative_int(5), "5", 5),
    (flags.float_in(2.5), "2.5", 2.5),
    (flags.non_negative_float, "0", 0.0),
    (flags.positive_int, "1", 1),
    (flags.sha256_hex, " " + "AB" * 32 + " ", "ab" * 32),
    (flags.currency_code, "usd", "USD"),
    (flags.iso_date, "2026-02-28", dt.date(2026, 2, 28)),
    (flags.subscription_path, "projects/p/subscriptions/s", "projects/p/subscriptions/s"),
])
def test_accepted_values(parse, text, value):
    assert parse(text) == value


@pytest.mark.parametrize("parse, text, words", [
    (flags.int_in(1, 10), "11", "positive integer at most 10"),
    (flags.int_in(1, 10), "x", "must be an integer"),
    (flags.int_in(2, 10), "1", "from 2 to 10"),
    (flags.non_negative_int(5), "-1", "from 0 to 5"),
    (flags.float_in(2.5), "nan", "positive number at most 2.5"),
    (flags.float_in(2.5), "0", "positive number"),
    (flags.non_negative_float, "-0.5", "at least 0"),
    (flags.non_negative_float, "inf", "finite"),
    (flags.sha256_hex, "abc", "64 hex digits"),
    (flags.currency_code, "EURO", "ISO 4217"),
    (flags.iso_date, "2026-13-01", "YYYY-MM-DD"),
    (flags.iso_date, "20260101", "YYYY-MM-DD"),  # fromisoformat alone would take it
    (flags.subscription_path, "projects/p/topics/t", "projects/PROJECT/subscriptions/NAME"),
])
def test_refused_values_say_why(parse, text, words):
    with pytest.raises(argparse.ArgumentTypeError, match=words):
        parse(text)


def test_template_regexes_read_the_parsers_names():
    names = {flags.int_in(1, 5).__name__, flags.int_in(2, 5).__name__, flags.int_in(0, 5).__name__,
             flags.float_in(1.0).__name__}
    assert names == {"positive_int", "bounded_int", "int", "positive_float"}


def test_importing_the_parsers_imports_no_beam():
    code = "import sys, pipelines.flags; print(any(m.startswith('apache_beam') for m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
