"""Realistic synthetic behavioural events with churn and purchases (`segments generate`).

A population of users is drawn from seven latent archetypes (`ARCHETYPES`): behaviour
types that differ in how often they visit, how far through the funnel they go, what
they spend, how they react to e-mail campaigns, which categories, channels and devices
they prefer, when in the day and the week they come, and how they buy and leave. Each
user arrives at some time in the period, buys (or not) by a BG/NBD process, may drop
out, and is simulated day by day; the events are written as event contract v1 records
(`transforms/contracts/events.py`), as JSON lines or Avro.

Run it::

    segments generate --users 20000 --days 365 --holdout_days 90 --seed 7 \
        --out /tmp/events.jsonl --truth /tmp/truth.csv --corrupt-rate 0.01
    python -m devtools.generate --users 2000 --out /tmp/events.avro

Modules, one per concept:

* `archetypes`: the archetypes' behaviour and purchase parameters (table there);
* `population`: users, their personal draws (activity, preferences, time zone,
  consent, currency);
* `lifecycle`: arrival over the first 80 % of the calibration period, the BG/NBD
  purchase process, dropout (the model is documented there);
* `simulation`: sessions, orders, campaigns and refunds as events, day by day;
* `corruption`: bad records and duplicates of `--corrupt-rate`;
* `writing`: the files (calibration and hold-out), `generate`;
* `truth`: the truth CSV and `<truth stem>.params.json` of `--truth`;
* `cli`: the flags; `randomness` and `timestamps`: helpers.

Period: `--days + --holdout_days` whole UTC days ending (exclusively) at `--end`
00:00 UTC; the default `--end` is today's date in UTC, so no event is in the future
and every event falls inside the validator's default time range. Events of the first
`--days` days (the calibration period) go to `--out`, those of the last
`--holdout_days` days to the hold-out file (`writing`).

Records: one JSON object per line (or one Avro record each). Valid events have ids
"e-<seed>-<n>" numbered in output order (over both files), user ids "u-000123",
session ids "s-<user>-<n>", order ids "o-<user>-<n>" (`properties.order_id` of
purchases and refunds). Output is in time order within each day (a session that
runs past midnight stays with the day it started on, an order's session with the
day of its order), with users interleaved. Stats: `GenerationStats`; nothing is
printed.

Determinism: the output depends only on the arguments (never on the wall clock,
apart from the `--end` default). Random draws come from numpy `PCG64` streams keyed
by `(seed, purpose[, day])`, so the valid events do not depend on `--corrupt-rate` or
`--format`: the same seed gives the same valid events (same ids, same values, same
timestamp forms) in JSON lines and in Avro.

Timestamps: about 10 % of events carry integer epoch milliseconds; the others an
RFC 3339 string with millisecond precision: the user's local offset (e.g. "+01:00",
"+05:30", "-05:00") for about 75 % of users, "Z" for the others. Sessions follow the
user's local daily rhythm (evening peak in local time). Currency by region (EUR,
USD, GBP; a tenth of users one of the three at random) on purchases and refunds.
Consent: 93 % of users always send `{analytics: true, personalization: true}`, 3 %
send `personalization: false`, and 4 % never send a consent object (the pipeline's
strict default treats those as not consenting).

Corruption (`--corrupt-rate R`): a fraction R of the calibration file's records are
bad records, spread round-robin over the kinds in `CORRUPTION_KINDS`: the ten
dead-letter codes the validator can produce for a single record (see `ErrorCode`),
plus exact duplicates of an earlier valid record (a duplicate is one slot of the
round-robin, i.e. duplicates are part of the R budget, about R/11 of the output).
Corrupt records have ids "x-<seed>-<n>" (or no usable id at all), so they never
collide with a valid event's "e-<seed>-<n>". In Avro only what the schema can
represent is produced: invalid_json, not_an_object and bad_type are skipped, and
missing_field is only "a purchase without a value". The hold-out file has none.
"""

from devtools.generate import archetypes, corruption, lifecycle, population, simulation, truth, writing
from devtools.generate.archetypes import ARCHETYPE_NAMES, ARCHETYPES, CATEGORIES, Archetype, PurchaseProcess
from devtools.generate.cli import add_arguments, run, today_utc
from devtools.generate.corruption import CORRUPT_CODES, CORRUPTION_KINDS, DUPLICATE
from devtools.generate.population import UserProfile, sample_population
from devtools.generate.simulation import iter_events
from devtools.generate.timestamps import format_timestamp
from devtools.generate.truth import TRUTH_COLUMNS
from devtools.generate.writing import GenerationStats, generate, generate_events

__all__ = [
    "ARCHETYPES", "ARCHETYPE_NAMES", "Archetype", "CATEGORIES", "CORRUPTION_KINDS", "CORRUPT_CODES", "DUPLICATE",
    "GenerationStats", "PurchaseProcess", "TRUTH_COLUMNS", "UserProfile", "add_arguments", "archetypes",
    "corruption", "format_timestamp", "generate", "generate_events", "iter_events", "lifecycle", "population",
    "run", "sample_population", "simulation", "today_utc", "truth", "writing",
]
