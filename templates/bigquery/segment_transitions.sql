-- segment_transitions: per day (the later score_date) and model version, how many users
-- went from one segment to another between consecutive scored days (staying in a segment
-- counts as from = to), with the three features that changed most.
--
-- "Changed most": for each feature, mean_change = AVG(later - earlier value) over the
-- transitions of the group; it is scaled by the feature's population standard deviation
-- over all scored days of that model version (change_sd = mean_change / stddev) so that
-- money and shares compare; the top 3 by ABS(change_sd) are kept (ties by name).
-- Features with zero spread are left out.
CREATE OR REPLACE VIEW `${project}.${dataset}.segment_transitions` AS
WITH history AS (
  SELECT
    h.*,
    LAG(h.features) OVER (PARTITION BY h.user_key, h.model_version ORDER BY h.score_date) AS previous_features
  FROM `${project}.${dataset}.user_segment_history` AS h
),
pairs AS (
  SELECT
    score_date AS day,
    model_version,
    previous_segment_id AS from_segment_id,
    previous_segment_name AS from_segment_name,
    segment_id AS to_segment_id,
    segment_name AS to_segment_name,
    features,
    previous_features
  FROM history
  WHERE previous_segment_id IS NOT NULL
),
counts AS (
  SELECT
    day, model_version, from_segment_id, from_segment_name, to_segment_id, to_segment_name,
    COUNT(*) AS transitions
  FROM pairs
  GROUP BY day, model_version, from_segment_id, from_segment_name, to_segment_id, to_segment_name
),
spread AS (
  SELECT h.model_version, v.feature, STDDEV_POP(v.value) AS sd
  FROM `${project}.${dataset}.user_segment_history` AS h,
    UNNEST(${feature_values}) AS v
  GROUP BY h.model_version, v.feature
),
changes AS (
  SELECT
    p.day, p.model_version, p.from_segment_id, p.to_segment_id, c.feature,
    AVG(c.change) AS mean_change
  FROM pairs AS p,
    UNNEST(${feature_changes}) AS c
  GROUP BY p.day, p.model_version, p.from_segment_id, p.to_segment_id, c.feature
),
top_changes AS (
  SELECT
    ch.day, ch.model_version, ch.from_segment_id, ch.to_segment_id,
    ARRAY_AGG(
      STRUCT(ch.feature AS feature, ch.mean_change AS mean_change, ch.mean_change / s.sd AS change_sd)
      ORDER BY ABS(ch.mean_change / s.sd) DESC, ch.feature
      LIMIT 3) AS top_changed_features
  FROM changes AS ch
  JOIN spread AS s ON s.model_version = ch.model_version AND s.feature = ch.feature
  WHERE s.sd > 0 AND ch.mean_change IS NOT NULL
  GROUP BY ch.day, ch.model_version, ch.from_segment_id, ch.to_segment_id
)
SELECT
  c.day,
  c.model_version,
  c.from_segment_id,
  c.from_segment_name,
  c.to_segment_id,
  c.to_segment_name,
  c.transitions,
  t.top_changed_features
FROM counts AS c
LEFT JOIN top_changes AS t
  ON t.day = c.day AND t.model_version = c.model_version
  AND t.from_segment_id = c.from_segment_id AND t.to_segment_id = c.to_segment_id
