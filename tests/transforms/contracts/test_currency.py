"""`RateTable`: the rate in force on an amount's UTC date, converted through the euro."""

from __future__ import annotations

import datetime as dt
import hashlib

import pytest

from transforms.contracts.currency import RateTable, UnknownCurrency

TABLE = """# date,currency,units_per_eur
date,currency,units_per_eur
2026-01-10,usd,1.10
2026-01-01,USD,1.00
2026-01-01,GBP,0.80
2026-01-01,EUR,1
"""


def _us(day: str, hour: int = 0) -> int:
    moment = dt.datetime.fromisoformat(day).replace(hour=hour, tzinfo=dt.timezone.utc)
    return int(moment.timestamp()) * 1_000_000


@pytest.fixture(scope="module")
def rates() -> RateTable:
    return RateTable.parse(TABLE)


@pytest.mark.parametrize("day, units", [
    ("2025-12-31", 1.00),  # before the first row: the first row
    ("2026-01-09", 1.00),
    ("2026-01-10", 1.10),  # the row's own date
    ("2027-06-01", 1.10),  # after the last row: the last row
])
def test_the_rate_in_force_on_the_date(rates, day, units):
    assert rates.units_per_eur("USD", _us(day, hour=23)) == units


def test_conversion_goes_through_the_euro(rates):
    at = _us("2026-01-12")
    assert rates.convert(110.0, "USD", "EUR", at) == pytest.approx(100.0)
    assert rates.convert(110.0, "USD", "GBP", at) == pytest.approx(80.0)  # 110 / 1.10 * 0.80
    assert rates.convert(7.0, "JPY", "JPY", at) == 7.0  # the same currency needs no row


def test_an_unknown_currency_is_named(rates):
    with pytest.raises(UnknownCurrency, match="JPY"):
        rates.convert(1.0, "JPY", "EUR", _us("2026-01-12"))


def test_the_card_names_the_table(rates):
    assert rates.card("EUR") == {
        "reporting_currency": "EUR", "fx_table_sha256": hashlib.sha256(TABLE.encode()).hexdigest(),
        "fx_table_dates": ["2026-01-01", "2026-01-10"], "fx_currencies": ["EUR", "GBP", "USD"]}


@pytest.mark.parametrize("text, words", [
    ("date,currency,units_per_eur\n2026-01-01,USD,0\n", "not positive"),
    ("date,currency,units_per_eur\n# only a comment\n", "no rows"),
])
def test_a_bad_table_is_refused(text, words):
    with pytest.raises(ValueError, match=words):
        RateTable.parse(text)


def test_the_shipped_table_loads():
    assert {"EUR", "USD"} <= RateTable.load().currencies
