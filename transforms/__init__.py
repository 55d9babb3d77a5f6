"""What runs on the workers, one composite transform per business step, by layer:

* `contracts`: the event contract, the fates of a record (dead letters, filters), the model-input features;
* `ingest`: sources (files, Pub/Sub), validation, privacy, dedupe;
* `features`: per-user features over windows;
* `scoring`: segments from a model handed in;
* `audit`: the streaming job's per-interval counts;
* `bigquery`: tables, rows, writes (production and local).
"""
