"""The flags of `segments generate` (also `python -m devtools.generate`)."""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import pathlib
from typing import TYPE_CHECKING, Optional, Sequence

import orjson

from pipelines.flags import int_in, iso_date, non_negative_int

if TYPE_CHECKING:
    from devtools.generate.writing import GenerationStats

MAX_USERS = 10_000_000
MAX_DAYS = 3650


def _output_file(text: str) -> pathlib.Path:
    """argparse type: a file to write (not a directory)."""
    path = pathlib.Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory: give a file path")
    return path


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}")
    return value


def _incident(text: str):
    from devtools.generate.incidents import parse_incident

    return parse_incident(text)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the generator's flags to `parser`."""
    parser.add_argument("--users", type=int_in(1, MAX_USERS), metavar="N", default=2000,
                        help=f"Number of simulated users (at most {MAX_USERS:,}); they arrive over the first 80%% of "
                             "the --days period. "
                             "Default: 2000.")
    parser.add_argument("--days", type=int_in(1, MAX_DAYS), metavar="D", default=30,
                        help=f"Length of the calibration period (the --out file), in whole UTC days "
                             f"(at most {MAX_DAYS:,}). Default: 30.")
    parser.add_argument("--holdout_days", type=non_negative_int(MAX_DAYS), metavar="N", default=0,
                        help="Also simulate N whole UTC days after the calibration period and write their events "
                             "to --holdout_out: the simulation then covers --days + N days ending at --end. "
                             "Default: 0 (one file, no hold-out).")
    parser.add_argument("--holdout_out", type=_output_file, metavar="PATH", default=None,
                        help="Hold-out file, with --holdout_days (valid events only, same format as --out). "
                             "Default: <out stem>.holdout<suffix>, e.g. events.holdout.jsonl.")
    parser.add_argument("--end", type=iso_date, metavar="DATE", default=None,
                        help="End of the simulated period, exclusive, as YYYY-MM-DD (00:00 UTC of that date); "
                             "the calibration period ends --holdout_days earlier. Default: today's date in UTC, "
                             "so no event is in the future.")
    parser.add_argument("--seed", type=non_negative_int(2**63 - 1), metavar="SEED", default=0,
                        help="Random seed (non-negative integer); same arguments give identical bytes. Default: 0.")
    parser.add_argument("--format", choices=("jsonl", "avro"), default=None,
                        help="Output format. Default: avro if --out ends with .avro, else jsonl (JSON lines).")
    parser.add_argument("--out", type=_output_file, metavar="PATH", required=True,
                        help="Output file of the calibration period (parent directories are created). Required.")
    parser.add_argument("--corrupt-rate", dest="corrupt_rate", type=_rate, metavar="R", default=0.0,
                        help="Fraction of the --out file's records, in [0, 1), that are bad: invalid records of "
                             "every dead-letter kind plus exact duplicates, round-robin (none in the hold-out "
                             "file). Default: 0.0.")
    parser.add_argument("--truth", type=_output_file, metavar="PATH", default=None,
                        help="Also write a CSV of each user's latent truth: user_id, archetype, acquired_at, "
                             "alive_at_calibration_end, dropped_out_at, purchase_rate_per_day (lambda), "
                             "dropout_probability (p), first_purchase_at (times RFC 3339 UTC), and "
                             "<truth stem>.params.json with the per-archetype BG/NBD parameters (alpha per day). "
                             "Default: not written.")
    parser.add_argument("--incident", type=_incident, metavar="KIND:START:END:SHARE", default=None,
                        help="Inject an incident: checkout_failure:START:END:SHARE makes the online orders of a "
                             "random SHARE (in (0, 1]) of the users fail at checkout (retried twice, nothing "
                             "bought) from START to END (YYYY-MM-DD, 00:00 UTC, END exclusive); the affected users "
                             "are marked in the --truth CSV (incident_affected). Default: none.")


def today_utc() -> dt.date:
    """The `--end` default: today's date in UTC (the only use of the wall clock)."""
    return dt.datetime.now(dt.timezone.utc).date()


def run(argv: Optional[Sequence[str]] = None) -> "GenerationStats":
    """`python -m devtools.generate ...`: parses flags, generates, prints a summary line."""
    from devtools.generate.writing import generate

    parser = argparse.ArgumentParser(prog="python -m devtools.generate",
                                     description="Realistic synthetic behavioural events.")
    add_arguments(parser)
    stats = generate(parser.parse_args(argv))
    print(orjson.dumps({k: (v.isoformat() if isinstance(v, dt.date) else v)
                        for k, v in dataclasses.asdict(stats).items()}).decode())
    return stats

