"""Realistic synthetic behavioural events (`segments generate`).

A population of users is drawn from seven latent archetypes (`ARCHETYPES`), each
with its own behaviour: how often it visits, how far through the purchase funnel
it goes, what it spends, how it reacts to e-mail campaigns, which categories,
channels and devices it prefers, and when in the period it is active. The users
are then simulated day by day and their events written as event contract v1
records (`transforms/contracts/events.py`), as JSON lines or Avro.

Run it::

    segments generate --users 2000 --days 30 --seed 7 --out /tmp/events.jsonl \\
        --corrupt-rate 0.01 --truth /tmp/truth.csv
    python -m devtools.generate --users 2000 --out /tmp/events.avro

Period: `--days` whole UTC days ending (exclusively) at `--end` 00:00 UTC; the
default `--end` is today's date in UTC, so the period is the last `--days` full
days before now and every event falls inside the validator's default time range
(not more than one day ahead of now, not older than 3650 days).

Records: one JSON object per line (or one Avro record each). Valid events have
ids "e-<seed>-<n>" numbered in output order, user ids "u-000123", session ids
"s-<user>-<n>". Output is in time order within each day (a session that runs
past midnight stays with the day it started on; none runs past `--end`), with
users interleaved. Stats: `GenerationStats`; nothing is printed.

Determinism: the output depends only on the arguments (never on the wall clock,
apart from the `--end` default). Random draws come from numpy `PCG64` streams
keyed by `(seed, purpose, day)`, so the valid events do not depend on
`--corrupt-rate` or `--format`: the same seed gives the same valid events
(same ids, same values, same timestamp forms) in JSON lines and in Avro.

Simulation, per day:

* Sessions per user are Poisson with rate = archetype `sessions_per_day` x the
  user's activity multiplier (Pareto, alpha 1.5, mean 1, capped at 20: a few users
  are very active) x a weekday factor (weekends busier; `weekend_boost`), and 0
  outside the user's active days (`dormant` stop after 25-60 % of the period,
  `new_visitor` start after 55-90 % of it).
* A session starts at a local hour drawn from an evening-heavy daily profile
  (`HOUR_PROFILE`), shifted to UTC by the user's time zone, and walks the funnel
  `app_open` (app channel) -> `page_view`s -> `search`? -> `product_view`s
  (`social_share`?) -> `add_to_cart` (per viewed product) -> `remove_from_cart`?
  -> `checkout_start` -> `purchase` (one per cart line), with the archetype's
  probabilities. Store sessions are a lone purchase (device "pos"). A new
  visitor's first session contains its `signup`. Purchases are refunded, rarely,
  1-10 days later.
* On campaign days (about 30 % of days) every active user may open (`email_open`)
  and click (`email_click`) the campaign e-mail; a click often starts a web session.

Timestamps: about 10 % of events carry integer epoch milliseconds; the others an
RFC 3339 string with millisecond precision, "Z" for most users and the user's
local offset (e.g. "+02:00", "+05:30", "-05:00") for about 30 % of them.
Consent: 93 % of users always send `{analytics: true, personalization: true}`,
3 % send `personalization: false`, and 4 % never send a consent object (the
pipeline's strict default treats those as not consenting).

Corruption (`--corrupt-rate R`): a fraction R of the output records are bad
records, spread round-robin over the kinds in `CORRUPTION_KINDS`: the ten
dead-letter codes the validator can produce for a single record (see
`ErrorCode`), plus exact duplicates of an earlier valid record (a duplicate is
one slot of the round-robin, i.e. duplicates are part of the R budget, about
R/11 of the output). Corrupt records have ids "x-<seed>-<n>" (or no usable id
at all), so they never collide with a valid event's "e-<seed>-<n>". In Avro only
what the schema can represent is produced: invalid_json, not_an_object and
bad_type are skipped, and missing_field is only "a purchase without a value".
"""

from __future__ import annotations

import argparse
import bisect
import collections
import contextlib
import dataclasses
import datetime as dt
import gc
import hashlib
import itertools
import math
import pathlib
import re


from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import fastavro
import fastavro.write
import orjson

from transforms.contracts.events import load_avro_schema
from transforms.contracts.outcomes import ErrorCode

DAY_MS = 86_400_000
HOUR_MS = 3_600_000

CATEGORIES: tuple[str, ...] = (
    "shoes", "apparel", "electronics", "home", "beauty", "sports",
    "toys", "books", "grocery", "garden", "jewellery", "automotive",
)
# Price level of a category relative to an archetype's median purchase value.
_CATEGORY_PRICE: dict[str, float] = {
    "shoes": 1.0, "apparel": 0.8, "electronics": 2.5, "home": 1.3, "beauty": 0.6, "sports": 1.1,
    "toys": 0.7, "books": 0.35, "grocery": 0.3, "garden": 0.9, "jewellery": 2.0, "automotive": 1.5,
}
_SEARCH_WORDS: dict[str, tuple[str, ...]] = {
    "shoes": ("running shoes", "sneakers", "boots", "sandals"),
    "apparel": ("jacket", "t-shirt", "jeans", "summer dress"),
    "electronics": ("headphones", "usb c charger", "laptop", "smart watch"),
    "home": ("sofa cushion", "lamp", "bed linen", "kitchen knife"),
    "beauty": ("face cream", "shampoo", "perfume", "lipstick"),
    "sports": ("yoga mat", "dumbbells", "bike helmet", "tennis racket"),
    "toys": ("lego", "puzzle", "board game", "plush toy"),
    "books": ("crime novel", "cookbook", "travel guide", "kids book"),
    "grocery": ("coffee beans", "olive oil", "green tea", "chocolate"),
    "garden": ("garden hose", "plant pot", "lawn mower", "seeds"),
    "jewellery": ("silver ring", "necklace", "earrings", "watch strap"),
    "automotive": ("car wax", "wiper blades", "phone mount", "tyre pump"),
}
_PRODUCTS_PER_CATEGORY = 200

# Local-time hour-of-day profile of session starts (sums to 1): quiet nights, a
# lunch bump and an evening peak.
_HOUR_WEIGHTS = np.array([
    0.6, 0.35, 0.2, 0.15, 0.15, 0.25, 0.6, 1.2, 1.8, 2.2, 2.4, 2.6,
    3.0, 2.8, 2.5, 2.4, 2.5, 2.8, 3.4, 4.0, 4.3, 3.9, 2.8, 1.5])
HOUR_PROFILE: np.ndarray = _HOUR_WEIGHTS / _HOUR_WEIGHTS.sum()
# Weekday factor, Monday first (mean 1); weekends are further scaled by the
# archetype's `weekend_boost`.
WEEKDAY_FACTOR: tuple[float, ...] = (0.92, 0.94, 0.97, 0.98, 1.04, 1.10, 1.05)

# Time zones (offset minutes, share of users).
_TZ_OFFSETS = np.array([0, 60, 120, -300, -240, 330, 540, -180, 600])
_TZ_SHARES = np.array([0.30, 0.22, 0.12, 0.12, 0.06, 0.06, 0.05, 0.04, 0.03])
_CURRENCIES = ("EUR", "USD", "GBP")
_CURRENCY_BY_TZ = {0: "GBP", 60: "EUR", 120: "EUR", -300: "USD", -240: "USD", 330: "USD", 540: "USD",
                   -180: "USD", 600: "USD"}
_WEB_DEVICES = ("desktop", "mobile", "tablet")

EPOCH_MS_SHARE = 0.10  # share of events whose timestamp is integer epoch milliseconds
LOCAL_OFFSET_USER_SHARE = 0.30  # share of users whose RFC 3339 strings carry their local offset
CONSENT_MODES: tuple[tuple[str, float], ...] = (("granted", 0.93), ("no_personalization", 0.03), ("absent", 0.04))
CAMPAIGN_DAY_SHARE = 0.30
CLICK_SESSION_SHARE = 0.6  # share of e-mail clicks that lead into a web session
_ACTIVITY_PARETO_ALPHA = 1.5
_ACTIVITY_CAP = 20.0
_MEAN_GAP_MS = 40_000  # mean time between events of a session
_MAX_RUN = 30  # cap of any geometric count (page views, product views)

# Random streams: (seed, purpose[, day]) -> independent PCG64 generator.
_STREAM_POPULATION = 1
_STREAM_DAY = 2
_STREAM_CAMPAIGNS = 3
_STREAM_CORRUPTION = 4


@dataclasses.dataclass(frozen=True)
class Archetype:
    """Behaviour parameters of a latent user archetype.

    Attributes:
      weight: share of the population.
      sessions_per_day: mean sessions per active day of a user with activity 1.
      page_views: mean page views per (non-store) session (geometric, >= 1).
      p_search: probability that a session has a search.
      p_product_view: probability that a session reaches product pages.
      product_views: mean product views when it does (geometric, >= 1).
      p_add_to_cart: probability that a viewed product is added to the cart.
      p_remove_from_cart: probability that a session with a cart removes a line.
      p_checkout: probability that a session with a cart starts checkout.
      p_purchase: probability that a started checkout is completed.
      p_refund: probability that a purchase is refunded (1-10 days later).
      p_social_share: probability that a viewed product is shared.
      value_median: median unit price paid, in currency units (lognormal; scaled
        by the category's price level).
      value_sigma: log-scale standard deviation of the unit price.
      email_open: probability of opening a campaign e-mail.
      email_click: probability of clicking an opened campaign e-mail.
      category_alpha: Dirichlet concentration of the user's category preferences
        over `CATEGORIES` (small = a few favourite categories).
      channels: session channel mix (web, app, social, store, other).
      devices: device mix of web sessions (desktop, mobile, tablet).
      weekend_boost: extra factor on Saturday and Sunday session rates.
      active_from: range of the fraction of the period after which the user
        becomes active (0 = from the start).
      active_until: range of the fraction of the period after which the user
        stops (1 = until the end).
    """

    weight: float
    sessions_per_day: float
    page_views: float
    p_search: float
    p_product_view: float
    product_views: float
    p_add_to_cart: float
    p_remove_from_cart: float
    p_checkout: float
    p_purchase: float
    p_refund: float
    p_social_share: float
    value_median: float
    value_sigma: float
    email_open: float
    email_click: float
    category_alpha: float
    channels: tuple[float, float, float, float, float]
    devices: tuple[float, float, float]
    weekend_boost: float = 1.0
    active_from: tuple[float, float] = (0.0, 0.0)
    active_until: tuple[float, float] = (1.0, 1.0)


SESSION_CHANNELS: tuple[str, ...] = ("web", "app", "social", "store", "other")

ARCHETYPES: dict[str, Archetype] = {
    # Frequent, decisive, high-value buyers; app users; some in-store purchases.
    "loyal_high_value": Archetype(
        weight=0.10, sessions_per_day=0.45, page_views=1.8, p_search=0.3, p_product_view=0.85, product_views=2.5,
        p_add_to_cart=0.45, p_remove_from_cart=0.05, p_checkout=0.8, p_purchase=0.85, p_refund=0.02,
        p_social_share=0.04, value_median=110.0, value_sigma=0.55, email_open=0.35, email_click=0.35,
        category_alpha=0.5, channels=(0.48, 0.35, 0.03, 0.12, 0.02), devices=(0.55, 0.35, 0.10)),
    # Many searches and product views, cheap baskets, weekend deals, more refunds.
    "bargain_hunter": Archetype(
        weight=0.17, sessions_per_day=0.35, page_views=2.5, p_search=0.65, p_product_view=0.85, product_views=4.0,
        p_add_to_cart=0.18, p_remove_from_cart=0.25, p_checkout=0.6, p_purchase=0.7, p_refund=0.06,
        p_social_share=0.04, value_median=18.0, value_sigma=0.45, email_open=0.25, email_click=0.3,
        category_alpha=1.5, channels=(0.60, 0.25, 0.10, 0.02, 0.03), devices=(0.35, 0.58, 0.07),
        weekend_boost=1.35),
    # Browse a lot, rarely buy; social traffic and shares.
    "window_shopper": Archetype(
        weight=0.20, sessions_per_day=0.35, page_views=3.0, p_search=0.3, p_product_view=0.75, product_views=3.5,
        p_add_to_cart=0.03, p_remove_from_cart=0.15, p_checkout=0.3, p_purchase=0.4, p_refund=0.01,
        p_social_share=0.10, value_median=45.0, value_sigma=0.6, email_open=0.08, email_click=0.1,
        category_alpha=2.0, channels=(0.55, 0.15, 0.25, 0.02, 0.03), devices=(0.30, 0.62, 0.08),
        weekend_boost=1.2),
    # Fill carts, often remove lines, rarely complete checkout.
    "cart_abandoner": Archetype(
        weight=0.15, sessions_per_day=0.3, page_views=1.8, p_search=0.3, p_product_view=0.85, product_views=2.5,
        p_add_to_cart=0.55, p_remove_from_cart=0.35, p_checkout=0.45, p_purchase=0.12, p_refund=0.02,
        p_social_share=0.03, value_median=60.0, value_sigma=0.6, email_open=0.12, email_click=0.2,
        category_alpha=1.0, channels=(0.65, 0.25, 0.05, 0.01, 0.04), devices=(0.45, 0.45, 0.10)),
    # Few own visits; open and click most campaigns, which lead to purchases.
    "email_engaged": Archetype(
        weight=0.13, sessions_per_day=0.12, page_views=1.6, p_search=0.15, p_product_view=0.8, product_views=2.0,
        p_add_to_cart=0.35, p_remove_from_cart=0.08, p_checkout=0.6, p_purchase=0.7, p_refund=0.03,
        p_social_share=0.03, value_median=55.0, value_sigma=0.5, email_open=0.7, email_click=0.5,
        category_alpha=0.8, channels=(0.80, 0.10, 0.04, 0.03, 0.03), devices=(0.55, 0.38, 0.07),
        weekend_boost=0.9),
    # Appear late in the period, sign up, explore (search heavy).
    "new_visitor": Archetype(
        weight=0.12, sessions_per_day=0.5, page_views=2.5, p_search=0.45, p_product_view=0.7, product_views=2.5,
        p_add_to_cart=0.15, p_remove_from_cart=0.1, p_checkout=0.5, p_purchase=0.45, p_refund=0.02,
        p_social_share=0.06, value_median=40.0, value_sigma=0.6, email_open=0.3, email_click=0.25,
        category_alpha=1.5, channels=(0.55, 0.20, 0.20, 0.00, 0.05), devices=(0.40, 0.52, 0.08),
        active_from=(0.55, 0.9)),
    # Ordinary customers early in the period who then stop coming.
    "dormant": Archetype(
        weight=0.13, sessions_per_day=0.3, page_views=2.0, p_search=0.3, p_product_view=0.75, product_views=2.5,
        p_add_to_cart=0.2, p_remove_from_cart=0.1, p_checkout=0.5, p_purchase=0.5, p_refund=0.03,
        p_social_share=0.04, value_median=50.0, value_sigma=0.6, email_open=0.1, email_click=0.15,
        category_alpha=1.0, channels=(0.60, 0.30, 0.05, 0.03, 0.02), devices=(0.45, 0.45, 0.10),
        active_until=(0.25, 0.6)),
}
ARCHETYPE_NAMES: tuple[str, ...] = tuple(ARCHETYPES)

# Bad-record kinds of `--corrupt-rate`, in round-robin order.
DUPLICATE = "duplicate"
CORRUPT_CODES: tuple[ErrorCode, ...] = (
    ErrorCode.INVALID_JSON, ErrorCode.NOT_AN_OBJECT, ErrorCode.MISSING_FIELD, ErrorCode.BAD_TYPE,
    ErrorCode.UNKNOWN_EVENT_TYPE, ErrorCode.BAD_TIMESTAMP, ErrorCode.TIMESTAMP_OUT_OF_RANGE,
    ErrorCode.NEGATIVE_VALUE, ErrorCode.OVERSIZED, ErrorCode.INVALID_FIELD_VALUE,
)
CORRUPTION_KINDS: tuple[str, ...] = tuple(code.value for code in CORRUPT_CODES) + (DUPLICATE,)
OVERSIZED_BYTES = 16 * 1024  # the validator's default limit; oversized records exceed it


@dataclasses.dataclass(frozen=True)
class GenerationStats:
    """What `generate` wrote.

    Attributes:
      users: users simulated.
      events: valid, distinct events written.
      corrupt: invalid records written (sum of `corrupt_by_code`).
      duplicates: exact re-emissions of an earlier valid record.
      records: all records written (`events + corrupt + duplicates`).
      corrupt_by_code: invalid records per `ErrorCode` value.
      archetype_counts: users per archetype.
      output: the file written.
      format: "jsonl" or "avro".
      start: first day of the period (UTC, inclusive).
      end: end of the period (UTC, exclusive).
      truth: the truth CSV written, if any.
    """

    users: int
    events: int
    corrupt: int
    duplicates: int
    records: int
    corrupt_by_code: dict[str, int]
    archetype_counts: dict[str, int]
    output: str
    format: str
    start: dt.date
    end: dt.date
    truth: Optional[str] = None


# ---------------------------------------------------------------------------
# Command line


def _int_in(low: int, high: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"must be a positive integer at most {high:,}, got {text!r}")
        return value

    return parse


MAX_USERS = 10_000_000
MAX_DAYS = 3650


def _output_file(text: str) -> pathlib.Path:
    """argparse type: a file to write (not a directory)."""
    path = pathlib.Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory: give a file path")
    return path


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}")
    return value


def _date(text: str) -> dt.date:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise argparse.ArgumentTypeError(f"must be a date YYYY-MM-DD, got {text!r}")
    try:
        return dt.date.fromisoformat(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"must be a date YYYY-MM-DD, got {text!r} ({error})") from None


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the generator's flags to `parser`."""
    parser.add_argument("--users", type=_int_in(1, MAX_USERS), metavar="N", default=2000,
                        help=f"Number of simulated users (at most {MAX_USERS:,}). Default: 2000.")
    parser.add_argument("--days", type=_int_in(1, MAX_DAYS), metavar="D", default=30,
                        help=f"Length of the period, in whole UTC days (at most {MAX_DAYS:,}). Default: 30.")
    parser.add_argument("--end", type=_date, metavar="DATE", default=None,
                        help="End of the period, exclusive, as YYYY-MM-DD (00:00 UTC of that date). "
                             "Default: today's date in UTC, i.e. the period is the last --days full days.")
    parser.add_argument("--seed", type=_seed, metavar="SEED", default=0,
                        help="Random seed (non-negative integer); same arguments give identical bytes. Default: 0.")
    parser.add_argument("--format", choices=("jsonl", "avro"), default=None,
                        help="Output format. Default: avro if --out ends with .avro, else jsonl (JSON lines).")
    parser.add_argument("--out", type=_output_file, metavar="PATH", required=True,
                        help="Output file (parent directories are created). Required.")
    parser.add_argument("--corrupt-rate", dest="corrupt_rate", type=_rate, metavar="R", default=0.0,
                        help="Fraction of output records, in [0, 1), that are bad: invalid records of every "
                             "dead-letter kind plus exact duplicates, round-robin. Default: 0.0.")
    parser.add_argument("--truth", type=_output_file, metavar="PATH", default=None,
                        help="Also write a CSV 'user_id,archetype' of the latent archetypes. Default: not written.")


def today_utc() -> dt.date:
    """The `--end` default: today's date in UTC (the only use of the wall clock)."""
    return dt.datetime.now(dt.timezone.utc).date()


# ---------------------------------------------------------------------------
# Population


@dataclasses.dataclass(slots=True)
class UserProfile:
    """One simulated user: its archetype and its personal draws."""

    index: int
    user_id: str
    archetype: str
    activity: float  # session-rate multiplier (mean 1 over the population)
    active_from_day: int  # first active day index (inclusive)
    active_until_day: int  # last active day index (exclusive)
    category_cdf: list[float]  # cumulative preferences over CATEGORIES
    channel_cdf: list[float]  # cumulative session channel mix over SESSION_CHANNELS
    web_device: str
    app_device: str
    tz_offset_min: int
    local_offset_strings: bool  # RFC 3339 strings with the local offset instead of "Z"
    currency: str
    consent: Optional[dict]  # None: the user never sends a consent object
    stamp_offset_ms: int  # added to UTC to get the time written in RFC 3339 strings
    stamp_suffix: str  # "Z" or the "+hh:mm" offset of the RFC 3339 strings
    sessions: int = 0
    signed_up: bool = False


def _user_width(users: int) -> int:
    return max(6, len(str(users - 1)))


def sample_population(users: int, days: int, seed: int) -> list[UserProfile]:
    """Draws the users: archetype quotas, activity, preferences, time zone, consent.

    Archetypes are assigned by exact quotas (largest remainder of `weight * users`,
    so each count is within one of its expected value) in a seeded random order.
    """
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, _STREAM_POPULATION])))
    weights = np.array([a.weight for a in ARCHETYPES.values()])
    weights = weights / weights.sum()
    exact = weights * users
    counts = np.floor(exact).astype(int)
    remainder_order = np.argsort(-(exact - counts), kind="stable")
    counts[remainder_order[: users - counts.sum()]] += 1
    labels = rng.permutation(np.repeat(np.arange(len(weights)), counts))

    pareto = (1.0 - rng.random(users)) ** (-1.0 / _ACTIVITY_PARETO_ALPHA)
    activity = np.minimum(pareto / (_ACTIVITY_PARETO_ALPHA / (_ACTIVITY_PARETO_ALPHA - 1.0)), _ACTIVITY_CAP)
    tz = rng.choice(_TZ_OFFSETS, size=users, p=_TZ_SHARES / _TZ_SHARES.sum())
    local_strings = rng.random(users) < LOCAL_OFFSET_USER_SHARE
    consent_u = rng.random(users)
    analytics_u = rng.random(users)
    phase_u = rng.random(users)
    device_u = rng.random((users, 2))
    currency_u = rng.random(users)
    width = _user_width(users)
    granted_share = CONSENT_MODES[0][1]
    no_personalization_share = CONSENT_MODES[1][1]

    population = []
    for i in range(users):
        name = ARCHETYPE_NAMES[labels[i]]
        arch = ARCHETYPES[name]
        prefs = rng.dirichlet(np.full(len(CATEGORIES), arch.category_alpha))
        mix = rng.dirichlet(np.array(arch.channels) * 40.0 + 1e-3)
        lo, hi = arch.active_from
        active_from = math.ceil((lo + (hi - lo) * phase_u[i]) * days) if hi > 0 else 0
        lo, hi = arch.active_until
        active_until = max(1, math.floor((lo + (hi - lo) * phase_u[i]) * days)) if lo < 1 else days
        active_from = min(active_from, days - 1)
        web_device = _WEB_DEVICES[bisect.bisect_right(np.cumsum(arch.devices).tolist(), device_u[i, 0] * sum(arch.devices))]
        app_device = "tablet" if device_u[i, 1] < 0.15 else "mobile"
        tz_i = int(tz[i])
        currency = _CURRENCY_BY_TZ[tz_i] if currency_u[i] < 0.9 else _CURRENCIES[int(currency_u[i] * 1000) % 3]
        if consent_u[i] < granted_share:
            consent: Optional[dict] = {"analytics": True, "personalization": True}
        elif consent_u[i] < granted_share + no_personalization_share:
            consent = {"analytics": bool(analytics_u[i] < 0.7), "personalization": False}
        else:
            consent = None
        population.append(UserProfile(
            index=i, user_id=f"u-{i:0{width}d}", archetype=name, activity=float(activity[i]),
            active_from_day=active_from, active_until_day=active_until,
            category_cdf=np.cumsum(prefs).tolist(), channel_cdf=np.cumsum(mix / mix.sum()).tolist(),
            web_device=web_device, app_device=app_device, tz_offset_min=tz_i,
            local_offset_strings=bool(local_strings[i]), currency=currency, consent=consent,
            stamp_offset_ms=tz_i * 60_000 if local_strings[i] else 0,
            stamp_suffix=format_timestamp(0, tz_i, not local_strings[i])[23:],
            signed_up=name != "new_visitor",
        ))
    return population


# ---------------------------------------------------------------------------
# Simulation


def _blocks(draw: Callable[[int], np.ndarray]) -> Iterator[list[float]]:
    while True:
        yield draw(1 << 15).tolist()


class _Draws:
    """Scalar random numbers served from numpy blocks (fast, deterministic).

    `u()` is uniform in [0, 1), `normal()` standard normal; both are C-level
    iterators over blocks drawn from the one generator as they run out.
    """

    __slots__ = ("u", "normal")

    def __init__(self, rng: np.random.Generator):
        self.u: Callable[[], float] = itertools.chain.from_iterable(_blocks(rng.random)).__next__
        self.normal: Callable[[], float] = itertools.chain.from_iterable(_blocks(rng.standard_normal)).__next__

    def geometric(self, mean: float) -> int:
        """1, 2, 3, ... with the given mean (>= 1), capped at `_MAX_RUN`."""
        if mean <= 1.0:
            return 1
        return min(_MAX_RUN, 1 + int(math.log(1.0 - self.u()) / math.log(1.0 - 1.0 / mean)))

    def gap_ms(self) -> int:
        return 1000 + int(-_MEAN_GAP_MS * math.log(1.0 - self.u()))


_date_cache: dict[int, str] = {}


def _date_text(day_number: int) -> str:
    text = _date_cache.get(day_number)
    if text is None:
        text = (dt.date(1970, 1, 1) + dt.timedelta(days=day_number)).isoformat()
        _date_cache[day_number] = text
    return text


def format_timestamp(ts_ms: int, offset_min: int, zulu: bool) -> str:
    """RFC 3339 with milliseconds: UTC with "Z" when `zulu`, else local time with the given offset."""
    if zulu:
        offset_min = 0
    local = ts_ms + offset_min * 60_000
    day, rem = divmod(local, DAY_MS)
    hour, rem = divmod(rem, HOUR_MS)
    minute, rem = divmod(rem, 60_000)
    second, milli = divmod(rem, 1000)
    if zulu:
        suffix = "Z"
    else:
        sign = "+" if offset_min >= 0 else "-"
        suffix = f"{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"
    return f"{_date_text(day)}T{hour:02d}:{minute:02d}:{second:02d}.{milli:03d}{suffix}"


def _end_ms(end: dt.date) -> int:
    if isinstance(end, dt.datetime):
        if end.tzinfo is None:
            end = end.replace(tzinfo=dt.timezone.utc)
        return int(end.timestamp() * 1000)
    return (end - dt.date(1970, 1, 1)).days * DAY_MS


def _campaign_days(days: int, seed: int) -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, _STREAM_CAMPAIGNS])))
    return rng.random(days) < CAMPAIGN_DAY_SHARE


class _Simulator:
    """Day-by-day simulation of a population; yields (timestamp ms, event) in time order per day."""

    def __init__(self, population: list[UserProfile], days: int, end_ms: int, seed: int):
        self.pop = population
        self.days = days
        self.end_ms = end_ms
        self.start_ms = end_ms - days * DAY_MS
        self.seed = seed
        self.arch = [ARCHETYPES[u.archetype] for u in population]
        self.p_open = np.array([a.email_open for a in self.arch])
        self.pending_refunds: dict[int, list[tuple]] = {}
        self.buf: list[tuple[int, int, dict, Optional[UserProfile]]] = []
        self.emitted = 0  # events yielded so far; numbers the event ids
        self.r: _Draws

    # -- events -------------------------------------------------------------

    def _emit(self, user: UserProfile, event_type: str, ts: int, session_id: Optional[str], channel: str,
              device: str, props: Optional[dict]) -> None:
        if ts >= self.end_ms:
            return
        epoch_ms = self.r.u() < EPOCH_MS_SHARE
        # RFC 3339 strings are filled in per day, vectorised (`_stamp_day`).
        event = {"event_id": None, "user_id": user.user_id, "event_type": event_type,
                 "timestamp": ts if epoch_ms else None}
        if session_id is not None:
            event["session_id"] = session_id
        event["channel"] = channel
        event["device"] = device
        if props:
            event["properties"] = props
        if user.consent is not None:
            event["consent"] = dict(user.consent)
        self.buf.append((ts, len(self.buf), event, None if epoch_ms else user))

    def _category(self, user: UserProfile) -> str:
        return CATEGORIES[min(len(CATEGORIES) - 1, bisect.bisect_right(user.category_cdf, self.r.u()))]

    def _product(self, category: str) -> str:
        return f"p-{CATEGORIES.index(category):02d}{int(_PRODUCTS_PER_CATEGORY * self.r.u() ** 3):03d}"

    def _quantity(self) -> int:
        u = self.r.u()
        return 1 if u < 0.8 else (2 if u < 0.95 else 3)

    def _unit_price(self, arch: Archetype, category: str) -> float:
        return max(0.5, arch.value_median * _CATEGORY_PRICE[category] * math.exp(arch.value_sigma * self.r.normal()))

    def _purchase(self, user: UserProfile, arch: Archetype, ts: int, session_id: str, channel: str, device: str,
                  product: str, category: str, quantity: int, unit_price: float) -> None:
        value = round(unit_price * quantity, 2)
        self._emit(user, "purchase", ts, session_id, channel, device, {
            "product_id": product, "category": category, "value": value, "currency": user.currency,
            "quantity": quantity, "page": "/checkout/done"})
        if self.r.u() < arch.p_refund and ts < self.end_ms:
            refund_ts = ts + DAY_MS + int(self.r.u() * 9 * DAY_MS)
            day = (refund_ts - self.start_ms) // DAY_MS
            if day < self.days:
                self.pending_refunds.setdefault(day, []).append(
                    (refund_ts, user.index, product, category, value, quantity))

    def session(self, user: UserProfile, t: int, channel: Optional[str] = None) -> None:
        r = self.r
        arch = self.arch[user.index]
        if channel is None:
            channel = SESSION_CHANNELS[min(4, bisect.bisect_right(user.channel_cdf, r.u()))]
        session_id = f"s-{user.index}-{user.sessions:04d}"
        user.sessions += 1
        if channel == "store":
            category = self._category(user)
            quantity = self._quantity()
            self._purchase(user, arch, t, session_id, "store", "pos", self._product(category), category, quantity,
                           self._unit_price(arch, category))
            return
        device = user.app_device if channel == "app" else user.web_device
        if channel == "app":
            self._emit(user, "app_open", t, session_id, channel, device, None)
            t += r.gap_ms()
        for i in range(r.geometric(arch.page_views)):
            gap = r.gap_ms()
            if i == 0:
                page = "/"
            else:
                u = r.u()
                page = f"/c/{self._category(user)}" if u < 0.6 else ("/deals" if u < 0.8 else "/new")
            self._emit(user, "page_view", t, session_id, channel, device,
                       {"page": page, "duration_s": round(gap / 1000.0, 1)})
            t += gap
        if not user.signed_up:
            user.signed_up = True
            self._emit(user, "signup", t, session_id, channel, device, {"page": "/signup"})
            t += r.gap_ms()
        if r.u() < arch.p_search:
            category = self._category(user)
            words = _SEARCH_WORDS[category]
            query = words[int(r.u() * len(words))]
            if user.archetype == "bargain_hunter" and r.u() < 0.5:
                query = ("cheap " if r.u() < 0.5 else "sale ") + query
            self._emit(user, "search", t, session_id, channel, device, {"search_query": query, "page": "/search"})
            t += r.gap_ms()
        if r.u() >= arch.p_product_view:
            return
        cart: list[tuple[str, str, int, float]] = []
        for _ in range(r.geometric(arch.product_views)):
            category = self._category(user)
            product = self._product(category)
            self._emit(user, "product_view", t, session_id, channel, device,
                       {"product_id": product, "category": category, "page": f"/p/{product}"})
            t += r.gap_ms()
            if r.u() < arch.p_social_share:
                self._emit(user, "social_share", t, session_id, "social", device,
                           {"product_id": product, "category": category, "page": f"/p/{product}"})
                t += r.gap_ms()
            if r.u() < arch.p_add_to_cart:
                quantity = self._quantity()
                cart.append((product, category, quantity, self._unit_price(arch, category)))
                self._emit(user, "add_to_cart", t, session_id, channel, device,
                           {"product_id": product, "category": category, "quantity": quantity, "page": "/cart"})
                t += r.gap_ms()
        if cart and r.u() < arch.p_remove_from_cart:
            product, category, quantity, _ = cart.pop(int(r.u() * len(cart)))
            self._emit(user, "remove_from_cart", t, session_id, channel, device,
                       {"product_id": product, "category": category, "quantity": quantity, "page": "/cart"})
            t += r.gap_ms()
        if not cart or r.u() >= arch.p_checkout:
            return
        self._emit(user, "checkout_start", t, session_id, channel, device, {"page": "/checkout"})
        t += r.gap_ms() + r.gap_ms()
        if r.u() >= arch.p_purchase:
            return
        for product, category, quantity, unit_price in cart:
            self._purchase(user, arch, t, session_id, channel, device, product, category, quantity, unit_price)
            t += 50

    # -- days ---------------------------------------------------------------

    def run(self) -> Iterator[tuple[int, dict]]:
        users = len(self.pop)
        arch_index = np.array([ARCHETYPE_NAMES.index(u.archetype) for u in self.pop])
        base_rate = np.array([ARCHETYPES[u.archetype].sessions_per_day * u.activity for u in self.pop])
        weekend = np.array([ARCHETYPES[n].weekend_boost for n in ARCHETYPE_NAMES])[arch_index]
        active_from = np.array([u.active_from_day for u in self.pop])
        active_until = np.array([u.active_until_day for u in self.pop])
        tz_ms = np.array([u.tz_offset_min for u in self.pop], dtype=np.int64) * 60_000
        campaign_days = _campaign_days(self.days, self.seed)
        epoch_day0 = self.start_ms // DAY_MS

        for d in range(self.days):
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, _STREAM_DAY, d])))
            self.r = _Draws(rng)
            self.buf = []
            day_start = self.start_ms + d * DAY_MS
            weekday = (epoch_day0 + d + 3) % 7  # 1970-01-01 was a Thursday
            active = (active_from <= d) & (d < active_until)
            rate = base_rate * WEEKDAY_FACTOR[weekday] * (weekend if weekday >= 5 else 1.0) * active
            n_sessions = rng.poisson(rate)
            who = np.repeat(np.arange(users), n_sessions)
            hours = rng.choice(24, size=who.size, p=HOUR_PROFILE)
            local_ms = hours * HOUR_MS + rng.integers(0, HOUR_MS, size=who.size)
            starts = day_start + (local_ms - tz_ms[who]) % DAY_MS
            order = np.argsort(starts, kind="stable")  # so a new visitor's first session is its earliest
            for u, t in zip(who[order].tolist(), starts[order].tolist()):
                self.session(self.pop[u], t)

            if campaign_days[d]:
                self._campaign(rng, d, day_start, active)

            for refund_ts, u, product, category, value, quantity in self.pending_refunds.pop(d, ()):
                user = self.pop[u]
                if active[u]:
                    self._emit(user, "refund", refund_ts, None, "web", user.web_device, {
                        "product_id": product, "category": category, "value": value, "currency": user.currency,
                        "quantity": quantity})

            self.buf.sort()  # by (time, emission order): unique, so events are never compared
            _stamp_day(self.buf)
            prefix = f"e-{self.seed}-"
            for n, (ts, _, event, _) in enumerate(self.buf, start=self.emitted):
                event["event_id"] = f"{prefix}{n:09d}"
                yield ts, event
            self.emitted += len(self.buf)

    def _campaign(self, rng: np.random.Generator, d: int, day_start: int, active: np.ndarray) -> None:
        campaign = "cmp-" + _date_text(day_start // DAY_MS).replace("-", "")
        send = day_start + 8 * HOUR_MS + int(rng.integers(0, HOUR_MS))
        signed_up = np.array([u.signed_up for u in self.pop])
        eligible = active & signed_up
        opened = eligible & (rng.random(len(self.pop)) < self.p_open)
        for u in np.flatnonzero(opened).tolist():
            user = self.pop[u]
            r = self.r
            device = user.app_device if r.u() < 0.5 else user.web_device
            t = send + min(15 * HOUR_MS, int(-3 * HOUR_MS * math.log(1.0 - r.u())))
            self._emit(user, "email_open", t, None, "email", device, {"campaign": campaign})
            if r.u() < self.arch[u].email_click:
                t += 5000 + int(-120_000 * math.log(1.0 - r.u()))
                self._emit(user, "email_click", t, None, "email", device,
                           {"campaign": campaign, "page": f"/promo/{campaign}"})
                if r.u() < CLICK_SESSION_SHARE:
                    self.session(user, t + 3000 + int(r.u() * 20_000), "web")


def _stamp_day(buf: list[tuple[int, int, dict, Optional[UserProfile]]]) -> None:
    """Sets the RFC 3339 timestamps of a day's events (those with a user in slot 3)."""
    stringy = [item for item in buf if item[3] is not None]
    if not stringy:
        return
    local_ms = np.array([ts + user.stamp_offset_ms for ts, _, _, user in stringy], dtype=np.int64)
    texts = np.datetime_as_string(local_ms.astype("datetime64[ms]"), unit="ms").tolist()
    for (_, _, event, user), text in zip(stringy, texts):
        event["timestamp"] = text + user.stamp_suffix


def _iter_timed(population: list[UserProfile], days: int, end: dt.date, seed: int) -> Iterator[tuple[int, dict]]:
    """Valid events with their time in ms, in output order, ids assigned."""
    return _Simulator(population, days, _end_ms(end), seed).run()


def iter_events(users: int, days: int, end: dt.date, seed: int, *,
                population: Optional[list[UserProfile]] = None) -> Iterator[dict]:
    """The valid events of a simulation, as contract v1 JSON objects, in output order.

    Args:
      users: number of users (ignored when `population` is given).
      days: length of the period in days.
      end: end of the period, exclusive (a date means 00:00 UTC of that date).
      seed: random seed.
      population: users from `sample_population(users, days, seed)`; drawn if None.
        The simulation updates their session counters, so pass a fresh one.

    Yields:
      Event dicts, ordered by time within each day (sessions that run past
      midnight stay with the day they started on).
    """
    if population is None:
        population = sample_population(users, days, seed)
    for _, event in _iter_timed(population, days, end, seed):
        yield event


# ---------------------------------------------------------------------------
# Corruption


def _copy(event: dict) -> dict:
    copied = dict(event)
    if "properties" in copied:
        copied["properties"] = dict(copied["properties"])
    return copied


def _as_purchase(event: dict, value: Any) -> dict:
    props = event.get("properties") or {}
    event["event_type"] = "purchase"
    event["properties"] = {
        "product_id": props.get("product_id", "p-00000"), "category": props.get("category", CATEGORIES[0]),
        "value": value, "currency": props.get("currency", "EUR"), "quantity": props.get("quantity", 1)}
    if value is None:
        del event["properties"]["value"]
    return event


def _as_cart(event: dict, quantity: Any) -> dict:
    props = event.get("properties") or {}
    event["event_type"] = "add_to_cart"
    event["properties"] = {"product_id": props.get("product_id", "p-00000"),
                           "category": props.get("category", CATEGORIES[0]), "quantity": quantity}
    return event


def _with(event: dict, **fields: Any) -> dict:
    event.update(fields)
    return event


def _without(event: dict, name: str) -> dict:
    del event[name]
    return event


def _bad_currency(event: dict) -> dict:
    event["properties"]["currency"] = "euro"
    return event


def _shift_year(ts_ms: int, year: int) -> str:
    text = format_timestamp(ts_ms, 0, True)
    return f"{year:04d}{text[4:]}".replace("-02-29T", "-02-28T")


def _invalid_utf8(event: dict) -> bytes:
    event["device"] = "@@BAD@@"
    return orjson.dumps(event).replace(b"@@BAD@@", b"mob\xff\xfeile")


# A variant: (name, avro-representable, make(template copy with the corrupt id, ts_ms, draws) -> record).
_Variant = tuple[str, bool, Callable[[dict, int, _Draws], Any]]
_VARIANTS: dict[str, tuple[_Variant, ...]] = {
    ErrorCode.INVALID_JSON.value: (
        ("truncated", False, lambda e, ts, r: (lambda b: b[: len(b) // 2])(orjson.dumps(e))),
        ("invalid_utf8", False, lambda e, ts, r: _invalid_utf8(e)),
    ),
    ErrorCode.NOT_AN_OBJECT.value: (
        ("array", False, lambda e, ts, r: [e]),
        ("number", False, lambda e, ts, r: 42),
        ("string", False, lambda e, ts, r: e["event_type"]),
    ),
    ErrorCode.MISSING_FIELD.value: (
        ("no_user_id", False, lambda e, ts, r: _without(e, "user_id")),
        ("no_event_type", False, lambda e, ts, r: _without(e, "event_type")),
        ("no_timestamp", False, lambda e, ts, r: _without(e, "timestamp")),
        ("no_event_id", False, lambda e, ts, r: _without(e, "event_id")),
        ("purchase_without_value", True, lambda e, ts, r: _as_purchase(e, None)),
    ),
    ErrorCode.BAD_TYPE.value: (
        ("numeric_event_id", False, lambda e, ts, r: _with(e, event_id=int(e["event_id"].rsplit("-", 1)[1]))),
        ("string_quantity", False, lambda e, ts, r: _as_cart(e, "2")),
        ("string_value", False, lambda e, ts, r: _as_purchase(e, "12.50")),
        ("properties_list", False, lambda e, ts, r: _with(e, properties=["page", "/"])),
        ("string_consent", False, lambda e, ts, r: _with(e, consent={"analytics": "yes", "personalization": True})),
    ),
    ErrorCode.UNKNOWN_EVENT_TYPE.value: (
        ("login", True, lambda e, ts, r: _with(e, event_type="login")),
        ("typo", True, lambda e, ts, r: _with(e, event_type="page_vew")),
        ("wishlist", True, lambda e, ts, r: _with(e, event_type="wishlist_add")),
    ),
    ErrorCode.BAD_TIMESTAMP.value: (
        ("no_offset", True, lambda e, ts, r: _with(e, timestamp=format_timestamp(ts, 0, True)[:-1])),
        ("prose", True, lambda e, ts, r: _with(e, timestamp="yesterday at noon")),
        ("impossible_date", True, lambda e, ts, r: _with(e, timestamp="2026-13-45T25:61:00Z")),
        ("slashes", True, lambda e, ts, r: _with(e, timestamp=format_timestamp(ts, 0, True)[:10].replace("-", "/"))),
    ),
    ErrorCode.TIMESTAMP_OUT_OF_RANGE.value: (
        ("year_1990", True, lambda e, ts, r: _with(e, timestamp=_shift_year(ts, 1990))),
        ("year_2100", True, lambda e, ts, r: _with(e, timestamp=_shift_year(ts, 2100))),
        ("epoch_ms_1990", True, lambda e, ts, r: _with(e, timestamp=631_152_000_000 + ts % DAY_MS)),
    ),
    ErrorCode.NEGATIVE_VALUE.value: (
        ("negative_purchase", True, lambda e, ts, r: _as_purchase(e, -round(1 + 99 * r.u(), 2))),
    ),
    ErrorCode.OVERSIZED.value: (
        ("huge_search_query", True, lambda e, ts, r: _with(
            e, event_type="search",
            properties={"search_query": "cheap running shoes " * (OVERSIZED_BYTES // 20 + 1 + int(r.u() * 400)),
                        "page": "/search"})),
    ),
    ErrorCode.INVALID_FIELD_VALUE.value: (
        ("channel", True, lambda e, ts, r: _with(e, channel="carrier-pigeon")),
        ("zero_quantity", True, lambda e, ts, r: _as_cart(e, 0)),
        ("currency", True, lambda e, ts, r: _bad_currency(_as_purchase(e, 19.99))),
        ("empty_event_id", True, lambda e, ts, r: _with(e, event_id="")),
        ("long_user_id", True, lambda e, ts, r: _with(e, user_id="u-" + "9" * 300)),
    ),
}


class _Corruptor:
    """Decides where bad records go and makes them (its own random stream).

    The writer calls `remember(written)` for every valid record and
    `next_count()` after it: the number of bad records (Poisson with mean
    R / (1 - R), so that they are a fraction R of the output) to write next,
    which `make` builds, taking kinds round-robin from `kinds`.
    """

    _RECENT = 64  # duplicates re-emit one of the last 64 valid records

    def __init__(self, seed: int, rate: float, avro: bool):
        self.seed = seed
        self.avro = avro
        mean = rate / (1.0 - rate)
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, _STREAM_CORRUPTION])))
        self.r = _Draws(rng)
        if mean > 0.0:
            blocks = (rng.poisson(mean, size=1 << 15).tolist() for _ in itertools.count())
            self.next_count: Callable[[], int] = itertools.chain.from_iterable(blocks).__next__
        else:
            self.next_count = itertools.repeat(0).__next__
        self.recent: collections.deque = collections.deque(maxlen=self._RECENT)
        self.remember: Callable[[Any], None] = self.recent.append
        self.kinds = [k for k in CORRUPTION_KINDS
                      if k == DUPLICATE or any(avro_ok or not avro for _, avro_ok, _ in _VARIANTS[k])]
        self.next_kind = 0
        self.serial = 0
        self.by_code: dict[str, int] = {code.value: 0 for code in CORRUPT_CODES}
        self.duplicates = 0

    def make(self, count: int, event: dict, ts: int) -> list[Any]:
        """`count` bad records to write after the valid `event` (time `ts` ms)."""
        out = []
        for _ in range(count):
            kind = self.kinds[self.next_kind]
            self.next_kind = (self.next_kind + 1) % len(self.kinds)
            if kind == DUPLICATE:
                self.duplicates += 1
                out.append(self.recent[int(self.r.u() * len(self.recent))])
                continue
            variants = [v for v in _VARIANTS[kind] if v[1] or not self.avro]
            _, _, make = variants[int(self.r.u() * len(variants))]
            template = _copy(event)
            template["event_id"] = f"x-{self.seed}-{self.serial:07d}"
            self.serial += 1
            self.by_code[kind] += 1
            out.append(make(template, ts, self.r))
        return out


# ---------------------------------------------------------------------------
# Writing


def _resolve_format(args: argparse.Namespace) -> str:
    fmt = getattr(args, "format", None)
    if fmt:
        return fmt
    return "avro" if str(args.out).lower().endswith(".avro") else "jsonl"


def _sync_marker(seed: int) -> bytes:
    return hashlib.sha256(f"segments-generate:{seed}".encode()).digest()[:16]


def write_truth(path: pathlib.Path, population: Sequence[UserProfile]) -> None:
    """Writes the `user_id,archetype` CSV."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.write("user_id,archetype\n")
        handle.writelines(f"{user.user_id},{user.archetype}\n" for user in population)


# Lines joined per write. Small on purpose: each `orjson.dumps` result keeps its
# ~4 KiB output buffer for as long as it lives, whatever the line's length.
_CHUNK_LINES = 4096


def _write(population: list[UserProfile], days: int, end: dt.date, seed: int, rate: float, fmt: str,
           out: pathlib.Path) -> tuple[int, int, "_Corruptor"]:
    """Writes valid events interleaved with bad records; returns (events, records, corruptor)."""
    corruptor = _Corruptor(seed, rate, avro=fmt == "avro")
    remember, next_count = corruptor.remember, corruptor.next_count
    events = 0
    bad_records = 0
    if fmt == "avro":
        with open(out, "wb", buffering=1 << 20) as handle:
            # A sync marker derived from the seed keeps the file byte-reproducible.
            writer = fastavro.write.Writer(handle, fastavro.parse_schema(load_avro_schema()), codec="deflate",
                                           sync_marker=_sync_marker(seed))
            write = writer.write
            for ts, event in _iter_timed(population, days, end, seed):
                write(event)
                remember(event)
                events += 1
                count = next_count()
                if count:
                    for bad in corruptor.make(count, event, ts):
                        write(bad)
                    bad_records += count
            writer.flush()
    else:
        dumps = orjson.dumps
        chunk: list[bytes] = []
        append = chunk.append
        with open(out, "wb", buffering=1 << 20) as handle:
            for ts, event in _iter_timed(population, days, end, seed):
                line = dumps(event)
                append(line)
                remember(line)
                events += 1
                count = next_count()
                if count:
                    for bad in corruptor.make(count, event, ts):
                        append(bad if isinstance(bad, bytes) else dumps(bad))
                    bad_records += count
                    if len(chunk) >= _CHUNK_LINES:
                        handle.write(b"\n".join(chunk) + b"\n")
                        chunk.clear()
                elif len(chunk) >= _CHUNK_LINES:
                    handle.write(b"\n".join(chunk) + b"\n")
                    chunk.clear()
            if chunk:
                handle.write(b"\n".join(chunk) + b"\n")
    records = events + bad_records
    return events, records, corruptor


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pauses the cyclic garbage collector: the simulation allocates millions of
    short-lived acyclic dicts, and generational scans of them cost a third of the run."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def generate(args: argparse.Namespace) -> GenerationStats:
    """Simulates the population and writes the events (and the truth CSV, if asked).

    Args:
      args: parsed flags of `add_arguments` (users, days, end, seed, format, out,
        corrupt_rate, truth); `end=None` means `today_utc()`.

    Returns:
      Counts of what was written. Prints nothing.
    """
    users, days, seed = args.users, args.days, args.seed
    end = args.end or today_utc()
    rate = getattr(args, "corrupt_rate", 0.0) or 0.0
    fmt = _resolve_format(args)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    population = sample_population(users, days, seed)
    archetype_counts = {name: 0 for name in ARCHETYPE_NAMES}
    for user in population:
        archetype_counts[user.archetype] += 1
    truth = getattr(args, "truth", None)
    if truth is not None:
        write_truth(truth, population)

    with _gc_paused():
        events, records, corruptor = _write(population, days, end, seed, rate, fmt, out)

    corrupt = sum(corruptor.by_code.values())
    return GenerationStats(
        users=users, events=events, corrupt=corrupt, duplicates=corruptor.duplicates, records=records,
        corrupt_by_code=dict(corruptor.by_code), archetype_counts=archetype_counts, output=str(out), format=fmt,
        start=end - dt.timedelta(days=days) if not isinstance(end, dt.datetime) else (end - dt.timedelta(days=days)).date(),
        end=end if not isinstance(end, dt.datetime) else end.date(), truth=str(truth) if truth is not None else None)


def generate_events(out, *, users: int, days: int, seed: int, end: Optional[dt.date] = None,
                    fmt: Optional[str] = None, corrupt_rate: float = 0.0, truth=None) -> GenerationStats:
    """`generate` for callers without parsed flags (the demo, the benchmark, tests)."""
    return generate(argparse.Namespace(users=users, days=days, end=end, seed=seed, format=fmt, out=out,
                                       corrupt_rate=corrupt_rate, truth=truth))


def run(argv: Optional[Sequence[str]] = None) -> GenerationStats:
    """`python -m devtools.generate ...`: parses flags, generates, prints a summary line."""
    parser = argparse.ArgumentParser(prog="python -m devtools.generate", description=__doc__.split("\n")[0])
    add_arguments(parser)
    stats = generate(parser.parse_args(argv))
    print(orjson.dumps({k: (v.isoformat() if isinstance(v, dt.date) else v)
                        for k, v in dataclasses.asdict(stats).items()}).decode())
    return stats


if __name__ == "__main__":
    run()
