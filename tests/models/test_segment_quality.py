"""Segment quality on generated behaviour: the trained model finds the generator's archetypes.

A population of 1,500 users over 60 days (`segments generate`, seed 3, with its truth
file) goes through the training pipeline (`pipelines.train`: the serving feature
transforms, each user's last window) and `train_model` with the default settings. The
adjusted Rand index between the model's segments and the true archetypes is recomputed
here from the saved artifact's own assignments and the truth file, then held to
`ARI_THRESHOLD`.

Why 0.15: ARI is 0 in expectation for unrelated labels (shuffling the truth gives
|ARI| < 0.01 at this size) and 1 for a perfect recovery. The seven archetypes overlap
by construction: they share every event type and differ in rates, and a user's last
30-day window holds a few dozen events, so even a supervised random forest on the same
28 features reaches only about 0.77 (5-fold, 2,784 users). The unsupervised default
model measures 0.25 at 3,000 users and 0.256 at 20,000 (models/default/HOW_TO_REPRODUCE.md).
0.15 sits well above chance and about 0.1 below those measurements, so seed-to-seed
noise does not fail the test while a broken feature or clustering step (ARI near 0) does.
"""

from __future__ import annotations


import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from sklearn.metrics import adjusted_rand_score

from models.artifact import load_artifact, save_artifact
from models.training import latest_per_user, train_model
from devtools import generate
from pipelines.train import TrainOptions, _read_rows, build_pipeline, read_truth
from transforms.contracts.feature_spec import model_input_vector
from transforms.ingest.privacy import DEMO_ID_KEY

ARI_THRESHOLD = 0.15
USERS, DAYS, SEED = 1500, 60, 3


@pytest.fixture(scope="module")
def generated_training(tmp_path_factory):
    work = tmp_path_factory.mktemp("quality")
    events, truth_path = work / "events.jsonl", work / "truth.csv"
    generate.generate_events(events, users=USERS, days=DAYS, seed=SEED, fmt="jsonl", truth=truth_path)
    # Without the baseline days: only the rows as of the calibration end (one per user).
    options = PipelineOptions(["--input", str(events), "--out", str(work / "model"), "--demo_key",
                               "--baseline_days", "0"])
    prefix = str(work / "rows" / "rows")
    with beam.Pipeline(options=options) as p:
        build_pipeline(p, options.view_as(TrainOptions), DEMO_ID_KEY, prefix, None)
    rows = _read_rows(prefix)
    truth = read_truth(str(truth_path), DEMO_ID_KEY)
    trained = train_model(rows, truth=truth)
    save_artifact(str(work / "model"), trained.pipeline, trained.card_fields)
    return rows, truth, trained, str(work / "model")


def test_training_rows_are_one_per_active_user(generated_training):
    rows, truth, _, _ = generated_training
    users = [row["user_key"] for row in rows]
    assert len(users) == len(set(users))
    # Users who never consented or never acted have no row; everyone else has one.
    assert 0.8 * USERS <= len(users) <= USERS
    assert set(users) <= set(truth)


@pytest.mark.xfail(strict=True, reason="with churn, half the users' 30-day behaviour is empty and k-means on the "
                   "v2 features finds lifecycle states rather than archetypes (ARI about 0.08): issue 18")
def test_segments_recover_the_archetypes_well_above_chance(generated_training):
    rows, truth, trained, model_dir = generated_training
    latest = latest_per_user(rows, None)
    X = np.array([model_input_vector(row) for row in latest], dtype=float)
    segments = load_artifact(model_dir).assign(X).segment_id
    archetypes = [truth[row["user_key"]] for row in latest]
    ari = adjusted_rand_score(archetypes, segments)
    assert trained.card_fields["quality"]["ari"] == pytest.approx(ari)
    assert len(set(archetypes)) == 7
    assert ari >= ARI_THRESHOLD, f"ARI {ari:.3f} below {ARI_THRESHOLD}"
