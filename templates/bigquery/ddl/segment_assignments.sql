-- Generated from transforms/bigquery_tables.py (segment_assignments); tests/test_views.py checks it.
CREATE TABLE IF NOT EXISTS `${project}.${dataset}.segment_assignments` (
  row_key STRING NOT NULL,
  user_key STRING NOT NULL,
  window_start TIMESTAMP NOT NULL,
  window_end TIMESTAMP NOT NULL,
  pane STRING NOT NULL,
  segment_id INT64 NOT NULL,
  segment_name STRING NOT NULL,
  distance FLOAT64,
  margin FLOAT64,
  rfm STRUCT<r INT64, f INT64, m INT64, rfm_segment STRING>,
  p_alive FLOAT64,
  expected_purchases_30d FLOAT64,
  churn_risk FLOAT64,
  features STRUCT<recency_days FLOAT64, frequency FLOAT64, purchase_days FLOAT64, monetary_total FLOAT64, monetary_avg FLOAT64, email_opens FLOAT64, email_clicks FLOAT64, email_ctr FLOAT64, social_interactions FLOAT64, sessions FLOAT64, avg_session_duration_s FLOAT64, pages_per_session FLOAT64, bounce_rate FLOAT64, active_days FLOAT64, product_views FLOAT64, searches FLOAT64, intensity FLOAT64, funnel_stage FLOAT64, cart_adds FLOAT64, cart_abandonment_rate FLOAT64, checkout_starts FLOAT64, top_category_share FLOAT64, category_entropy FLOAT64, tenure_days FLOAT64, share_night FLOAT64, share_morning FLOAT64, share_afternoon FLOAT64, share_evening FLOAT64>,
  feature_version STRING NOT NULL,
  model_version STRING NOT NULL,
  event_count INT64 NOT NULL,
  assigned_at TIMESTAMP NOT NULL
)
PARTITION BY DATE(window_end)
CLUSTER BY segment_id, user_key
OPTIONS (description = "One row per user, window and model version: the segment and the features behind it.");
