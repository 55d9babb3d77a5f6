-- current_segment: one row per user: the latest final (on_time or late) assignment;
-- a user with only early (speculative) panes so far gets the latest of those, with
-- is_final = FALSE. Ties on window_end go to the latest assigned_at.
CREATE OR REPLACE VIEW `${project}.${dataset}.current_segment` AS
SELECT
  user_key,
  segment_id,
  segment_name,
  window_start,
  window_end,
  pane,
  is_final,
  distance,
  margin,
  rfm,
  p_alive,
  expected_purchases_30d,
  churn_risk,
  features,
  event_count,
  model_version,
  assigned_at
FROM `${project}.${dataset}.user_segment_history`
WHERE TRUE
QUALIFY ROW_NUMBER() OVER (
  PARTITION BY user_key
  ORDER BY is_final DESC, window_end DESC, assigned_at DESC, window_start DESC, model_version DESC) = 1
