"""A tiny real model: three well-separated groups of identical profile records, and its artifact.

Each group's centroid is exactly its vector, so distances and segments are known exactly;
BG/NBD gets the known `PARAMS` instead of a fit. Groups 0 and 1 are customers (4 and 2
purchase days), group 2 never bought.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from models.artifact import save_artifact
from models.bgnbd import BgNbdParams
from models.moments import CARD_KEY, MomentThresholds
from models.training import train_model
from transforms.contracts.feature_spec import FEATURE_VERSION, MODEL_FEATURES, PROFILE_FACTS, SKEWED_FEATURES

DAY_US = 86_400_000_000
F = len(MODEL_FEATURES)
SKEWED = np.array([name in SKEWED_FEATURES for name in MODEL_FEATURES])
END_US = 90 * DAY_US  # the calibration end: every training record is as of it
START_US = END_US - 30 * DAY_US  # purchase days are counted from here
SIZES = (12, 10, 8)  # distinct sizes: fresh ids are 0, 1, 2 by decreasing size
PURCHASE_DAYS = (4, 2, 0)
PARAMS = BgNbdParams(0.5, 8.0, 0.7, 3.0)


def group_vectors() -> np.ndarray:
    rng = np.random.default_rng(42)
    v = np.where(SKEWED, rng.uniform(1.0, 50.0, (3, F)), rng.uniform(0.0, 1.0, (3, F)))
    v[:, MODEL_FEATURES.index("orders")] = [5, 2, 0]  # group 2 never bought
    v[2, MODEL_FEATURES.index("spend_total")] = 0.0
    v[2, MODEL_FEATURES.index("avg_order_value")] = 0.0
    return v


def record(user: str, values: np.ndarray, purchase_days: int, first_day: float | None = None,
           last_day: float | None = None, as_of_us: int = END_US) -> dict:
    """A profile record with the given model features and purchases (days after START_US)."""
    rec = {name: float(v) for name, v in zip(MODEL_FEATURES, values)}
    rec.update({name: None for name in PROFILE_FACTS})
    rec.update(user_key=user, as_of_us=as_of_us, scoring="daily", feature_version=FEATURE_VERSION, event_count=7,
               purchase_days=purchase_days, first_seen_us=START_US, last_event_us=START_US + DAY_US,
               first_purchase_us=None if first_day is None else START_US + int(first_day * DAY_US),
               last_purchase_us=None if last_day is None else START_US + int(last_day * DAY_US))
    return rec


def training_records() -> list[dict]:
    """SIZES[g] identical feature rows per group (so each centroid is exactly the group vector)."""
    v = group_vectors()
    rows = []
    for g, size in enumerate(SIZES):
        for i in range(size):
            first, last = ((1.0 + i, 20.0 + i / 2) if PURCHASE_DAYS[g] > 1 else (None, None))
            rows.append(record(f"t{g}-{i:02d}", v[g], PURCHASE_DAYS[g], first, last))
    return rows


# Moments' baselines for test models (their training records hold no moment facts): a usual
# gap of 3.3 days, half a session a day, 0.04 checkouts without a purchase a session.
MOMENTS = MomentThresholds(population_gap_days=3.3, population_sessions_per_day=0.5,
                           population_unconverted_per_session=0.04)


def save_small_model(path: str, moments: Optional[MomentThresholds] = None) -> str:
    """Trains the 3-group model on `training_records` (BG/NBD: `PARAMS`) and saves it to `path`,
    with `moments` in its card if given."""
    trained = train_model(training_records(), until=END_US, k_range=(3, 3), silhouette_sample=100)
    card = dict(trained.card_fields, bgnbd=PARAMS.as_card())
    if moments is not None:
        card[CARD_KEY] = moments.as_card()
    save_artifact(path, trained.model, card)
    return path


# A two-segment model for segment changes: its groups differ only in two lifetime session
# features, every other feature is one constant, so the segments' centres differ in those two
# alone. Group "browsers" (12 rows) gets id 0, "cart fillers" (8 rows) id 1.
CART_FEATURES = {"browsers": {"lifetime_product_views_per_session": 1.0, "lifetime_cart_adds_per_session": 0.0},
                 "cart fillers": {"lifetime_product_views_per_session": 3.0, "lifetime_cart_adds_per_session": 3.0}}
CART_SIZES = {"browsers": 12, "cart fillers": 8}


def cart_training_records() -> list[dict]:
    base = group_vectors()[1]  # customers (RFM and BG/NBD need some), orders constant
    rows = []
    for group, size in CART_SIZES.items():
        values = base.copy()
        for name, value in CART_FEATURES[group].items():
            values[MODEL_FEATURES.index(name)] = value
        for i in range(size):
            rows.append(record(f"{group[0]}-{i:02d}", values, 2, 1.0 + i, 20.0 + i / 2))
    return rows


def save_cart_model(path: str, moments: Optional[MomentThresholds] = None) -> str:
    """Trains the two-group model on `cart_training_records` (BG/NBD: `PARAMS`) and saves it to `path`,
    with `moments` in its card if given."""
    trained = train_model(cart_training_records(), until=END_US, k_range=(2, 2), silhouette_sample=100)
    card = dict(trained.card_fields, bgnbd=PARAMS.as_card())
    if moments is not None:
        card[CARD_KEY] = moments.as_card()
    save_artifact(path, trained.model, card)
    return path
