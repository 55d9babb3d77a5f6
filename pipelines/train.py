"""`segments train`: fit the segmentation model on profiles computed exactly as in serving.

A batch pipeline runs the serving transforms (read, validate, privacy, the per-user
profile step) and scores every user as of `--until`, the calibration end; those rows go to
`models.training.train_model` (clustering, RFM thresholds, BG/NBD fitted on the customers'
lifetime figures). With `--holdout`, a second pipeline reads the events of the hold-out
period after `--until` and the model card (and the console) report how well each score
ranks and predicts who buys in it, beside recency-only and frequency-only baselines, and
the expected against actual purchases (`models.evaluation`). The artifact (model file +
model card) goes to `--out`, a local folder or `gs://`.

    segments generate --users 20000 --days 365 --holdout_days 90 --seed 1 --truth truth.csv --out events.jsonl
    segments train --input events.jsonl --holdout events.holdout.jsonl --out models/mine --truth truth.csv --demo_key
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import math
import os
import pathlib
import tempfile
from typing import Callable, Optional, Sequence

import apache_beam as beam
import orjson
from apache_beam.options.pipeline_options import PipelineOptions

from models import algorithms, clustering
from models.artifact import load_artifact, save_artifact
from models.bgnbd import BgNbdParams
from models.evaluation import (HoldoutActivity, bgnbd_recovery, evaluate_holdout, format_holdout,
                               format_recovery)
from models.training import format_report, latest_per_user, train_model
from pipelines.flags import file_location, int_in, iso_date, non_negative_float, positive_int, sha256_hex
from pipelines.options import FileInputOptions
from pipelines.summary import RunSummary, counters_of
from transforms.contracts.outcomes import ErrorCode
from transforms.features.activity import US_PER_DAY
from transforms.features.as_of import AsOfMicros
from transforms.ingest.dedupe import DedupeEvents
from transforms.ingest.files import ReadEventFiles
from transforms.ingest.privacy import ApplyPrivacy, pseudonymise


DEFAULT_BASELINE_DAYS = 7
K_TYPE = int_in(2, 100)  # a number of segments


class TrainOptions(FileInputOptions):
    """Flags of `segments train` beyond the shared ones."""

    @classmethod
    def _add_argparse_args(cls, parser):
        group = parser.add_argument_group("training")
        group.add_argument("--out", type=file_location, default=None, help="(Required) Artifact folder to write (local or gs://).")
        group.add_argument("--until", type=iso_date, default=None,
                           help="Calibration end (UTC date, midnight): users are profiled as of it, events from it on "
                                "are not read. Default: the midnight after the latest event.")
        group.add_argument("--holdout", action="append", type=file_location, default=None,
                           help="Event files of the hold-out period after --until (path, glob or gs:// pattern; "
                                "repeatable): report, for buying in the first 30 / 90 days and in the whole "
                                "hold-out, each score's AUC, top-decile lift, deciles and Brier score beside "
                                "recency-only and frequency-only, and predicted vs actual repeat purchases. "
                                "Default: none.")
        group.add_argument("--holdout_days", type=positive_int, default=None,
                           help="Length of the hold-out period, in days. Default: from --until to the midnight after "
                                "the latest hold-out event.")
        group.add_argument("--truth", type=file_location, default=None,
                           help="CSV user_id,archetype from `segments generate --truth`: report the adjusted Rand "
                                "index. Default: none.")
        group.add_argument("--previous", type=file_location, default=None,
                           help="Previous artifact folder: keep its segment ids for matching clusters. Loading it "
                                "runs code from it: pin it with --previous_sha256. Default: none.")
        group.add_argument("--previous_sha256", type=sha256_hex, default=None,
                           help="Refuse the --previous model unless its model.joblib has this SHA-256. Default: its "
                                "card's digest is checked, not pinned.")
        group.add_argument("--algorithm", choices=list(algorithms.ALGORITHMS), default=algorithms.KMEANS,
                           help="kmeans (Mahalanobis k-means), gmm (tied-covariance Gaussian mixture: soft "
                                "membership), hierarchical (Ward on a sample, served by nearest centroid) or density "
                                "(HDBSCAN on a sample, served by the clustered neighbours within reach; finds the "
                                "number of segments itself and puts users in no dense group in an Unclassified "
                                "segment). See models/README.md. "
                                "Default: kmeans.")
        group.add_argument("--k", type=K_TYPE, default=None,
                           help="Number of segments, instead of choosing it in --k_min..--k_max by stability x "
                                "silhouette (density: the k of its model space). Default: chosen.")
        group.add_argument("--k_min", type=K_TYPE, default=clustering.DEFAULT_K_RANGE[0],
                           help=f"Smallest k tried. Default: {clustering.DEFAULT_K_RANGE[0]}.")
        group.add_argument("--k_max", type=K_TYPE, default=clustering.DEFAULT_K_RANGE[1],
                           help=f"Largest k tried. Default: {clustering.DEFAULT_K_RANGE[1]}.")
        group.add_argument("--activity_weight", type=non_negative_float, default=0.0,
                           help="Weight of the activity block (active days, recent sessions, recency of the last "
                                "event, tenure) next to the behaviour in the model space; 0 leaves it out, which "
                                "recovered behaviour types best (models/README.md). Default: 0.")
        group.add_argument("--random_state", type=int, default=0,
                           help="random_state of the clustering fit and of its samples. Default: 0.")
        group.add_argument("--baseline_days", type=int_in(0, 90), default=DEFAULT_BASELINE_DAYS,
                           help="Also profile every user as of each of this many midnights before --until, to "
                                "record in the model card the share of users whose segment changes from one day to "
                                "the next (the baseline the report compares movement with; 0: none). "
                                f"Default: {DEFAULT_BASELINE_DAYS}.")


def build_pipeline(p: beam.Pipeline, options: TrainOptions, id_key: bytes, rows_prefix: str,
                   until: Optional[dt.date]) -> beam.PCollection:
    """Computes the training rows (every user's profile as of `until`, and as of each of the
    ``--baseline_days`` midnights before it) as JSON lines under `rows_prefix`."""
    parsed = p | "ReadEvents" >> ReadEventFiles(options.input, options.validation_config())
    events = (parsed.events
              | "Privacy" >> ApplyPrivacy(id_key, options.suppression_list, options.consent_default)).events
    until_us = events | "Until" >> AsOfMicros(until)
    rows = (events | "Profiles" >> options.profile_transform(until_us, options.baseline_days)).features
    (rows
     | "ToJson" >> beam.Map(lambda record: orjson.dumps(record).decode("utf-8"))
     | "WriteRows" >> beam.io.WriteToText(rows_prefix, file_name_suffix=".jsonl"))
    return rows


def _earliest(a: Optional[int], b: Optional[int]) -> Optional[int]:
    return b if a is None else (a if b is None else min(a, b))


class _HoldoutActivityFn(beam.CombineFn):
    """A user's hold-out events -> (any event, UTC days with a purchase, latest event time,
    first purchase time)."""

    def create_accumulator(self):
        return False, frozenset(), None, None

    def add_input(self, acc, event):
        active, days, latest, first_purchase = acc
        if event.event_type == "purchase":
            days = days | {event.timestamp_us // US_PER_DAY}
            first_purchase = _earliest(first_purchase, event.timestamp_us)
        return True, days, event.timestamp_us if latest is None else max(latest, event.timestamp_us), first_purchase

    def merge_accumulators(self, accumulators):
        active, days, latest, first_purchase = False, frozenset(), None, None
        for a, d, t, f in accumulators:
            active, days = active or a, days | d
            latest = t if latest is None else (latest if t is None else max(latest, t))
            first_purchase = _earliest(first_purchase, f)
        return active, days, latest, first_purchase

    def extract_output(self, acc):
        active, days, latest, first_purchase = acc
        return {"active": active, "purchase_days": len(days), "latest_us": latest,
                "first_purchase_us": first_purchase}


def build_holdout_pipeline(p: beam.Pipeline, options: TrainOptions, id_key: bytes, prefix: str, start_us: int,
                           end_us: Optional[int]) -> beam.PCollection:
    """Per user, what they did in the hold-out files in [start_us, end_us), as JSON lines under `prefix`."""
    parsed = p | "ReadHoldout" >> ReadEventFiles(options.holdout, options.validation_config())
    events = (parsed.events
              | "Privacy" >> ApplyPrivacy(id_key, options.suppression_list, options.consent_default)).events
    activity = (
        events
        | "InHoldoutPeriod" >> beam.Filter(
            lambda event: start_us <= event.timestamp_us and (end_us is None or event.timestamp_us < end_us))
        | "Dedupe" >> DedupeEvents()
        | "KeyByUser" >> beam.Map(lambda event: (event.user_id, event))
        | "ActivityPerUser" >> beam.CombinePerKey(_HoldoutActivityFn())
    )
    (activity
     | "ToJson" >> beam.Map(lambda kv: orjson.dumps(dict(kv[1], user_key=kv[0])).decode("utf-8"))
     | "WriteActivity" >> beam.io.WriteToText(prefix, file_name_suffix=".jsonl"))
    return activity


def _read_rows(prefix: str) -> list[dict]:
    directory = os.path.dirname(prefix)
    rows = []
    for name in sorted(os.listdir(directory)):
        if name.startswith(os.path.basename(prefix)) and name.endswith(".jsonl"):
            with open(os.path.join(directory, name), "rb") as handle:
                rows.extend(orjson.loads(line) for line in handle if line.strip())
    return rows


def _no_rows_reason(summary: RunSummary, options: TrainOptions) -> str:
    """Why a training run found no user to fit: what became of the events read."""
    dead = {code: n for code, n in summary.dead_lettered.items() if n}
    if summary.read == 0:
        return "no record was read from --input"
    if summary.valid == 0 and dead:
        code, n = max(dead.items(), key=lambda kv: kv[1])
        hint = {ErrorCode.TIMESTAMP_OUT_OF_RANGE.value: " (see --max_event_age_days and --max_future_skew_hours)",
                ErrorCode.OVERSIZED.value: " (see --max_event_bytes)"}.get(code, "")
        return (f"all {summary.read:,} records were dead-lettered or filtered; the most common fate: {n:,} "
                f"{code}{hint}")
    if summary.valid == 0:
        return f"all {summary.read:,} records were filtered: {summary.filtered}"
    return f"none of the {summary.valid:,} valid events is before --until {options.until}"


def read_truth(path: str, id_key: bytes) -> dict[str, str]:
    """The generator's truth file, keyed by the pipeline's pseudonymised user key."""
    with open(path, newline="", encoding="utf-8") as handle:
        return {pseudonymise(id_key, row["user_id"]): row["archetype"] for row in csv.DictReader(handle)}


def run(argv: Optional[Sequence[str]] = None, say: Callable[[str], None] = print) -> dict:
    """Trains and saves a model; returns its model card.

    Raises:
        ValueError: no user to fit (the message says what became of the events).
    """
    options = PipelineOptions(argv)
    train = options.view_as(TrainOptions)
    if not train.input or not train.out:
        raise ValueError("--input and --out are required")
    if train.k is None and train.k_min > train.k_max:
        raise ValueError(f"--k_min {train.k_min} is above --k_max {train.k_max}")
    id_key = train.pseudonymisation_key()
    # Refused before any work: the previous model is verified (and pinned) now, used after the fit.
    previous = (load_artifact(train.previous, expected_sha256=train.previous_sha256)
                if train.previous else None)
    rules = train.profile_rules()
    with tempfile.TemporaryDirectory(prefix="segments-train-") as scratch:
        prefix = os.path.join(scratch, "rows")
        say(f"computing every user's profile as of --until from {', '.join(train.input)} ...")
        with beam.Pipeline(options=options) as p:
            build_pipeline(p, train, id_key, prefix, train.until)
        summary = RunSummary.from_counters(counters_of(p.result))
        rows = _read_rows(prefix)
        holdout = None
        if train.holdout:
            say(f"reading the hold-out period from {', '.join(train.holdout)} ...")
            start_us = max((int(r["as_of_us"]) for r in rows), default=0)
            end_us = start_us + train.holdout_days * US_PER_DAY if train.holdout_days else None
            with beam.Pipeline(options=options) as p:
                build_holdout_pipeline(p, train, id_key, os.path.join(scratch, "holdout"), start_us, end_us)
            holdout_summary = RunSummary.from_counters(counters_of(p.result))
            holdout = _read_rows(os.path.join(scratch, "holdout"))
    say(f"input: {summary.console_line()}")
    dead = {code: n for code, n in summary.dead_lettered.items() if n}
    if dead:
        say(f"dead letters by code: {dead}")
    if not rows:
        raise ValueError(f"no user to fit: {_no_rows_reason(summary, train)}")
    say(f"fitting on {len({r['user_key'] for r in rows}):,} users (each profiled as of the calibration end) ...")
    truth = read_truth(train.truth, id_key) if train.truth else None
    trained = train_model(
        rows, until=None, truth=truth, previous=previous, algorithm=train.algorithm, k=train.k,
        k_range=(train.k_min, train.k_max), seed=train.random_state, activity_weight=train.activity_weight,
        money=rules.rates.card(rules.reporting_currency))
    fields = trained.card_fields
    # The evaluations read each user once, as of the calibration end (the baseline days are not theirs).
    # (In the order read: the BG/NBD fits of the evaluations sum in that order.)
    latest = {r["user_key"]: int(r["as_of_us"]) for r in latest_per_user(rows, None)}
    calibration_rows = [r for r in rows if int(r["as_of_us"]) == latest[r["user_key"]]]
    recovery = _recovery(calibration_rows, truth, train.truth) if truth is not None else None
    if recovery:
        fields = dict(fields, bgnbd_recovery=recovery)
    if holdout is not None:
        say(f"hold-out input: {holdout_summary.console_line()}")
        fields = dict(fields, holdout=_evaluate(calibration_rows, holdout, fields, train))
    card = save_artifact(train.out, trained.model, fields)
    say(format_report(card))
    if recovery:
        say(format_recovery(recovery))
    if holdout is not None:
        say(format_holdout(card["holdout"]))
    say(f"model {card['model_version']} written to {train.out}")
    return card


def _recovery(rows: list[dict], truth: dict[str, str], truth_path: str) -> Optional[list[dict]]:
    """BG/NBD recovery per archetype when the generator's parameters sit next to its truth file."""
    params_path = pathlib.Path(truth_path).with_suffix(".params.json")
    if not params_path.exists():
        return None
    archetypes = json.loads(params_path.read_text())["archetypes"]
    params = {name: BgNbdParams.from_card(a["bgnbd"]) for name, a in archetypes.items() if "bgnbd" in a}
    return bgnbd_recovery(rows, truth, params)


def _evaluate(rows: list[dict], holdout: list[dict], fields: dict, options: TrainOptions) -> dict:
    calibration_end_us = max(int(r["as_of_us"]) for r in rows)
    if options.holdout_days:
        days = options.holdout_days
    else:
        latest = max((a["latest_us"] for a in holdout if a["latest_us"] is not None), default=calibration_end_us)
        days = max(1, math.ceil((latest - calibration_end_us) / US_PER_DAY))
    activity = {a["user_key"]: HoldoutActivity(
        bool(a["active"]), int(a["purchase_days"]),
        None if a["first_purchase_us"] is None else (a["first_purchase_us"] - calibration_end_us) / US_PER_DAY)
        for a in holdout}
    params = BgNbdParams.from_card(fields["bgnbd"])
    return evaluate_holdout(rows, activity, params, days)
