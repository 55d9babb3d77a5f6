-- Generated from transforms/bigquery_tables.py (dead_letters); tests/test_views.py checks it.
CREATE TABLE IF NOT EXISTS `${project}.${dataset}.dead_letters` (
  raw_payload STRING NOT NULL,
  payload_encoding STRING NOT NULL,
  error_code STRING NOT NULL,
  error_detail STRING,
  source STRING NOT NULL,
  stage STRING NOT NULL,
  processing_time TIMESTAMP NOT NULL,
  run_id STRING
)
PARTITION BY DATE(processing_time)
OPTIONS (description = "Records that could not be processed, byte-exact, with the reason.");
