-- segment_sizes_daily: per day (DATE(window_end), UTC) and model version, how many users
-- were in each segment. Each user counts once per day: their last window ending that
-- day (final panes preferred), so the sizes of a day add up to its active users.
CREATE OR REPLACE VIEW `${project}.${dataset}.segment_sizes_daily` AS
WITH daily AS (
  SELECT
    DATE(window_end) AS day,
    model_version,
    user_key,
    segment_id,
    segment_name
  FROM `${project}.${dataset}.user_segment_history`
  WHERE TRUE
  QUALIFY ROW_NUMBER() OVER (
    PARTITION BY DATE(window_end), model_version, user_key
    ORDER BY is_final DESC, window_end DESC, assigned_at DESC, window_start DESC) = 1
)
SELECT
  day,
  model_version,
  segment_id,
  segment_name,
  COUNT(*) AS users,
  COUNT(*) / SUM(COUNT(*)) OVER (PARTITION BY day, model_version) AS share
FROM daily
GROUP BY day, model_version, segment_id, segment_name
