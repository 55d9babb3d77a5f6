"""The generator's truth: each user's latent state (CSV) and the parameters behind it (JSON).

`--truth PATH` writes a CSV with one row per user, in user order:

=========================  ==============================================================
column                     meaning
=========================  ==============================================================
user_id                    as in the events
archetype                  the latent archetype (`ARCHETYPE_NAMES`)
acquired_at                first visit, RFC 3339 UTC ("...Z", ms)
alive_at_calibration_end   "true" if the user had not dropped out by the calibration end
                           (`--end` minus `--holdout_days`), else "false"
dropped_out_at             when the user left (no event after it), or empty if it had not
                           left by `--end`
purchase_rate_per_day      lambda, the user's purchase rate while alive (per day)
dropout_probability        p, the user's chance of leaving after each repeat purchase
first_purchase_at          the first order's time, or empty if none before `--end`
incident_affected          "true" if `--incident` hits the user (`incidents`), else "false"
=========================  ==============================================================

Times are those of the whole simulated period (calibration and hold-out), and are
the exact timestamps of the events (an order's purchase lines carry its time; a buyer
drops out at the time of its last order).

It also writes `<truth stem>.params.json` (e.g. truth.params.json): the period, the
arrival and dropout settings, and per archetype the BG/NBD parameters (r, alpha in
1/day, a, b) with the first-purchase rate and the non-buyer hazard, so that a fitted
model can be compared with the truth.
"""

from __future__ import annotations

import datetime as dt
import pathlib
from typing import Optional, Sequence

import orjson

from devtools.generate.archetypes import ACQUISITION_SHARE, ARCHETYPE_NAMES, ARCHETYPES
from devtools.generate.lifecycle import FIRST_VISIT_MS, arrival_days
from devtools.generate.population import UserProfile
from devtools.generate.timestamps import format_timestamp

TRUTH_COLUMNS: tuple[str, ...] = (
    "user_id", "archetype", "acquired_at", "alive_at_calibration_end", "dropped_out_at",
    "purchase_rate_per_day", "dropout_probability", "first_purchase_at", "incident_affected",
)


def params_path(truth: pathlib.Path) -> pathlib.Path:
    """`<truth stem>.params.json` next to the truth CSV."""
    truth = pathlib.Path(truth)
    return truth.with_name(f"{truth.stem}.params.json")


def _iso(ms: int) -> str:
    return format_timestamp(ms, 0, True)


def write_truth(path: pathlib.Path, population: Sequence[UserProfile], *, start_ms: int,
                calibration_end_ms: int, affected: Optional[Sequence[bool]] = None) -> None:
    """Writes the truth CSV (columns `TRUTH_COLUMNS`).

    Args:
      path: the CSV to write (parent directories are created).
      population: the simulated users (lifecycle times relative to `start_ms`).
      start_ms: epoch ms of the period start.
      calibration_end_ms: epoch ms of the calibration end.
      affected: per user (by index), whether an incident hits them; None: no incident.
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [",".join(TRUTH_COLUMNS) + "\n"]
    for user in population:
        dropped = user.dropped_out_ms
        first = user.first_purchase_ms
        alive = dropped is None or start_ms + dropped >= calibration_end_ms
        rows.append(",".join((
            user.user_id, user.archetype, _iso(start_ms + user.acquired_ms), "true" if alive else "false",
            "" if dropped is None else _iso(start_ms + dropped), repr(user.purchase_rate),
            repr(user.dropout_probability), "" if first is None else _iso(start_ms + first),
            "true" if affected is not None and affected[user.index] else "false",
        )) + "\n")
    with open(path, "w", encoding="utf-8", newline="") as handle:
        handle.writelines(rows)


def truth_params(*, start: dt.date, end: dt.date, days: int, holdout_days: int, users: int, seed: int,
                 archetype_counts: dict[str, int]) -> dict:
    """The parameters behind the truth: period, arrival, and per archetype the purchase process."""
    calibration_end = start + dt.timedelta(days=days)
    arrivals = arrival_days(days)
    return {
        "time_unit": "day",
        "users": users,
        "seed": seed,
        "period_start": start.isoformat(),
        "calibration_end": calibration_end.isoformat(),
        "end": end.isoformat(),
        "calibration_days": days,
        "holdout_days": holdout_days,
        "arrival": {
            "process": "Poisson arrivals of constant intensity over the first days of the calibration period, "
                       "conditioned on the number of users: acquisition days i.i.d. uniform, time of day from "
                       "the archetype's local daily rhythm",
            "share_of_calibration_period": ACQUISITION_SHARE,
            "first_day": start.isoformat(),
            "last_day_exclusive": (start + dt.timedelta(days=arrivals)).isoformat(),
        },
        "purchases": {
            "model": "BG/NBD (Fader, Hardie & Lee 2005) from the first purchase: lambda ~ Gamma(r, rate alpha) "
                     "per day, p ~ Beta(a, b); Poisson(lambda) purchases while alive; after each repeat "
                     "purchase the user leaves with probability p",
            "first_purchase": "Exponential(first_purchase_rate_per_day) after acquisition, independent of "
                              "lambda, unless the user leaves first",
            "nonbuyer_dropout": "users who have not bought yet leave with a constant hazard "
                                "(nonbuyer_dropout_per_day): an Exponential time after acquisition",
            "daily_rhythm": "each order is moved within its local day to a time drawn from the archetype's "
                            "hour profile (at least "
                            f"{FIRST_VISIT_MS // 60_000} minutes after acquisition)",
            "dropout": "a dropped-out user has no event after dropped_out_at (its last order, for a buyer)",
        },
        "archetypes": {
            name: {
                "weight": ARCHETYPES[name].weight,
                "users": archetype_counts.get(name, 0),
                "bgnbd": {"r": ARCHETYPES[name].purchases.r, "alpha": ARCHETYPES[name].purchases.alpha,
                          "a": ARCHETYPES[name].purchases.a, "b": ARCHETYPES[name].purchases.b},
                "mean_purchase_rate_per_day": ARCHETYPES[name].purchases.mean_rate,
                "mean_dropout_probability": ARCHETYPES[name].purchases.mean_dropout,
                "first_purchase_rate_per_day": ARCHETYPES[name].purchases.first_purchase_rate,
                "nonbuyer_dropout_per_day": ARCHETYPES[name].purchases.nonbuyer_dropout,
                "browse_sessions_per_day": ARCHETYPES[name].browse_sessions_per_day,
            }
            for name in ARCHETYPE_NAMES
        },
    }


def write_params(path: pathlib.Path, params: dict) -> None:
    """Writes the parameters as indented JSON."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps(params, option=orjson.OPT_INDENT_2) + b"\n")
