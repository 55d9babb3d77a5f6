"""Contracts: the event, the fates of a record, the model-input features; the Avro schema in `schemas/`."""
