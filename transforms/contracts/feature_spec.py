"""The model-input contract: which features the model consumes, in which order.

Training (`models.training`) and serving (`models.handler`) both turn a profile's feature
record into a vector with `model_input_vector`, so the two cannot drift. Bump
`FEATURE_VERSION` whenever a name, its order, its definition or a window changes; a
model trained on another version is refused at load time.

Definitions, units and windows of every feature: `transforms/features/FEATURES.md`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

FEATURE_VERSION = "v2"

# Rolling windows of the profile, in days before the scoring time.
WINDOWS_DAYS: tuple[int, ...] = (7, 30, 90)

# Ordered: position i of the vector is MODEL_FEATURES[i]. Grouped so that how active a
# user is (volume) stays apart from what kind of user they are (rates and shares).
ACTIVITY_FEATURES: tuple[str, ...] = (
    "active_days_7d",
    "active_days_30d",
    "active_days_90d",
    "sessions_30d",
    "days_since_last_event",
    "tenure_days",
)
BEHAVIOUR_FEATURES: tuple[str, ...] = (
    "page_views_per_session",
    "product_views_per_session",
    "searches_per_session",
    "cart_adds_per_session",
    "avg_session_duration_s",
    "bounce_rate",
    "cart_abandonment_rate",
    "purchase_session_share",
    "funnel_stage_7d",
    "social_share",
    "app_share",
    "store_share",
    "mobile_share",
    "email_opens_30d",
    "email_ctr",
    "share_night",
    "share_morning",
    "share_afternoon",
    "share_evening",
    "weekend_share",
    "top_category_share",
    "category_entropy",
)
VALUE_FEATURES: tuple[str, ...] = (
    "orders",
    "orders_90d",
    "recency_days",
    "spend_total",
    "avg_order_value",
    "refund_rate",
)
MODEL_FEATURES: tuple[str, ...] = ACTIVITY_FEATURES + BEHAVIOUR_FEATURES + VALUE_FEATURES

# Heavy-tailed counts, durations and money: the model pipeline applies log1p to these first.
SKEWED_FEATURES: frozenset[str] = frozenset({
    "active_days_7d", "active_days_30d", "active_days_90d", "sessions_30d", "days_since_last_event", "tenure_days",
    "page_views_per_session", "product_views_per_session", "searches_per_session", "cart_adds_per_session",
    "avg_session_duration_s", "email_opens_30d",
    "orders", "orders_90d", "recency_days", "spend_total", "avg_order_value",
})


def model_input_vector(features: Mapping[str, float], names: Sequence[str] = MODEL_FEATURES) -> list[float]:
    """The ordered vector the model consumes. Raises KeyError on a missing feature."""
    return [float(features[name]) for name in names]


# Facts of the profile stored next to the model features on every scored row (not model
# inputs): name -> BigQuery type. `_us` fields are written as TIMESTAMPs without the suffix.
PROFILE_FACTS: dict[str, str] = {
    "first_seen_us": "TIMESTAMP",
    "last_event_us": "TIMESTAMP",
    "first_purchase_us": "TIMESTAMP",
    "last_purchase_us": "TIMESTAMP",
    "purchase_days": "INT64",
    "unpriced_lines": "INT64",
    "top_category_30d": "STRING",
    "funnel_stage_30d": "STRING",
    "reporting_currency": "STRING",
}
