"""Does the checkout-friction moment see a checkout incident? The acceptance measurement, in batch.

Generates a population with a one-week checkout incident (`segments generate --incident`),
runs the batch job on DirectRunner scoring every user as of every midnight from two weeks
before the incident to two weeks after, and compares, per score date, the share of the
affected users (the truth file's ``incident_affected``) and of the unaffected ones in the
``checkout_friction`` moment:

* rise: the affected share on the incident's first day (scored at the midnight after it,
  within 24 h of event time) against their mean share over the week before;
* fall: the affected share a week after the incident's last day (the 7-day window no longer
  holds it) against the highest daily share of the week before;
* unaffected: the unaffected users in the moment at some time of the incident week against
  those of the week before: a move is a two-sided binomial test (equal weeks, so 1/2) below
  p = 0.01. Distinct users, not user-days: a user stays in the moment for days, so user-days
  are not independent counts.

Run (writes nothing but a temporary folder; prints the daily shares and the verdict)::

    nice -n 10 .venv/bin/python -m benchmarks.incident_moments --users 20000 --days 120
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import datetime as dt
import json
import os
import pathlib
import tempfile
import time
from typing import Iterable, Mapping, Optional

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from scipy.stats import binomtest

from devtools.generate import generate_events
from devtools.generate.incidents import Incident, parse_incident
from models import DEFAULT_MODEL_DIR
from models.serving import serving_model
from models.moments import CHECKOUT_FRICTION
from pipelines import batch
from transforms.ingest.privacy import DEMO_ID_KEY, pseudonymise

DAY = dt.timedelta(days=1)
RISE = 3.0  # the acceptance's threefold rise


@dataclasses.dataclass(frozen=True)
class Verdict:
    """The measurement: daily shares in the moment and the three acceptance checks."""

    daily: dict  # score date (ISO) -> {"affected": share, "unaffected": share}
    affected_users: int
    unaffected_users: int
    before_mean: float
    before_max: float
    first_day: float
    week_after: float
    unaffected_before: float
    unaffected_during: float
    unaffected_users_before: int  # unaffected users in the moment on some day of the week before
    unaffected_users_during: int  # ... of the incident week

    @property
    def rises(self) -> bool:
        return self.first_day >= RISE * self.before_mean and self.first_day > 0

    @property
    def falls_back(self) -> bool:
        return self.week_after <= self.before_max

    @property
    def unaffected_p(self) -> float:
        n = self.unaffected_users_before + self.unaffected_users_during
        return 1.0 if n == 0 else float(binomtest(self.unaffected_users_during, n, 0.5).pvalue)

    @property
    def unaffected_still(self) -> bool:
        return self.unaffected_p >= 0.01


def score_moments(events: pathlib.Path, model_dir: str, history_days: int, out: pathlib.Path) -> pathlib.Path:
    """Runs the batch graph (no warehouse) and writes (user_key, score_date, moment) as JSON lines."""
    options = batch.BatchOptions(["--input", str(events), "--demo_key", "--history_days", str(history_days),
                                  "--model", model_dir, "--direct_num_workers", "1"])
    path = out / "moments.jsonl"
    with beam.Pipeline(options=PipelineOptions(["--direct_num_workers", "1"])) as p:
        outputs = batch.build_pipeline(p, options, DEMO_ID_KEY, serving_model(model_dir))
        (outputs.assignments
         | "Moments" >> beam.Map(lambda a: json.dumps({"user_key": a["user_key"], "as_of_us": a["as_of_us"],
                                                       "moment": a["moment"]}))
         | "Write" >> beam.io.WriteToText(str(path), shard_name_template=""))
    return path


def affected_keys(truth: pathlib.Path) -> tuple[set[str], set[str]]:
    """The pseudonymous keys of the affected and the unaffected users of a truth CSV."""
    affected, unaffected = set(), set()
    with open(truth, encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            (affected if row["incident_affected"] == "true" else unaffected).add(
                pseudonymise(DEMO_ID_KEY, row["user_id"]))
    return affected, unaffected


def measure(rows: Iterable[Mapping], affected: set[str], incident: Incident,
            moment: str = CHECKOUT_FRICTION) -> Verdict:
    """Shares of the affected and unaffected users in `moment` per score date, and the checks.

    `rows`: one per user and score date (``user_key``, ``as_of_us`` of a midnight, ``moment``).
    """
    counts: dict[dt.date, dict[bool, list[int]]] = {}
    unaffected_in: dict[dt.date, set[str]] = {}
    for row in rows:
        day = dt.date(1970, 1, 1) + dt.timedelta(microseconds=int(row["as_of_us"])) - DAY
        hit = row["user_key"] in affected
        tally = counts.setdefault(day, {True: [0, 0], False: [0, 0]})[hit]
        tally[0] += row["moment"] == moment
        tally[1] += 1
        if not hit and row["moment"] == moment:
            unaffected_in.setdefault(day, set()).add(row["user_key"])
    share = {day: {group: (n / total if total else 0.0) for group, (n, total) in by.items()}
             for day, by in counts.items()}
    start, end = incident.start, incident.end
    before = [share[start - k * DAY] for k in range(1, 8) if start - k * DAY in share]
    during = [share[d] for d in (start + k * DAY for k in range((end - start).days)) if d in share]
    if not before or not during or end - DAY + 7 * DAY not in share:
        raise ValueError("the scored dates must cover the week before the incident to a week after it")
    users = {group: max(by[group][1] for by in counts.values()) for group in (True, False)}
    incident_days = [start + k * DAY for k in range((end - start).days)]

    def unaffected_over(days) -> int:
        return len(set().union(*(unaffected_in.get(d, set()) for d in days)))

    return Verdict(
        daily={day.isoformat(): {"affected": s[True], "unaffected": s[False]} for day, s in sorted(share.items())},
        affected_users=users[True], unaffected_users=users[False],
        before_mean=sum(s[True] for s in before) / len(before), before_max=max(s[True] for s in before),
        first_day=share[start][True], week_after=share[end - DAY + 7 * DAY][True],
        unaffected_before=sum(s[False] for s in before) / len(before),
        unaffected_during=sum(s[False] for s in during) / len(during),
        unaffected_users_before=unaffected_over(start - k * DAY for k in range(1, 8)),
        unaffected_users_during=unaffected_over(incident_days))


def run_measurement(*, users: int, days: int, seed: int, end: dt.date, share: float, folder: pathlib.Path,
                    model_dir: str = DEFAULT_MODEL_DIR) -> tuple[Verdict, Incident, dict]:
    """Generates, scores and measures; the incident is the week that ends three weeks before `end`."""
    incident = parse_incident(f"checkout_failure:{end - 21 * DAY}:{end - 14 * DAY}:{share}")
    timings = {}
    began = time.perf_counter()
    stats = generate_events(folder / "events.jsonl", users=users, days=days, seed=seed, end=end,
                            truth=folder / "truth.csv", incident=incident)
    timings["generate_s"] = time.perf_counter() - began
    began = time.perf_counter()
    path = score_moments(folder / "events.jsonl", model_dir, history_days=28, out=folder)
    timings["score_s"] = time.perf_counter() - began
    affected, _ = affected_keys(folder / "truth.csv")
    with open(path, encoding="utf-8") as handle:
        verdict = measure((json.loads(line) for line in handle), affected, incident)
    timings.update(events=stats.events, failed_checkouts=stats.failed_checkouts)
    return verdict, incident, timings


def main(argv: Optional[list[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=20000, help="Default: 20000.")
    parser.add_argument("--days", type=int, default=120, help="Default: 120.")
    parser.add_argument("--seed", type=int, default=29, help="Default: 29.")
    parser.add_argument("--end", type=dt.date.fromisoformat, default=dt.date(2026, 11, 1), help="Default: 2026-11-01.")
    parser.add_argument("--share", type=float, default=0.3, help="Share of users affected. Default: 0.3.")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        verdict, incident, timings = run_measurement(users=args.users, days=args.days, seed=args.seed, end=args.end,
                                                     share=args.share, folder=pathlib.Path(tmp))
    print(f"incident {incident.as_params()}; load average {os.getloadavg()[0]:.1f}; {timings}")
    print(f"users: {verdict.affected_users} affected, {verdict.unaffected_users} unaffected")
    print("score_date   affected  unaffected   (share in checkout_friction)")
    for day, s in verdict.daily.items():
        mark = " <- incident" if incident.start.isoformat() <= day < incident.end.isoformat() else ""
        print(f"{day}   {s['affected']:7.4f}   {s['unaffected']:7.4f}{mark}")
    print(f"rise: first incident day {verdict.first_day:.4f} against {verdict.before_mean:.4f} the week before "
          f"(x{verdict.first_day / verdict.before_mean if verdict.before_mean else float('inf'):.1f}): "
          f"{'holds' if verdict.rises else 'FAILS'}")
    print(f"fall: a week after the end {verdict.week_after:.4f} against at most {verdict.before_max:.4f} the week "
          f"before: {'holds' if verdict.falls_back else 'FAILS'}")
    print(f"unaffected: mean share {verdict.unaffected_during:.4f} during against {verdict.unaffected_before:.4f} "
          f"before; {verdict.unaffected_users_during} users in the moment during the incident week against "
          f"{verdict.unaffected_users_before} the week before (binomial p = {verdict.unaffected_p:.3g}): "
          f"{'holds' if verdict.unaffected_still else 'FAILS'}")


if __name__ == "__main__":
    main()
