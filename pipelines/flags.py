"""Parsers of command-line values (argparse types), shared by every command.

Light on purpose (standard library only): `segments --help`, the generator and the changes
follower import it without Beam. Templates derive a parameter's regex from a parser's
name (`templates/generate.py`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import os
import re
from typing import Callable

def int_in(low: int, high: int) -> Callable[[str], int]:
    """argparse type: an integer in [low, high].

    Templates derive a parameter's regex from its type's name: `positive_int` (low is 1),
    `bounded_int` (a larger low: the regex checks the digits, the job the range), `int`.
    """
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(
                f"must be a positive integer at most {high:,}, got {text}" if low == 1 else
                f"must be an integer from {low:,} to {high:,}, got {text}")
        return value

    parse.__name__ = "positive_int" if low == 1 else ("bounded_int" if low > 1 else "int")
    return parse


def float_in(high: float) -> Callable[[str], float]:
    """argparse type: a finite number in (0, high] (named `positive_float`, see `int_in`)."""
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
        if not (math.isfinite(value) and 0 < value <= high):
            raise argparse.ArgumentTypeError(f"must be a positive number at most {high:,g}, got {text}")
        return value

    parse.__name__ = "positive_float"
    return parse


def non_negative_float(text: str) -> float:
    """argparse type: a finite number, 0 or more."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not (math.isfinite(value) and value >= 0):
        raise argparse.ArgumentTypeError(f"must be a finite number of at least 0, got {text}")
    return value


# The default range of a count or an amount: big enough for any sensible use, small
# enough that date and time arithmetic cannot overflow.
positive_int = int_in(1, 1_000_000_000)
positive_float = float_in(1e9)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def sha256_hex(text: str) -> str:
    """argparse type: a SHA-256 digest, 64 hex digits (lower case)."""
    value = text.strip().lower()
    if not _SHA256.match(value):
        raise argparse.ArgumentTypeError(f"expected 64 hex digits (a SHA-256), got {text!r}")
    return value


def currency_code(text: str) -> str:
    code = text.strip().upper()
    if len(code) != 3 or not code.isalpha():
        raise argparse.ArgumentTypeError(f"expected an ISO 4217 code such as EUR, got {text!r}")
    return code


def file_location(text: str) -> str:
    """A file, folder or glob as typed: a local relative one is made absolute against the
    working directory (Beam's local filesystem matches ``ev*.jsonl`` only when written
    ``./ev*.jsonl``, and workers may run elsewhere); ``gs://`` and other URLs stay as they are."""
    if "://" in text:
        return text
    return os.path.abspath(os.path.expanduser(text))


def iso_date(text: str) -> dt.date:
    """argparse type: a date written YYYY-MM-DD (and only so)."""
    try:
        if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
            raise ValueError(text)
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date YYYY-MM-DD, got {text!r}") from None


def non_negative_int(high: int) -> Callable[[str], int]:
    """argparse type: an integer in [0, high]."""
    return int_in(0, high)


_SUBSCRIPTION = re.compile(r"^projects/[^/]+/subscriptions/[^/]+$")


def subscription_path(text: str) -> str:
    """argparse type: a Pub/Sub subscription, projects/PROJECT/subscriptions/NAME."""
    if not _SUBSCRIPTION.match(text):
        raise argparse.ArgumentTypeError(f"expected projects/PROJECT/subscriptions/NAME, got {text!r}")
    return text
