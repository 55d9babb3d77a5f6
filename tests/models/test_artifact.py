"""Training + artifact: card contents, round trip, sha256 refusal, byte-identical saves, ARI, previous model."""

from __future__ import annotations

import json
import os

import joblib
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from models import artifact
from models.artifact import ArtifactError, load_artifact, load_card, save_artifact
from models.training import format_report, latest_per_user, train_model
from tests.support.rfm_reference import tie_aware_cuts_direct
from transforms.contracts.feature_spec import FEATURE_VERSION, MODEL_FEATURES, SKEWED_FEATURES

DAY_US = 86_400_000_000
F = len(MODEL_FEATURES)
SKEWED = np.array([name in SKEWED_FEATURES for name in MODEL_FEATURES])
WINDOW_DAYS = 30
EVIDENCE = {"lifetime_sessions": 200.0, "lifetime_events": 2000.0, "lifetime_cart_sessions": 100.0,
            "lifetime_email_opens": 100.0}
UNTIL_US = 100 * DAY_US


def make_records(group_sizes, *, seed=0, centers_seed=0, as_of_us=UNTIL_US, prefix="u"):
    """Profile records of well-separated groups, as of `as_of_us`; returns (records, {user_key: group})."""
    centers_rng = np.random.default_rng(centers_seed)
    # Always 8 centres drawn, the first len(group_sizes) used: group g is the same for any group count.
    centers = np.where(SKEWED, centers_rng.uniform(0.3, 2.5, (8, F)), centers_rng.uniform(0.0, 10.0, (8, F)))
    rng = np.random.default_rng(seed)
    start = as_of_us - WINDOW_DAYS * DAY_US
    records, truth = [], {}
    for group, size in enumerate(group_sizes):
        for _ in range(size):
            work = centers[group] + rng.normal(0.0, 1.0, F) * np.where(SKEWED, 0.1, 0.2)
            values = np.where(SKEWED, np.expm1(np.maximum(work, 0.0)), work)
            record = {name: float(v) for name, v in zip(MODEL_FEATURES, values)}
            record.update(EVIDENCE)  # plenty of evidence: the shrinkage barely moves the rates
            orders = int(round(record["orders"]))
            record["orders"] = float(orders)
            user = f"{prefix}{len(records):05d}"
            first = last = None
            if orders > 0:
                first = start + int(rng.integers(0, 20 * DAY_US))
                last = first if orders == 1 else int(rng.integers(first, as_of_us))
            record.update(user_key=user, as_of_us=as_of_us, scoring="daily", first_seen_us=start,
                          event_count=int(rng.integers(1, 50)), purchase_days=orders, first_purchase_us=first,
                          last_purchase_us=last)
            records.append(record)
            truth[user] = f"archetype-{group}"
    return records, truth


@pytest.fixture(scope="module")
def data():
    return make_records([60, 50, 40, 30])


@pytest.fixture(scope="module")
def trained(data):
    records, truth = data
    return train_model(records, until=UNTIL_US, truth=truth, k_range=(3, 6), silhouette_sample=200)


def test_card_contents(trained, data):
    card = artifact.build_card(trained.card_fields, artifact.serialize_model(trained.model))
    assert card["feature_version"] == FEATURE_VERSION
    assert card["features"] == list(MODEL_FEATURES)
    assert card["k"] == 4 and card["algorithm"]["name"] == "kmeans"
    assert card["algorithm"]["params"]["random_state"] == 0 and card["algorithm"]["params"]["n_clusters"] == 4
    q = card["quality"]
    assert set(q["k_scores"]) == {"3", "4", "5", "6"}
    assert q["silhouette"] == q["k_scores"]["4"]["silhouette"]
    # ARI recomputed here from the per-user assignments and the truth.
    records, truth = data
    assert q["ari"] == pytest.approx(adjusted_rand_score([truth[u] for u in trained.users], trained.segment_ids))
    assert q["ari"] >= 0.9 and q["ari_users"] == len(records)
    # The supervised ceiling is a cross-validated forest's ARI on the same inputs: the groups are separable.
    assert q["supervised_ceiling"] >= 0.95
    assert q["ratio_to_ceiling"] == pytest.approx(q["ari"] / q["supervised_ceiling"])
    chosen = q["k_scores"]["4"]
    assert set(chosen) == {"stability", "silhouette", "davies_bouldin", "score"}
    assert chosen["score"] == pytest.approx(chosen["stability"] * chosen["silhouette"])
    assert card["training"]["rows"] == len(records)
    assert card["training"]["data_end"] == "1970-04-11T00:00:00Z"  # 100 days after the epoch
    assert card["training"]["data_start"] == "1970-03-12T00:00:00Z"  # first seen: 30 days before that
    shares = [s["size_share"] for s in card["segments"]]
    assert shares == pytest.approx([60 / 180, 50 / 180, 40 / 180, 30 / 180])
    assert [s["segment_id"] for s in card["segments"]] == [0, 1, 2, 3]
    assert len({s["name"] for s in card["segments"]}) == 4
    assert all(set(s["centroid"]) == set(MODEL_FEATURES) for s in card["segments"])
    b = card["bgnbd"]
    assert set(b) == {"r", "alpha", "a", "b", "time_unit"}
    assert card["training"]["bgnbd_customers"] == sum(1 for r in records if r["purchase_days"] > 0)
    assert b["time_unit"] == "day" and all(isinstance(b[p], float) and b[p] > 0 for p in ("r", "alpha", "a", "b"))
    customers = [r for r in records if r["orders"] > 0]  # RFM cut points come from customers only
    X = np.array([[r[n] for n in ("recency_days", "orders", "spend_total")] for r in customers], dtype=float)
    for i, name in enumerate(("recency_days", "orders", "spend_total")):
        assert card["rfm"][name] == pytest.approx(tie_aware_cuts_direct(X[:, i]))
    assert card["model_version"] == "19700411-" + card["model_sha256"][:12]
    assert set(card["library_versions"]) == {"sklearn", "numpy", "scipy", "python"}
    assert card["segment_id_mapping"] is None
    assert card["scores"]["propensity_model"] == "bgnbd"
    assert "1 - p_purchase_90d" in card["scores"]["definitions"]["churn_risk"]
    report = format_report(card)
    assert "kmeans, k = 4: 4 segments" in report and "adjusted Rand index" in report and "ceiling" in report
    for s in card["segments"]:  # each segment lists what distinguishes it, with values in original units
        assert s["distinguishing_features"] and {"feature", "z", "value", "population_value"} == set(
            s["distinguishing_features"][0])


def test_round_trip(trained, tmp_path, data):
    card = save_artifact(str(tmp_path / "m"), trained.model, trained.card_fields)
    assert sorted(os.listdir(tmp_path / "m")) == ["model.joblib", "model_card.json"]
    model = load_artifact(str(tmp_path / "m"))
    assert model.card == json.loads(json.dumps(card))
    assert model.model_version == card["model_version"]
    records, _ = data
    X = np.array([[r[n] for n in MODEL_FEATURES] for r in records], dtype=float)
    assigned = model.assign(X)
    np.testing.assert_array_equal(assigned.segment_id, trained.segment_ids[np.argsort(np.argsort(
        [r["user_key"] for r in records]))])
    names = {s["segment_id"]: s["name"] for s in card["segments"]}
    assert assigned.segment_name == [names[i] for i in assigned.segment_id.tolist()]


def test_tampered_model_is_refused_before_unpickling(trained, tmp_path, monkeypatch):
    path = tmp_path / "m"
    save_artifact(str(path), trained.model, trained.card_fields)
    data = bytearray((path / "model.joblib").read_bytes())
    data[len(data) // 2] ^= 0x01
    (path / "model.joblib").write_bytes(bytes(data))

    def forbidden(*args, **kwargs):
        raise AssertionError("unpickled an unverified file")

    monkeypatch.setattr(joblib, "load", forbidden)
    with pytest.raises(ArtifactError, match="sha256"):
        load_artifact(str(path))


def test_pinned_digest_must_match(trained, tmp_path):
    card = save_artifact(str(tmp_path / "m"), trained.model, trained.card_fields)
    assert load_artifact(str(tmp_path / "m"), expected_sha256=card["model_sha256"]).model_version
    with pytest.raises(ArtifactError, match="pinned"):
        load_artifact(str(tmp_path / "m"), expected_sha256="0" * 64)


def _set_segment(card, index, **fields):
    card["segments"][index].update(fields)


@pytest.mark.parametrize("edit,message", [
    (lambda c: c.update(feature_version="v0"), "feature_version"),
    (lambda c: c.update(features=list(reversed(c["features"]))), "feature list"),
    (lambda c: c.update(features=c["features"][:-1]), "feature list"),
    (lambda c: c.pop("model_sha256"), "lacks"),
    (lambda c: c.update(format="other/9"), "format"),
    # Numbers the job would score with: NaN, infinite, non-positive, of the wrong kind.
    (lambda c: c["bgnbd"].update(r=float("nan")), "BG/NBD parameter r is nan"),
    (lambda c: c["bgnbd"].update(alpha=float("inf")), "BG/NBD parameter alpha is inf"),
    (lambda c: c["bgnbd"].update(a=0.0), "BG/NBD parameter a is 0.0"),
    (lambda c: c["bgnbd"].update(b="2"), "BG/NBD parameter b is '2'"),
    (lambda c: c["bgnbd"].update(time_unit="fortnight"), "time_unit"),
    (lambda c: c["rfm"].update(orders=[0.0, 2.0, 1.0, 3.0]), "RFM thresholds for orders"),
    (lambda c: c["rfm"].update(spend_total=[0.0, 1.0, float("nan"), 3.0]), "RFM thresholds for spend_total"),
    (lambda c: _set_segment(c, 0, centroid=dict(c["segments"][0]["centroid"], recency_days=float("nan"))),
     "non-finite"),
    # Segments that do not describe the model's clusters.
    (lambda c: c.update(segment_count=c["segment_count"] + 1), "segments for segment_count"),
    (lambda c: c["segments"].pop(), "segments for segment_count"),
    (lambda c: c.update(k=0), "k is not a positive integer"),
    (lambda c: _set_segment(c, 1, segment_id=c["segments"][0]["segment_id"]), "segment_id values"),
    (lambda c: _set_segment(c, 1, name=c["segments"][0]["name"]), "segment names"),
    (lambda c: _set_segment(c, 0, cluster_index=c["segments"][1]["cluster_index"]), "cluster_index"),
    (lambda c: _set_segment(c, 0, cluster_index=-2), "cluster_index"),
])
def test_bad_cards_are_refused(trained, tmp_path, edit, message):
    path = tmp_path / "m"
    save_artifact(str(path), trained.model, trained.card_fields)
    card = json.loads((path / "model_card.json").read_text())
    edit(card)
    (path / "model_card.json").write_text(json.dumps(card))
    with pytest.raises(ArtifactError, match=message):
        load_artifact(str(path))


def test_card_problems_are_found_before_unpickling(trained, tmp_path, monkeypatch):
    path = tmp_path / "m"
    save_artifact(str(path), trained.model, trained.card_fields)
    card = json.loads((path / "model_card.json").read_text())
    card["bgnbd"]["r"] = float("nan")
    (path / "model_card.json").write_text(json.dumps(card))  # json writes NaN; the card must not pass

    def forbidden(*args, **kwargs):
        raise AssertionError("unpickled a model with an unusable card")

    monkeypatch.setattr(joblib, "load", forbidden)
    with pytest.raises(ArtifactError, match="not usable"):
        load_artifact(str(path))


def test_a_card_whose_segments_do_not_match_the_model_is_refused(trained, tmp_path):
    """A consistent card for one cluster fewer than the model has: only the model itself can tell."""
    path = tmp_path / "m"
    save_artifact(str(path), trained.model, trained.card_fields)
    card = json.loads((path / "model_card.json").read_text())
    card["segments"] = [s for s in card["segments"] if s["cluster_index"] != card["segment_count"] - 1]
    card["segment_count"] -= 1
    (path / "model_card.json").write_text(json.dumps(card))
    load_card(str(path))  # consistent on its own
    with pytest.raises(ArtifactError, match="do not match the model"):
        load_artifact(str(path))


def test_missing_artifact_is_refused(tmp_path):
    with pytest.raises(ArtifactError, match="cannot read"):
        load_artifact(str(tmp_path / "nothing"))


def test_same_data_gives_byte_identical_artifact(data, trained, tmp_path):
    records, truth = data
    shuffled = [records[i] for i in np.random.default_rng(5).permutation(len(records))]
    again = train_model(shuffled, until=UNTIL_US, truth=truth, k_range=(3, 6), silhouette_sample=200)
    save_artifact(str(tmp_path / "a"), trained.model, trained.card_fields)
    save_artifact(str(tmp_path / "b"), again.model, again.card_fields)
    for name in ("model.joblib", "model_card.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    # Re-saving a loaded model reproduces the bytes too.
    loaded = load_artifact(str(tmp_path / "a"))
    fields = {k: v for k, v in loaded.card.items()
              if k not in ("format", "model_sha256", "model_version", "library_versions")}
    save_artifact(str(tmp_path / "c"), loaded.model, fields)
    for name in ("model.joblib", "model_card.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "c" / name).read_bytes()


def test_previous_model_keeps_ids(trained, data, tmp_path):
    save_artifact(str(tmp_path / "prev"), trained.model, trained.card_fields)
    # Another sample of the same population (same centres, other draws), plus a fifth group.
    records, truth = make_records([55, 45, 45, 35, 40], seed=9, prefix="v")
    retrained = train_model(records, until=UNTIL_US, truth=truth, previous=load_artifact(str(tmp_path / "prev")),
                            k_range=(3, 6), silhouette_sample=200)
    card = retrained.card_fields
    mapping = card["segment_id_mapping"]
    prev_card = load_card(str(tmp_path / "prev"))
    assert mapping["previous_model_version"] == prev_card["model_version"]
    # make_records(centers_seed=0) draws the first four centres identically, so the five-group
    # population contains the four old groups: each keeps its id and name; the fifth is new.
    pairs = {p["segment_id"]: p["previous_segment_id"] for p in mapping["pairs"]}
    assert sorted(k for k, v in pairs.items() if v is not None) == [0, 1, 2, 3]
    assert mapping["new_segment_ids"] == [4] and mapping["retired_segment_ids"] == []
    old_names = {s["segment_id"]: s["name"] for s in prev_card["segments"]}
    assert all(s["name"] == old_names[s["segment_id"]] for s in card["segments"] if s["segment_id"] in old_names)
    old_truth = data[1]
    for group in range(4):  # every old group keeps its id
        old_ids = {seg for u, seg in zip(trained.users, trained.segment_ids.tolist())
                   if old_truth[u] == f"archetype-{group}"}
        new_ids = {seg for u, seg in zip(retrained.users, retrained.segment_ids.tolist())
                   if truth[u] == f"archetype-{group}"}
        assert len(old_ids) == 1 and new_ids == old_ids
    assert {seg for u, seg in zip(retrained.users, retrained.segment_ids.tolist())
            if truth[u] == "archetype-4"} == {4}
    # Users of the four old groups (55 + 45 + 45 + 35) keep their id; the 40 of the new
    # group get the new id 4, which the previous model cannot give.
    assert mapping["users_keeping_segment_id"] == pytest.approx(180 / 220)


def test_gaussian_mixture_option_round_trips(data, tmp_path):
    records, truth = data
    trained = train_model(records, until=UNTIL_US, truth=truth, algorithm="gmm", k_range=(4, 4),
                          silhouette_sample=200)
    assert trained.card_fields["algorithm"]["name"] == "gmm"
    assert trained.card_fields["quality"]["ari"] >= 0.9
    save_artifact(str(tmp_path / "g"), trained.model, trained.card_fields)
    model = load_artifact(str(tmp_path / "g"))
    X = np.array([[r[n] for n in MODEL_FEATURES] for r in records], dtype=float)
    order = np.argsort(np.argsort([r["user_key"] for r in records]))
    np.testing.assert_array_equal(model.assign(X).segment_id, trained.segment_ids[order])


def test_latest_record_per_user_before_until():
    base = {"user_key": "a", "event_count": 1}
    records = [
        {**base, "as_of_us": 10},
        {**base, "as_of_us": 15},
        {**base, "as_of_us": 15, "event_count": 3},  # a later update of that scoring
        {**base, "as_of_us": 20},  # after until
        {**base, "user_key": "b", "as_of_us": 10},
    ]
    got = latest_per_user(records, until_us=15)
    assert [(r["user_key"], r["as_of_us"], r["event_count"]) for r in got] == [("a", 15, 3), ("b", 10, 1)]
