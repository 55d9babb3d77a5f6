-- segment_profiles: per current segment (see current_segment: each user once) and model
-- version, the number of users and the mean and median of every model feature. One row
-- per segment and feature (feature_index follows MODEL_FEATURES). The median is the
-- interpolated PERCENTILE_CONT(value, 0.5) over the segment's non-NULL values.
CREATE OR REPLACE VIEW `${project}.${dataset}.segment_profiles` AS
WITH long_values AS (
  SELECT
    cs.segment_id,
    cs.segment_name,
    cs.model_version,
    v.feature_index,
    v.feature,
    v.value
  FROM `${project}.${dataset}.current_segment` AS cs,
    UNNEST(${feature_values}) AS v
),
with_median AS (
  SELECT
    long_values.*,
    PERCENTILE_CONT(value, 0.5) OVER (PARTITION BY segment_id, model_version, feature) AS median_value
  FROM long_values
)
SELECT
  segment_id,
  segment_name,
  model_version,
  feature_index,
  feature,
  COUNT(*) AS users,
  AVG(value) AS mean,
  MAX(median_value) AS median
FROM with_median
GROUP BY segment_id, segment_name, model_version, feature_index, feature
