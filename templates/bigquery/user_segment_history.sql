-- user_segment_history: one row per user, day (score_date, UTC) and model version: the
-- user's latest scoring of that day (the table keeps one per day: the writer's MERGE lets
-- a later scoring replace an earlier one), with the segment of the user's previous scored
-- day under the same model (the day before, for a user scored daily; an older one across a
-- gap, e.g. a batch run with --history_days 0). A day's row is final (is_final) once the user was scored as of the
-- midnight that ends it; earlier ones are updates on the user's events.
CREATE OR REPLACE VIEW `${project}.${dataset}.user_segment_history` AS
SELECT
  user_key,
  score_date,
  as_of,
  is_final,
  scoring,
  segment_id,
  segment_name,
  LAG(segment_id) OVER history AS previous_segment_id,
  LAG(segment_name) OVER history AS previous_segment_name,
  COALESCE(LAG(segment_id) OVER history != segment_id, FALSE) AS changed,
  moment,
  moment_reason,
  LAG(moment) OVER history AS previous_moment,
  distance,
  margin,
  rfm,
  p_alive,
  expected_purchases_30d,
  p_purchase_30d,
  p_purchase_90d,
  churn_risk,
  features,
  profile,
  event_count,
  feature_version,
  model_version,
  assigned_at,
  row_key
FROM `${project}.${dataset}.segment_assignments`
WINDOW history AS (PARTITION BY user_key, model_version ORDER BY score_date)
