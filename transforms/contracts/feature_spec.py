"""The model-input contract: which features the model consumes, in which order.

Training (`models.training`) and serving (`models.handler`) both turn a user
feature record into a vector with `model_input_vector`, so the two cannot drift.
Bump `FEATURE_VERSION` whenever a name, its order or its definition changes; a
model trained on another version is refused at load time.

Definitions, units and windows of every feature: `transforms/features/FEATURES.md`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

FEATURE_VERSION = "v1"

# Ordered: position i of the vector is MODEL_FEATURES[i].
MODEL_FEATURES: tuple[str, ...] = (
    # RFM
    "recency_days",
    "frequency",
    "purchase_days",
    "monetary_total",
    "monetary_avg",
    # Engagement
    "email_opens",
    "email_clicks",
    "email_ctr",
    "social_interactions",
    # Browsing and usage
    "sessions",
    "avg_session_duration_s",
    "pages_per_session",
    "bounce_rate",
    "active_days",
    "product_views",
    "searches",
    "intensity",
    # Journey
    "funnel_stage",
    "cart_adds",
    "cart_abandonment_rate",
    "checkout_starts",
    # Affinity
    "top_category_share",
    "category_entropy",
    # Loyalty
    "tenure_days",
    # Time pattern
    "share_night",
    "share_morning",
    "share_afternoon",
    "share_evening",
)

# Heavy-tailed counts and money: the model pipeline applies log1p to these first.
SKEWED_FEATURES: frozenset[str] = frozenset(
    {
        "frequency",
        "purchase_days",
        "monetary_total",
        "monetary_avg",
        "email_opens",
        "email_clicks",
        "social_interactions",
        "sessions",
        "avg_session_duration_s",
        "pages_per_session",
        "active_days",
        "product_views",
        "searches",
        "intensity",
        "cart_adds",
        "checkout_starts",
        "tenure_days",
    }
)


def model_input_vector(features: Mapping[str, float], names: Sequence[str] = MODEL_FEATURES) -> list[float]:
    """The ordered vector the model consumes. Raises KeyError on a missing feature."""
    return [float(features[name]) for name in names]
