"""The committed Avro schema is the one the contract derives, and it accepts the example."""

import io

import fastavro

from transforms.contracts.events import (EVENT_TYPES, EXAMPLE_EVENT, PROPERTY_FIELDS, TOP_LEVEL_FIELDS, avro_schema,
                                       load_avro_schema)


def test_committed_avsc_matches_contract():
    assert load_avro_schema() == avro_schema(), "regenerate transforms/contracts/schemas/event_v1.avsc from avro_schema()"


def test_avsc_names_every_contract_field_with_its_mode():
    schema = load_avro_schema()
    fields = {field["name"]: field for field in schema["fields"]}
    assert set(fields) == set(TOP_LEVEL_FIELDS)
    for name, (_, required) in TOP_LEVEL_FIELDS.items():
        nullable = isinstance(fields[name]["type"], list) and "null" in fields[name]["type"]
        assert nullable is (not required), name
    properties = next(t for t in fields["properties"]["type"] if isinstance(t, dict))
    assert [f["name"] for f in properties["fields"]] == list(PROPERTY_FIELDS)


def test_example_event_round_trips_through_avro():
    schema = fastavro.parse_schema(load_avro_schema())
    buffer = io.BytesIO()
    fastavro.writer(buffer, schema, [EXAMPLE_EVENT])
    buffer.seek(0)
    (read,) = list(fastavro.reader(buffer))
    assert read["event_id"] == EXAMPLE_EVENT["event_id"]
    assert read["properties"]["value"] == EXAMPLE_EVENT["properties"]["value"]
    assert EXAMPLE_EVENT["event_type"] in EVENT_TYPES
