"""`segments train`: fit the segmentation model on features computed exactly as in serving.

A batch pipeline runs the serving transforms (read, validate, privacy, dedupe,
`ComputeUserFeatures`), keeps per user the last window ending at or before
`--until`, and hands those rows to `models.training.train_model`. The artifact
(model file + model card) goes to `--out`, a local folder or `gs://`.

    segments generate --users 20000 --days 60 --seed 1 --end 2026-11-01 --truth truth.csv --out events.jsonl
    segments train --input events.jsonl --out models/mine --truth truth.csv --demo_key
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import tempfile
from typing import Optional, Sequence

import apache_beam as beam
import orjson
from apache_beam.options.pipeline_options import PipelineOptions

from models import clustering
from models.artifact import save_artifact
from models.training import format_report, train_model
from pipelines.options import FileInputOptions, iso_date, positive_int
from transforms.features.as_of import AsOfMicros
from transforms.ingest.files import ReadEventFiles
from transforms.ingest.privacy import ApplyPrivacy
from transforms.ingest.privacy import pseudonymise

class TrainOptions(FileInputOptions):
    """Flags of `segments train` beyond the shared ones."""

    @classmethod
    def _add_argparse_args(cls, parser):
        group = parser.add_argument_group("training")
        group.add_argument("--out", default=None, help="(Required) Artifact folder to write (local or gs://).")
        group.add_argument("--until", type=iso_date, default=None,
                           help="End of the training window (exclusive, UTC date). Default: the day after the "
                                "latest event.")
        group.add_argument("--truth", default=None,
                           help="CSV user_id,archetype from `segments generate --truth`: report the adjusted Rand "
                                "index. Default: none.")
        group.add_argument("--previous", default=None,
                           help="Previous artifact folder: keep its segment ids for matching clusters. Default: none.")
        group.add_argument("--algorithm", choices=[clustering.KMEANS, clustering.GMM], default=clustering.KMEANS,
                           help="kmeans (hard) or gmm (soft membership). Default: kmeans.")
        group.add_argument("--k_min", type=positive_int, default=clustering.DEFAULT_K_RANGE[0],
                           help=f"Smallest k tried. Default: {clustering.DEFAULT_K_RANGE[0]}.")
        group.add_argument("--k_max", type=positive_int, default=clustering.DEFAULT_K_RANGE[1],
                           help=f"Largest k tried. Default: {clustering.DEFAULT_K_RANGE[1]}.")
        group.add_argument("--random_state", type=int, default=0,
                           help="random_state of the clustering fit and of its samples. Default: 0.")


def _last_window_per_user(records: beam.PCollection) -> beam.PCollection:
    return (
        records
        | "AcrossWindows" >> beam.WindowInto(beam.window.GlobalWindows())
        | "KeyByUser" >> beam.Map(lambda record: (record["user_key"], record))
        | "LatestWindow" >> beam.combiners.Top.LargestPerKey(
            1, key=lambda r: (r["window_end_us"], r["window_start_us"], r["event_count"]))
        | "Unwrap" >> beam.Map(lambda keyed: keyed[1][0])
    )


def build_pipeline(p: beam.Pipeline, options: TrainOptions, id_key: bytes, rows_prefix: str,
                   until: Optional[dt.date]) -> beam.PCollection:
    """Computes the training rows and writes them as JSON lines under `rows_prefix`."""
    parsed = p | "ReadEvents" >> ReadEventFiles(options.input, options.validation_config())
    events = parsed.events | "Privacy" >> ApplyPrivacy(id_key, options.suppression_list, options.consent_default)
    until_us = events | "Until" >> AsOfMicros(until)
    features = (events | "Features" >> options.feature_transform(ends_by=until_us, deduplicate=True)).features
    rows = _last_window_per_user(features)
    (rows
     | "ToJson" >> beam.Map(lambda record: orjson.dumps(record).decode("utf-8"))
     | "WriteRows" >> beam.io.WriteToText(rows_prefix, file_name_suffix=".jsonl"))
    return rows


def _read_rows(prefix: str) -> list[dict]:
    directory = os.path.dirname(prefix)
    rows = []
    for name in sorted(os.listdir(directory)):
        if name.endswith(".jsonl"):
            with open(os.path.join(directory, name), "rb") as handle:
                rows.extend(orjson.loads(line) for line in handle if line.strip())
    return rows


def read_truth(path: str, id_key: bytes) -> dict[str, str]:
    """The generator's truth file, keyed by the pipeline's pseudonymised user key."""
    with open(path, newline="", encoding="utf-8") as handle:
        return {pseudonymise(id_key, row["user_id"]): row["archetype"] for row in csv.DictReader(handle)}


def run(argv: Optional[Sequence[str]] = None, say=print) -> dict:
    """Trains and saves a model; returns its model card."""
    options = PipelineOptions(argv)
    train = options.view_as(TrainOptions)
    if not train.input or not train.out:
        raise ValueError("--input and --out are required")
    id_key = train.pseudonymisation_key()
    with tempfile.TemporaryDirectory(prefix="segments-train-") as scratch:
        prefix = os.path.join(scratch, "rows")
        say(f"computing training features from {', '.join(train.input)} ...")
        with beam.Pipeline(options=options) as p:
            build_pipeline(p, train, id_key, prefix, train.until)
        rows = _read_rows(prefix)
    say(f"fitting on {len(rows):,} users (one row each: the last window up to --until) ...")
    truth = read_truth(train.truth, id_key) if train.truth else None
    trained = train_model(
        rows, until=None, truth=truth, previous=train.previous, algorithm=train.algorithm,
        k_range=(train.k_min, train.k_max), seed=train.random_state)
    card = save_artifact(train.out, trained.pipeline, trained.card_fields)
    say(format_report(card))
    say(f"model {card['model_version']} written to {train.out}")
    return card
