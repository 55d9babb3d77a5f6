-- moment_sizes_daily: per day (score_date, UTC), model version and moment (what users are
-- doing now, models/moments.py), how many users were in it and their share of the day's
-- users. Each known user counts once per day (their row of that day), silent users included
-- (the midnight re-scorings move them to quieter_than_usual, lapsing, lapsed). Rows of a
-- model without moments (moment NULL) are left out.
CREATE OR REPLACE VIEW `${project}.${dataset}.moment_sizes_daily` AS
SELECT
  score_date AS day,
  model_version,
  moment,
  COUNT(*) AS users,
  COUNT(*) / SUM(COUNT(*)) OVER (PARTITION BY score_date, model_version) AS share
FROM `${project}.${dataset}.user_segment_history`
WHERE moment IS NOT NULL
GROUP BY score_date, model_version, moment
