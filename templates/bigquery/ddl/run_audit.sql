-- Generated from transforms/bigquery_tables.py (run_audit); tests/test_views.py checks it.
CREATE TABLE IF NOT EXISTS `${project}.${dataset}.run_audit` (
  run_id STRING NOT NULL,
  started_at TIMESTAMP,
  finished_at TIMESTAMP,
  mode STRING,
  input STRING,
  read INT64,
  valid INT64,
  duplicates INT64,
  filtered ARRAY<STRUCT<reason STRING, count INT64>>,
  dead_lettered ARRAY<STRUCT<code STRING, count INT64>>,
  reconciled BOOL,
  assignments INT64,
  model_version STRING
)
OPTIONS (description = "One row per batch run or streaming interval, with the reconciliation counts.");
