"""Judging a raw record: an `Event`, or a dead letter with its code, stage and source.

Shared by every source (files, Pub/Sub messages), so a record is judged the same way
whatever carried it. Counts every record read and every dead letter per code.

A record that is not a valid event but names a user of the suppression list (see
`transforms.ingest.privacy.UserIdFinder`) is not dead-lettered: its raw payload would
keep an erased user's id. It is counted as filtered (``suppressed``) and goes nowhere,
as that user's valid events do in the privacy step.
"""

from __future__ import annotations

import enum
from typing import NamedTuple

import apache_beam as beam
import orjson

from transforms.contracts.outcomes import (READ, DeadLetter, ErrorCode, FilterReason, Stage, counter,
                                           dead_letter_counter, filtered_counter)
from transforms.ingest.privacy import UserIdFinder, read_suppression_list
from transforms.ingest.validation import InvalidEvent, ValidationConfig, parse_event, validate_record


class ParsedTag(str, enum.Enum):
    """Output tags of the parsing DoFns."""

    EVENTS = "events"
    DEAD_LETTERS = "dead_letters"
    READ_TALLIES = "read_tallies"  # Pub/Sub only: (name, records read) per bundle


class Parsed(NamedTuple):
    """Outputs of a source: what parsed and validated, and what did not."""

    events: beam.PCollection  # Event, stamped with event time
    dead_letters: beam.PCollection  # DeadLetter

    @classmethod
    def of(cls, tagged) -> "Parsed":
        """From the tagged outputs of a parsing ParDo."""
        return cls(tagged[ParsedTag.EVENTS.value], tagged[ParsedTag.DEAD_LETTERS.value])


_PARSE_CODES = frozenset({ErrorCode.INVALID_JSON, ErrorCode.OVERSIZED, ErrorCode.CORRUPT_FILE})


class RecordJudge:
    """Counts a record and routes it: an `Event`, a dead letter (a `TaggedOutput`), or None
    (an invalid record of a suppressed user, counted as filtered).

    Reads the suppression list of `config` when built: build it in `DoFn.setup`.
    """

    def __init__(self, config: ValidationConfig):
        self._config = config
        self._read = counter(READ)
        self._dead = {code: dead_letter_counter(code) for code in ErrorCode}
        self._suppressed = UserIdFinder(read_suppression_list(config.suppression_list))
        self._filtered = filtered_counter(FilterReason.SUPPRESSED)

    def judge_bytes(self, raw: bytes, source: str):
        self._read.inc()
        try:
            return parse_event(raw, source, self._config)
        except InvalidEvent as invalid:
            return self._dead_letter(raw, invalid, source)

    def judge_record(self, record: dict, source: str):
        self._read.inc()
        raw = orjson.dumps(record)
        try:
            if len(raw) > self._config.max_event_bytes:
                raise InvalidEvent(
                    ErrorCode.OVERSIZED, f"{len(raw)} bytes > limit of {self._config.max_event_bytes}")
            return validate_record(record, source, self._config)
        except InvalidEvent as invalid:
            return self._dead_letter(raw, invalid, source)

    def corrupt(self, raw: bytes, detail: str, source: str):
        """An unreadable stretch of a file: one record read, dead-lettered as corrupt_file."""
        self._read.inc()
        return self._dead_letter(raw, InvalidEvent(ErrorCode.CORRUPT_FILE, detail), source)

    def _dead_letter(self, raw: bytes, invalid: InvalidEvent, source: str):
        if self._suppressed and self._suppressed.names(raw, binary=invalid.code is ErrorCode.CORRUPT_FILE
                                                       or not _is_utf8(raw)):
            self._filtered.inc()
            return None
        self._dead[invalid.code].inc()
        stage = Stage.PARSE if invalid.code in _PARSE_CODES else Stage.VALIDATE
        return beam.pvalue.TaggedOutput(ParsedTag.DEAD_LETTERS.value, DeadLetter.of(raw, invalid.code, invalid.detail, source, stage))


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False
