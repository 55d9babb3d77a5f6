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

from devtools.generate.archetypes import ARCHETYPE_NAMES, ARCHETYPES, CATEGORIES, Archetype
from devtools.generate.cli import add_arguments, run, today_utc
from devtools.generate.corruption import CORRUPT_CODES, CORRUPTION_KINDS, DUPLICATE
from devtools.generate.population import UserProfile, sample_population
from devtools.generate.simulation import iter_events
from devtools.generate.timestamps import format_timestamp
from devtools.generate.writing import GenerationStats, generate, generate_events

__all__ = [
    "ARCHETYPES", "ARCHETYPE_NAMES", "Archetype", "CATEGORIES", "CORRUPTION_KINDS", "CORRUPT_CODES", "DUPLICATE",
    "GenerationStats", "UserProfile", "add_arguments", "format_timestamp", "generate", "generate_events",
    "iter_events", "run", "sample_population", "today_utc",
]
