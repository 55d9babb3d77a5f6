"""Incidents injected into a simulation (`segments generate --incident ...`), for testing what reacts.

``checkout_failure:START:END:SHARE``: from START (00:00 UTC, inclusive) to END (00:00 UTC,
exclusive), a random SHARE of the users (drawn once, from a stream of its own) cannot pay:
each of their online orders in the range becomes a failed checkout. The order's session
runs as it would (pages, products, cart, ``checkout_start``), the customer retries twice
(two more ``checkout_start`` events between the first and the order's time), and no
purchase line is written (nor the refunds that would have followed). Store orders (paid at
a till) are not affected. Everything else, every other user included, is exactly what the
same seed gives without the incident (but for the event ids, numbered in output order): the
failure is applied to the order's events after they are drawn, so no random draw moves.

The affected users are marked in the truth file (``incident_affected``), the incident is
recorded in ``<truth stem>.params.json`` (``incident``), and the number of failed orders is
in the generator's stats (``failed_checkouts``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import re

import numpy as np

from devtools.generate.randomness import stream

CHECKOUT_FAILURE = "checkout_failure"
KINDS: tuple[str, ...] = (CHECKOUT_FAILURE,)
RETRIES = 2  # further checkout attempts of a customer whose payment failed
_STREAM_INCIDENT = 6
_DAY_MS = 86_400_000


@dataclasses.dataclass(frozen=True)
class Incident:
    """An incident: what breaks, when (UTC dates, end exclusive), and for which share of the users."""

    kind: str
    start: dt.date
    end: dt.date
    share: float

    @property
    def start_ms(self) -> int:
        return (self.start - dt.date(1970, 1, 1)).days * _DAY_MS

    @property
    def end_ms(self) -> int:
        return (self.end - dt.date(1970, 1, 1)).days * _DAY_MS

    def during(self, t_ms: int) -> bool:
        return self.start_ms <= t_ms < self.end_ms

    def affected(self, users: int, seed: int) -> np.ndarray:
        """Which users (by index) the incident hits: a Bernoulli(share) draw each, from its own stream."""
        return stream(seed, _STREAM_INCIDENT).random(users) < self.share

    def as_params(self) -> dict:
        return {"kind": self.kind, "start": self.start.isoformat(), "end_exclusive": self.end.isoformat(),
                "share_of_users": self.share, "retries_per_failed_order": RETRIES}


def parse_incident(text: str) -> Incident:
    """argparse type of ``--incident``: ``checkout_failure:YYYY-MM-DD:YYYY-MM-DD:SHARE``."""
    parts = text.split(":")
    usage = f"must be KIND:START:END:SHARE with KIND one of {', '.join(KINDS)}, dates YYYY-MM-DD and SHARE in (0, 1]"
    if len(parts) != 4 or parts[0] not in KINDS:
        raise argparse.ArgumentTypeError(f"{usage}, got {text!r}")
    kind, start, end, share = parts
    try:
        if not (re.fullmatch(r"\d{4}-\d{2}-\d{2}", start) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", end)):
            raise ValueError("dates must be YYYY-MM-DD")
        start_date, end_date, value = dt.date.fromisoformat(start), dt.date.fromisoformat(end), float(share)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"{usage}, got {text!r} ({error})") from None
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"{usage}, got share {share!r}")
    if end_date <= start_date:
        raise argparse.ArgumentTypeError(f"{usage}, got END {end} not after START {start}")
    return Incident(kind, start_date, end_date, value)
