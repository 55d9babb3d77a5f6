"""Segment quality on generated behaviour, and the four algorithms end to end.

The population (`tests.support.population`, made once per session): `segments generate`
with 3,000 users over 365 days (seed 3, with its truth file), profiled by the training
pipeline exactly as `segments train` does.

**The quality threshold.** The default model (k-means, k chosen) is trained on it and the
adjusted Rand index between the segments the saved artifact serves and the generator's
archetypes is recomputed here from the truth file. On this generator at this size the
default measured, for seeds 3 to 8: k = 8 chosen every time, ARI 0.61 to 0.70, a supervised
ceiling (cross-validated random forest on the same inputs) of 0.72 to 0.76, ratio 0.85 to
0.93 (`models/README.md` has the 20,000-user figures). The test holds ARI >= 0.5 and
ratio >= 0.7: about 0.1 below the worst seed, so seed-to-seed noise passes, while the
failures seen while building this (30-day rates: 0.08; silhouette in each candidate's own
space choosing k = 4-5: 0.32-0.39; k = 7 instead of 8: 0.48) fail. Chance is 0.

**The algorithms.** Each is trained on the same rows (k = 8 given and no truth, so the
test does not spend its time choosing k or measuring the ceiling), saved as an artifact,
and served by the batch job's graph (`pipelines.batch.build_pipeline`: files -> profiles
-> RunInference over the artifact) on a separate event file; every assignment must be
what the loaded artifact gives for its features, and a second training on the same rows
in another order must give the same artifact bytes and the same output bytes.
"""

from __future__ import annotations

import json

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from sklearn.metrics import adjusted_rand_score

from models.algorithms import ALGORITHMS, DENSITY
from models.artifact import load_artifact, load_card, save_artifact
from models.serving import serving_model
from models.training import latest_per_user, train_model
from pipelines.batch import BatchOptions, build_pipeline
from tests.support.population import USERS
from transforms.contracts.feature_spec import MODEL_FEATURES, model_input_vector
from transforms.ingest.privacy import DEMO_ID_KEY

ARI_THRESHOLD = 0.5
RATIO_THRESHOLD = 0.7
GIVEN_K = 8


def test_training_rows_are_one_per_active_user(generated_population):
    rows, truth = generated_population.rows, generated_population.truth
    users = [row["user_key"] for row in rows]
    assert len(users) == len(set(users))
    # Users who never consented or never acted have no row; everyone else has one.
    assert 0.8 * USERS <= len(users) <= USERS
    assert set(users) <= set(truth)


def test_default_model_recovers_the_archetypes(generated_population, tmp_path):
    rows, truth = generated_population.rows, generated_population.truth
    trained = train_model(rows, truth=truth)
    save_artifact(str(tmp_path / "model"), trained.model, trained.card_fields)
    latest = latest_per_user(rows, None)
    X = np.array([model_input_vector(row) for row in latest], dtype=float)
    segments = load_artifact(str(tmp_path / "model")).assign(X).segment_id
    archetypes = [truth[row["user_key"]] for row in latest]
    ari = adjusted_rand_score(archetypes, segments)
    quality = trained.card_fields["quality"]
    assert quality["ari"] == pytest.approx(ari)
    assert len(set(archetypes)) == 7
    assert ari >= ARI_THRESHOLD, f"ARI {ari:.3f} below {ARI_THRESHOLD}"
    assert quality["ratio_to_ceiling"] >= RATIO_THRESHOLD, quality
    names = [s["name"] for s in trained.card_fields["segments"]]
    assert len(names) == len(set(names))


def _trained(rows, algorithm, order_seed=None):
    """k given and two stability rounds (the card's score only): the quality is measured above."""
    if order_seed is not None:
        rows = [rows[i] for i in np.random.default_rng(order_seed).permutation(len(rows))]
    return train_model(rows, algorithm=algorithm, k=GIVEN_K, stability_rounds=2)


def _serve(model_dir: str, events: str, out: str) -> list[dict]:
    """The batch job's graph over `events` with the artifact in `model_dir`; its assignments."""
    options = BatchOptions(["--input", events, "--demo_key"])
    with beam.Pipeline(options=PipelineOptions()) as p:
        outputs = build_pipeline(p, options, DEMO_ID_KEY, serving_model(model_dir), target=None)
        _ = (outputs.assignments
             | "Json" >> beam.Map(lambda a: json.dumps(a, sort_keys=True))
             | "Write" >> beam.io.WriteToText(out, shard_name_template=""))
    with open(out) as handle:
        return sorted((json.loads(line) for line in handle), key=lambda a: (a["user_key"], a["as_of_us"]))


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_each_algorithm_trains_ships_and_serves_in_the_batch_job(algorithm, generated_population, tmp_path):
    rows = generated_population.rows
    trained = _trained(rows, algorithm)
    model_dir = str(tmp_path / "model")
    save_artifact(model_dir, trained.model, trained.card_fields)
    card = load_card(model_dir)
    assert card["algorithm"]["name"] == algorithm
    names = {s["segment_id"]: s["name"] for s in card["segments"]}
    assert len(set(names.values())) == len(names)
    if algorithm == DENSITY:
        assert "Unclassified" in names.values()
    else:
        assert len(names) == GIVEN_K

    assignments = _serve(model_dir, str(generated_population.served_events), str(tmp_path / "out.jsonl"))
    assert len(assignments) > 100
    model = load_artifact(model_dir)
    X = np.array([[a["features"][name] for name in MODEL_FEATURES] for a in assignments])
    expected = model.assign(X)
    assert [a["segment_id"] for a in assignments] == expected.segment_id.tolist()
    assert [a["segment_name"] for a in assignments] == expected.segment_name
    np.testing.assert_allclose([a["distance"] for a in assignments], expected.distance, rtol=1e-12)
    assert {a["model_version"] for a in assignments} == {card["model_version"]}

    # The same rows in another order: the same artifact, byte for byte, and the same outputs.
    again = _trained(rows, algorithm, order_seed=1)
    save_artifact(str(tmp_path / "again"), again.model, again.card_fields)
    for name in ("model.joblib", "model_card.json"):
        assert (tmp_path / "model" / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    _serve(str(tmp_path / "again"), str(generated_population.served_events), str(tmp_path / "again.jsonl"))
    assert (tmp_path / "out.jsonl").read_bytes() == (tmp_path / "again.jsonl").read_bytes()
