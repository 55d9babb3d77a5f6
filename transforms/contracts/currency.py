"""Money in one reporting currency: a dated table of exchange rates and the conversion.

The table (CSV, ``date,currency,units_per_eur``; ``#`` lines are comments) gives, for each
currency, how many units one euro buys from ``date`` until the next row of that currency.
An amount is converted with the rate in force on its event's UTC date: the latest row
dated on or before it (the first row for earlier dates). The shipped table is
``reference/fx_rates.csv``; its SHA-256 and date range go into the model card, so a
model's spend features say which rates made them.

    rates = RateTable.load()                     # the shipped table
    rates.convert(89.90, "USD", "EUR", timestamp_us)
"""

from __future__ import annotations

import bisect
import csv
import dataclasses
import hashlib
import io
import pathlib
from typing import Optional

DEFAULT_TABLE = pathlib.Path(__file__).parent / "reference" / "fx_rates.csv"
DEFAULT_REPORTING_CURRENCY = "EUR"
_DAY_US = 86_400_000_000
_EPOCH_DAY = 719_163  # date(1970, 1, 1).toordinal()


class UnknownCurrency(KeyError):
    """A currency the rate table has no row for."""


@dataclasses.dataclass(frozen=True)
class RateTable:
    """Rates per currency: sorted UTC day numbers and the units per euro from each of them.

    Attributes:
        rates: currency -> (day numbers since the epoch, ascending; units per euro).
        sha256: digest of the table's text (recorded in model cards).
    """

    rates: dict[str, tuple[tuple[int, ...], tuple[float, ...]]]
    sha256: str

    @classmethod
    def parse(cls, text: str) -> "RateTable":
        import datetime as dt

        rows: dict[str, list[tuple[int, float]]] = {}
        lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        for record in csv.DictReader(io.StringIO("\n".join(lines))):
            day = dt.date.fromisoformat(record["date"].strip()).toordinal() - _EPOCH_DAY
            rate = float(record["units_per_eur"])
            if not rate > 0:
                raise ValueError(f"rate table: {record['currency']} on {record['date']} is not positive")
            rows.setdefault(record["currency"].strip().upper(), []).append((day, rate))
        if not rows:
            raise ValueError("rate table has no rows")
        rates = {}
        for currency, entries in rows.items():
            entries.sort()
            rates[currency] = (tuple(d for d, _ in entries), tuple(r for _, r in entries))
        return cls(rates, hashlib.sha256(text.encode("utf-8")).hexdigest())

    @classmethod
    def load(cls, path: Optional[str] = None) -> "RateTable":
        """The table at `path` (local or gs://), or the shipped one."""
        if path is None:
            return cls.parse(DEFAULT_TABLE.read_text(encoding="utf-8"))
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.open(path) as handle:
            return cls.parse(handle.read().decode("utf-8"))

    @property
    def currencies(self) -> frozenset[str]:
        return frozenset(self.rates)

    def date_range(self) -> tuple[str, str]:
        """The first and last date of the table (ISO)."""
        import datetime as dt

        days = [d for days, _ in self.rates.values() for d in days]
        return tuple(dt.date.fromordinal(d + _EPOCH_DAY).isoformat() for d in (min(days), max(days)))

    def units_per_eur(self, currency: str, timestamp_us: int) -> float:
        try:
            days, rates = self.rates[currency]
        except KeyError:
            raise UnknownCurrency(currency) from None
        i = bisect.bisect_right(days, timestamp_us // _DAY_US) - 1
        return rates[max(i, 0)]

    def convert(self, amount: float, currency: str, to: str, timestamp_us: int) -> float:
        """`amount` of `currency` in `to`, at the rates in force at `timestamp_us`.

        Raises:
            UnknownCurrency: either currency has no row.
        """
        if currency == to:
            return amount
        return amount / self.units_per_eur(currency, timestamp_us) * self.units_per_eur(to, timestamp_us)

    def card(self, reporting_currency: str) -> dict:
        """What a model card records about the money it was trained on."""
        first, last = self.date_range()
        return {"reporting_currency": reporting_currency, "fx_table_sha256": self.sha256,
                "fx_table_dates": [first, last], "fx_currencies": sorted(self.rates)}
