"""The model-input contract: which features the model consumes, in which order.

Training (`models.training`) and serving (`models.handler`) both turn a profile's feature
record into a vector with `model_input_vector`, so the two cannot drift. Bump
`FEATURE_VERSION` whenever a name, its order, its definition or a window changes; a
model trained on another version is refused at load time.

Definitions, units and windows of every feature: `transforms/features/FEATURES.md`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

FEATURE_VERSION = "v3"

# Rolling windows of the profile, in days before the scoring time.
WINDOWS_DAYS: tuple[int, ...] = (7, 30, 90)

# Ordered: position i of the vector is MODEL_FEATURES[i]. Grouped so that how active a
# user is (volume) stays apart from what kind of user they are (rates and shares). The v2
# groups keep their places; v3 appends the lifetime behaviour and its evidence, so the
# warehouse's `features` record only gains fields.
ACTIVITY_FEATURES: tuple[str, ...] = (
    "active_days_7d",
    "active_days_30d",
    "active_days_90d",
    "sessions_30d",
    "days_since_last_event",
    "tenure_days",
)
# What the user did in the last 30 days (7 for the funnel stage): reported, not clustered.
# With churn, a large share of users has an empty recent window, which says when they were
# active, not what kind of user they are.
RECENT_BEHAVIOUR_FEATURES: tuple[str, ...] = (
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
# What kind of user they are, over their whole history before the scoring time. Each is
# the raw ratio (0 with a zero denominator) except the entropy; its evidence (the
# denominator, `RATE_EVIDENCE`) travels with it, so that the model can shrink a rate
# measured on little evidence towards the population's rate, at training and serving alike.
LIFETIME_BEHAVIOUR_FEATURES: tuple[str, ...] = (
    "lifetime_page_views_per_session",
    "lifetime_product_views_per_session",
    "lifetime_searches_per_session",
    "lifetime_cart_adds_per_session",
    "lifetime_avg_session_duration_s",
    "lifetime_bounce_rate",
    "lifetime_purchase_session_share",
    "lifetime_cart_abandonment_rate",
    "lifetime_social_share",
    "lifetime_app_share",
    "lifetime_email_channel_share",
    "lifetime_mobile_share",
    "lifetime_desktop_share",
    "lifetime_category_entropy",
    "lifetime_email_ctr",
    "lifetime_email_opens_per_session",
)
# The denominators of the lifetime rates: how much evidence each rate rests on.
EVIDENCE_FEATURES: tuple[str, ...] = (
    "lifetime_sessions",
    "lifetime_events",
    "lifetime_cart_sessions",
    "lifetime_email_opens",
)
MODEL_FEATURES: tuple[str, ...] = (ACTIVITY_FEATURES + RECENT_BEHAVIOUR_FEATURES + VALUE_FEATURES
                                   + LIFETIME_BEHAVIOUR_FEATURES + EVIDENCE_FEATURES)

# rate -> (its evidence feature, the least evidence it counts): a lifetime rate is
# numerator / max(evidence, least). E-mail opens per session count a user without a
# session as one session, so an e-mail-only user's opens are not lost.
RATE_EVIDENCE: dict[str, tuple[str, float]] = {
    "lifetime_page_views_per_session": ("lifetime_sessions", 0.0),
    "lifetime_product_views_per_session": ("lifetime_sessions", 0.0),
    "lifetime_searches_per_session": ("lifetime_sessions", 0.0),
    "lifetime_cart_adds_per_session": ("lifetime_sessions", 0.0),
    "lifetime_avg_session_duration_s": ("lifetime_sessions", 0.0),
    "lifetime_bounce_rate": ("lifetime_sessions", 0.0),
    "lifetime_purchase_session_share": ("lifetime_sessions", 0.0),
    "lifetime_cart_abandonment_rate": ("lifetime_cart_sessions", 0.0),
    "lifetime_social_share": ("lifetime_events", 0.0),
    "lifetime_app_share": ("lifetime_events", 0.0),
    "lifetime_email_channel_share": ("lifetime_events", 0.0),
    "lifetime_mobile_share": ("lifetime_events", 0.0),
    "lifetime_desktop_share": ("lifetime_events", 0.0),
    "lifetime_email_ctr": ("lifetime_email_opens", 0.0),
    "lifetime_email_opens_per_session": ("lifetime_sessions", 1.0),
}

# Heavy-tailed counts, durations and money: the model pipeline applies log1p to these first.
SKEWED_FEATURES: frozenset[str] = frozenset({
    "active_days_7d", "active_days_30d", "active_days_90d", "sessions_30d", "days_since_last_event", "tenure_days",
    "page_views_per_session", "product_views_per_session", "searches_per_session", "cart_adds_per_session",
    "avg_session_duration_s", "email_opens_30d",
    "orders", "orders_90d", "recency_days", "spend_total", "avg_order_value",
    "lifetime_page_views_per_session", "lifetime_product_views_per_session", "lifetime_searches_per_session",
    "lifetime_cart_adds_per_session", "lifetime_avg_session_duration_s", "lifetime_email_opens_per_session",
    "lifetime_sessions", "lifetime_events", "lifetime_cart_sessions", "lifetime_email_opens",
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

# Facts of the profile that the moments read (`models/moments.py`), beside the model features
# and the profile facts: name -> BigQuery type. Not model inputs and not stored as columns:
# a moment's reason quotes the ones that decided it. `_us` fields are times (None: no such event).
MOMENT_FACTS: dict[str, str] = {
    "lifetime_active_days": "INT64",
    "sessions_1d": "INT64",
    "abandoned_cart_sessions_1d": "INT64",
    "orders_1d": "INT64",
    "sessions_7d": "INT64",
    "sessions_90d": "INT64",
    "unconverted_checkouts_7d": "INT64",
    "lifetime_unconverted_checkouts": "INT64",
    "first_event_7d_us": "TIMESTAMP",
    "last_event_before_7d_us": "TIMESTAMP",
}
