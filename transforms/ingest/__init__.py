"""Ingest: reading events (files, Pub/Sub), judging them, privacy at the door, dedupe."""
