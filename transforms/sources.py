"""Reading raw events: JSON-lines and Avro files, through Beam's FileSystems.

`ReadEventFiles` matches the patterns with `fileio` (local paths, globs and
`gs://` alike), reads each matched file and parses every record in the same
DoFn, so a record costs one trip through Beam rather than three (read, parse,
validate). Output: valid events stamped with their event time, and dead letters.

Format by file name: `*.avro` is Avro (schema: `transforms/schemas/event_v1.avsc`);
anything else is JSON lines, optionally compressed (`.gz`, `.bz2`, ...). A blank
line is not a record and is not counted.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import apache_beam as beam
import fastavro
import orjson
from apache_beam.io import fileio
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from transforms.event_contract import Event
from transforms.outcomes import READ, DeadLetter, ErrorCode, Stage, counter, dead_letter_counter
from transforms.validation import InvalidEvent, ValidationConfig, parse_event, validate_record


class ParsedTags:
    """Output tags of the parsing DoFns."""

    EVENTS = "events"
    DEAD_LETTERS = "dead_letters"


class _RecordJudge:
    """Counts a record and routes it: an `Event`, or a dead letter (a `TaggedOutput`)."""

    def __init__(self, config: ValidationConfig):
        self._config = config
        self._read = counter(READ)
        self._dead = {code: dead_letter_counter(code) for code in ErrorCode}

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

    def _dead_letter(self, raw: bytes, invalid: InvalidEvent, source: str):
        self._dead[invalid.code].inc()
        stage = Stage.PARSE if invalid.code in (ErrorCode.INVALID_JSON, ErrorCode.OVERSIZED) else Stage.VALIDATE
        return beam.pvalue.TaggedOutput(ParsedTags.DEAD_LETTERS, DeadLetter.of(raw, invalid.code, invalid.detail, source, stage))


class _ParseFileFn(beam.DoFn):
    """Reads one matched file and judges each record in it; events get their event time."""

    def __init__(self, config: ValidationConfig):
        self._config = config

    def setup(self):
        self._judge = _RecordJudge(self._config)

    def process(self, readable: fileio.ReadableFile, window=beam.DoFn.WindowParam) -> Iterable:
        path = readable.metadata.path
        # Events stay in the file's (global) window. Built directly: a TimestampedValue
        # would make the runner assign a new window object to every event (tens of microseconds each).
        windows = (window,)
        with readable.open() as handle:
            if path.endswith(".avro"):
                judged = (self._judge.judge_record(record, f"{path}#{index}")
                          for index, record in enumerate(fastavro.reader(handle)))
            else:
                judged = (self._judge.judge_bytes(line.rstrip(b"\r\n"), f"{path}:{line_no}")
                          for line_no, line in enumerate(handle, start=1) if line.strip())
            for output in judged:
                if isinstance(output, Event):
                    yield WindowedValue(output, Timestamp(micros=output.timestamp_us), windows)
                else:
                    yield output


class ParseMessageFn(beam.DoFn):
    """Judges raw message bodies: elements are (payload bytes, source) pairs."""

    def __init__(self, config: ValidationConfig):
        self._config = config

    def setup(self):
        self._judge = _RecordJudge(self._config)

    def process(self, element: tuple[bytes, str]) -> Iterable:
        raw, source = element
        output = self._judge.judge_bytes(raw, source)
        yield TimestampedValue(output, output.timestamp_us / 1e6) if isinstance(output, Event) else output


class ReadEventFiles(beam.PTransform):
    """Reads and validates event files.

    Args:
      patterns: file patterns (paths, globs, `gs://...`); each must match a file.
      config: validation limits.

    Returns:
      A `DoOutputsTuple` with `events` (`Event`, timestamped with event time) and
      `dead_letters` (`DeadLetter`).
    """

    def __init__(self, patterns: Sequence[str], config: ValidationConfig):
        super().__init__()
        self._patterns = list(patterns)
        self._config = config

    def expand(self, pbegin: beam.pvalue.PBegin):
        return (
            pbegin
            | "Patterns" >> beam.Create(self._patterns)
            | "MatchFiles" >> fileio.MatchAll(fileio.EmptyMatchTreatment.DISALLOW)
            | "ReadMatches" >> fileio.ReadMatches()
            | "ParseRecords" >> beam.ParDo(_ParseFileFn(self._config)).with_outputs(
                ParsedTags.DEAD_LETTERS, main=ParsedTags.EVENTS)
        )

