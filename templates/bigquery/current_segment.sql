-- current_segment: one row per user: their latest scoring (the latest as_of; silent users
-- are re-scored every day, so this is as of the latest midnight for everyone known), of
-- the latest model version when several scored the same time.
CREATE OR REPLACE VIEW `${project}.${dataset}.current_segment` AS
SELECT
  user_key,
  segment_id,
  segment_name,
  score_date,
  as_of,
  is_final,
  distance,
  margin,
  rfm,
  p_alive,
  expected_purchases_30d,
  p_purchase_30d,
  p_purchase_90d,
  churn_risk,
  moment,
  moment_reason,
  features,
  profile,
  event_count,
  model_version,
  assigned_at
FROM `${project}.${dataset}.user_segment_history`
WHERE TRUE
QUALIFY ROW_NUMBER() OVER (
  PARTITION BY user_key
  ORDER BY as_of DESC, model_version DESC, assigned_at DESC) = 1
