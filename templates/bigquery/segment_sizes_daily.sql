-- segment_sizes_daily: per day (score_date, UTC) and model version, how many users were in
-- each segment. Each known user counts once per day (their row of that day), silent users
-- included, so the sizes of a day add up to every user known that day.
CREATE OR REPLACE VIEW `${project}.${dataset}.segment_sizes_daily` AS
SELECT
  score_date AS day,
  model_version,
  segment_id,
  segment_name,
  COUNT(*) AS users,
  COUNT(*) / SUM(COUNT(*)) OVER (PARTITION BY score_date, model_version) AS share
FROM `${project}.${dataset}.user_segment_history`
GROUP BY score_date, model_version, segment_id, segment_name
