-- user_segment_history: one row per user, window and model version (the most final
-- pane of that window), with the previous window's segment for the same user and model.
-- Pane finality: late 2 > on_time/unknown 1 > early 0, then more events, then the
-- latest assigned_at (the rule the writer's MERGE uses).
CREATE OR REPLACE VIEW `${project}.${dataset}.user_segment_history` AS
WITH ranked AS (
  SELECT
    a.row_key, a.user_key, a.window_start, a.window_end, a.pane,
    a.segment_id, a.segment_name, a.distance, a.margin, a.rfm,
    a.p_alive, a.expected_purchases_30d, a.churn_risk, a.features,
    a.feature_version, a.model_version, a.event_count, a.assigned_at,
    CASE LOWER(a.pane) WHEN 'late' THEN 2 WHEN 'on_time' THEN 1 WHEN 'unknown' THEN 1 ELSE 0 END AS pane_rank
  FROM `${project}.${dataset}.segment_assignments` AS a
),
per_window AS (
  SELECT *
  FROM ranked
  WHERE TRUE
  QUALIFY ROW_NUMBER() OVER (
    PARTITION BY row_key
    ORDER BY pane_rank DESC, event_count DESC, assigned_at DESC) = 1
)
SELECT
  user_key,
  window_start,
  window_end,
  pane,
  pane_rank > 0 AS is_final,
  segment_id,
  segment_name,
  LAG(segment_id) OVER history AS previous_segment_id,
  LAG(segment_name) OVER history AS previous_segment_name,
  COALESCE(LAG(segment_id) OVER history != segment_id, FALSE) AS changed,
  distance,
  margin,
  rfm,
  p_alive,
  expected_purchases_30d,
  churn_risk,
  features,
  event_count,
  feature_version,
  model_version,
  assigned_at,
  row_key
FROM per_window
WINDOW history AS (PARTITION BY user_key, model_version ORDER BY window_end, window_start)
