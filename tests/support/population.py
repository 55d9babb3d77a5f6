"""One generated population for the segment-quality and algorithm tests, made once per session.

`segments generate` with 3,000 users over 365 days (seed 3, with its truth file), profiled
by the training pipeline exactly as `segments train` does (`pipelines.train.build_pipeline`:
the serving feature transforms, every user as of the midnight after the latest event),
plus a small separate file of events (150 users over 20 days) for the batch job to serve.
"""

from __future__ import annotations

import pathlib
from typing import NamedTuple

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from devtools import generate
from pipelines.train import TrainOptions, _read_rows, build_pipeline, read_truth
from transforms.ingest.privacy import DEMO_ID_KEY

USERS, DAYS, SEED = 3000, 365, 3
SERVED_USERS, SERVED_DAYS, SERVED_SEED = 150, 20, 4


class Population(NamedTuple):
    rows: list[dict]  # training rows: one profile record per user
    truth: dict[str, str]  # user_key -> archetype
    events: pathlib.Path  # the events the rows come from
    served_events: pathlib.Path  # another, small file for the batch job


def make_population(work: pathlib.Path) -> Population:
    events, truth_path = work / "events.jsonl", work / "truth.csv"
    generate.generate_events(events, users=USERS, days=DAYS, seed=SEED, fmt="jsonl", truth=truth_path)
    # Without the baseline days: only the rows as of the calibration end (one per user).
    options = PipelineOptions(["--input", str(events), "--out", str(work / "unused"), "--demo_key",
                               "--baseline_days", "0"])
    prefix = str(work / "rows" / "rows")
    with beam.Pipeline(options=options) as p:
        build_pipeline(p, options.view_as(TrainOptions), DEMO_ID_KEY, prefix, None)
    served = work / "served.jsonl"
    generate.generate_events(served, users=SERVED_USERS, days=SERVED_DAYS, seed=SERVED_SEED, fmt="jsonl")
    return Population(_read_rows(prefix), read_truth(str(truth_path), DEMO_ID_KEY), events, served)
