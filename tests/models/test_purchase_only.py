"""Training on a purchase log (no sessions, channels or e-mail): the clickstream inputs are
left out and listed as such, and the segments, names and descriptions rest on what the
data carry."""

from __future__ import annotations

import numpy as np
import pytest

from models import naming
from models.representation import CLUSTERING_FEATURES, PURCHASE_FEATURES, unused_features
from models.training import format_report, train_model
from transforms.contracts.feature_spec import LIFETIME_BEHAVIOUR_FEATURES, MODEL_FEATURES

DAY_US = 86_400_000_000
UNTIL_US = 400 * DAY_US


def purchase_log_records(n: int, seed: int = 0) -> list[dict]:
    """Profiles of a purchase-only log: 60 % bought once; every clickstream figure 0."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        orders = 1 if rng.random() < 0.6 else 1 + int(rng.geometric(0.3))
        basket = float(np.round(rng.lognormal(3.0, 0.5), 2))
        first_day = float(rng.uniform(0, 300))
        last_day = first_day if orders == 1 else float(rng.uniform(first_day, 399))
        record = {name: 0.0 for name in MODEL_FEATURES}
        record.update(orders=float(orders), spend_total=orders * basket, avg_order_value=basket,
                      recency_days=400 - last_day, tenure_days=400 - first_day, days_since_last_event=400 - last_day,
                      lifetime_events=float(orders))
        record.update(user_key=f"c{i:04d}", as_of_us=UNTIL_US, scoring="daily", first_seen_us=int(first_day * DAY_US),
                      event_count=orders, purchase_days=orders, first_purchase_us=int(first_day * DAY_US),
                      last_purchase_us=int(last_day * DAY_US))
        records.append(record)
    return records


def test_unused_features_name_constant_and_scant_evidence():
    X = np.array([[r[n] for n in MODEL_FEATURES] for r in purchase_log_records(50)])
    unused = unused_features(X)
    assert set(unused) == set(LIFETIME_BEHAVIOUR_FEATURES)  # avg_order_value varies: kept
    assert unused["lifetime_bounce_rate"].startswith("scant evidence: lifetime_sessions below 1 for 100%")
    assert unused["lifetime_app_share"].startswith("constant (0 ")  # events exist, the share never moves
    # Sessions for most users: the rate carries evidence again.
    X[:40, MODEL_FEATURES.index("lifetime_sessions")] = 3.0
    X[:, MODEL_FEATURES.index("lifetime_bounce_rate")] = np.linspace(0, 1, 50)
    assert "lifetime_bounce_rate" not in unused_features(X)


@pytest.fixture(scope="module")
def card():
    trained = train_model(purchase_log_records(200), until=UNTIL_US, k=3, silhouette_sample=200, stability_rounds=2)
    return trained.card_fields


def test_card_lists_the_unused_inputs_and_clusters_purchase_figures(card):
    representation = card["algorithm"]["representation"]
    assert set(representation["unused_features"]) == set(LIFETIME_BEHAVIOUR_FEATURES)
    assert representation["clustering_features"] == ["avg_order_value", *PURCHASE_FEATURES]
    assert representation["purchase_figures_clustered"] is True
    assert "left out (16 inputs the data do not carry)" in format_report(card)


def test_names_and_descriptions_cite_only_used_inputs(card):
    used = set(card["algorithm"]["representation"]["clustering_features"])
    unused = set(card["algorithm"]["representation"]["unused_features"])
    unused_words = {word for name in unused for word in naming.PHRASES.get(name, ())} | unused
    for segment in card["segments"]:
        assert {f["feature"] for f in segment["distinguishing_features"]} <= used
        text = f"{segment['name']} {segment['description']}".lower()
        assert not [w for w in unused_words if w.lower() in text], segment
    assert set(CLUSTERING_FEATURES) - unused == {"avg_order_value"}
