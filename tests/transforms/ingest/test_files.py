"""Ingest end to end: files -> validation -> privacy -> dedupe, with the run summary."""

import json

import apache_beam as beam
import fastavro
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from models import DEFAULT_MODEL_DIR
from models.serving import serving_model
from pipelines import batch
from pipelines.batch import BatchOptions, build_pipeline
from transforms.contracts.events import load_avro_schema
from transforms.ingest.privacy import DEMO_ID_KEY, pseudonymise

GRANT = {"analytics": True, "personalization": True}


def event(event_id, user, event_type="page_view", ts="2026-11-01T10:00:00Z", consent=GRANT, **properties):
    record = {"event_id": event_id, "user_id": user, "event_type": event_type, "timestamp": ts}
    if consent is not None:
        record["consent"] = consent
    if properties:
        record["properties"] = properties
    return record


VALID = [
    event("e1", "alice"),
    event("e2", "alice", "purchase", "2026-11-01T10:05:00+01:00", value=20.0, currency="eur"),
    event("e3", "bob", "product_view", 1793613600000, category="shoes"),
    event("e4", "carol", "search", search_query="boots"),
]
NO_CONSENT = [event("e5", "dave", consent={"analytics": True, "personalization": False}),
              event("e6", "erin", consent=None)]  # absent consent: strict default denies
SUPPRESSED = [event("e7", "mallory")]
DUPLICATES = [VALID[0], VALID[2]]


def write_jsonl(path, records, extra_lines=()):
    with open(path, "wb") as handle:
        for record in records:
            handle.write(json.dumps(record).encode() + b"\n")
        for line in extra_lines:
            handle.write(line + b"\n")


def write_avro(path, records):
    schema = fastavro.parse_schema(load_avro_schema())
    with open(path, "wb") as handle:
        fastavro.writer(handle, schema, records)


def options_for(tmp_path, inputs, *extra):
    suppression = tmp_path / "erasures.txt"
    suppression.write_text("# erasure requests\nmallory\n")
    argv = [arg for path in inputs for arg in ("--input", str(path))]
    argv += ["--suppression_list", str(suppression), "--demo_key", *extra]
    return argv


def warehouse_flags(warehouse, dataset):
    return ["--bq_endpoint", warehouse.endpoint, "--bq_project", warehouse.project, "--bq_dataset", dataset]


def test_summary_reconciles_and_counts_every_fate(tmp_path, warehouse, unique_dataset):
    path = tmp_path / "events.jsonl"
    write_jsonl(path, VALID + NO_CONSENT + SUPPRESSED + DUPLICATES, extra_lines=[b"{oops", b"[]", b"", b"\xff\xfe"])
    summary = batch.run(options_for(tmp_path, [path], "--summary", str(tmp_path / "s.json"),
                                    *warehouse_flags(warehouse, unique_dataset)))
    written = json.loads((tmp_path / "s.json").read_text())
    assert written["read"] == 4 + 2 + 1 + 2 + 3  # the blank line is not a record
    assert written["valid"] == 4
    assert written["duplicates"] == 2
    assert written["filtered"] == {"no_consent": 2, "suppressed": 1}
    assert written["dead_lettered"]["invalid_json"] == 2
    assert written["dead_lettered"]["not_an_object"] == 1
    assert written["reconciled"] is True
    summary.check()
    rows = warehouse.client.query(
        f"SELECT source, raw_payload, payload_encoding, error_code FROM `{warehouse.project}.{unique_dataset}.dead_letters`"
    ).result()
    by_line = {row["source"].rsplit(":", 1)[1]: row for row in rows}
    assert set(by_line) == {"10", "11", "13"}
    assert by_line["10"]["raw_payload"] == "{oops" and by_line["10"]["error_code"] == "invalid_json"
    assert by_line["11"]["error_code"] == "not_an_object"
    assert by_line["13"]["payload_encoding"] == "base64" and by_line["13"]["raw_payload"] == "//4="


def test_consent_default_grant_lets_absent_consent_through(tmp_path, warehouse, unique_dataset):
    path = tmp_path / "events.jsonl"
    write_jsonl(path, VALID + NO_CONSENT)
    summary = batch.run(options_for(tmp_path, [path], "--consent_default", "grant",
                                    *warehouse_flags(warehouse, unique_dataset)))
    assert summary.filtered["no_consent"] == 1 and summary.valid == 5




def _expected_events():
    """The four valid events, pseudonymised, computed from the records directly."""
    from transforms.ingest.validation import ValidationConfig, validate_record

    config = ValidationConfig()
    expected = []
    for record in VALID:
        parsed = validate_record(json.loads(json.dumps(record)), "", config)
        expected.append(parsed._replace(user_id=pseudonymise(DEMO_ID_KEY, record["user_id"])))
    return expected


@pytest.mark.parametrize("fmt", ["jsonl", "avro"])
def test_json_and_avro_give_identical_valid_events(tmp_path, fmt):
    path = tmp_path / f"events.{fmt}"
    records = VALID + NO_CONSENT + SUPPRESSED + DUPLICATES
    (write_jsonl if fmt == "jsonl" else write_avro)(path, records)
    argv = options_for(tmp_path, [path])
    with TestPipeline(options=PipelineOptions(argv)) as p:
        outputs = build_pipeline(p, PipelineOptions(argv).view_as(BatchOptions), DEMO_ID_KEY,
                                 serving_model(DEFAULT_MODEL_DIR))
        # Consented events, duplicates still in: the feature step drops them (test_dedupe.py).
        expected = _expected_events()
        assert_that(outputs.events | beam.Map(lambda e: e._replace(source="")),
                    equal_to(expected + [expected[0], expected[2]]))


def test_no_raw_user_id_leaves_the_privacy_step(tmp_path):
    path = tmp_path / "events.jsonl"
    write_jsonl(path, VALID + NO_CONSENT + SUPPRESSED)
    argv = options_for(tmp_path, [path])
    raw_ids = {record["user_id"] for record in VALID + NO_CONSENT + SUPPRESSED}
    with TestPipeline(options=PipelineOptions(argv)) as p:
        outputs = build_pipeline(p, PipelineOptions(argv).view_as(BatchOptions), DEMO_ID_KEY,
                                 serving_model(DEFAULT_MODEL_DIR))
        leaked = outputs.events | beam.FlatMap(lambda e: [raw for raw in raw_ids if raw in repr(e)])
        assert_that(leaked, equal_to([]))
        keys = outputs.events | beam.Map(lambda e: e.user_id)
        hmac_hex = [pseudonymise(DEMO_ID_KEY, r["user_id"]) for r in VALID]
        assert_that(keys, equal_to(hmac_hex), label="AllKeysArePseudonyms")


def test_pseudonym_is_hmac_sha256_hex():
    import hashlib
    import hmac

    assert pseudonymise(b"k", "alice") == hmac.new(b"k", b"alice", hashlib.sha256).hexdigest()
    assert len(pseudonymise(b"k", "alice")) == 64


def test_invalid_records_of_suppressed_users_are_filtered_not_dead_lettered(tmp_path):
    from pipelines.summary import counters_of
    from transforms.ingest.files import ReadEventFiles
    from transforms.ingest.validation import ValidationConfig

    suppression = tmp_path / "erasures.txt"
    suppression.write_text("mallory\n")
    path = tmp_path / "events.jsonl"
    bad_time = dict(event("e1", "mallory"), timestamp="yesterday")
    write_jsonl(path, [bad_time, dict(bad_time, user_id="alice"), event("e2", "mallory")],
                extra_lines=[b'{"event_id": "e3", "user_id": "mallory", "event_ty', b"   "])
    p = TestPipeline()
    parsed = p | ReadEventFiles([str(path)], ValidationConfig(suppression_list=str(suppression)))
    assert_that(parsed.dead_letters | beam.Map(lambda d: (d.error_code, d.source.rsplit(":", 1)[1])),
                equal_to([("bad_timestamp", "2"), ("invalid_json", "5")]), label="DeadLetters")
    assert_that(parsed.events | beam.Map(lambda e: e.event_id), equal_to(["e2"]), label="Events")
    result = p.run()
    result.wait_until_finish()
    counters = counters_of(result)
    assert (counters["read"], counters["filtered.suppressed"]) == (5, 2)
