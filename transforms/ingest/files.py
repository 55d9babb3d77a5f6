"""Reading raw events: JSON-lines and Avro files, through Beam's FileSystems.

`ReadEventFiles` matches the patterns with `fileio` (local paths, globs and
`gs://` alike), reads each matched file and parses every record in the same
DoFn, so a record costs one trip through Beam rather than three (read, parse,
validate). Output: valid events stamped with their event time, and dead letters.

Format by file name: `*.avro` is Avro (schema: `transforms/contracts/schemas/event_v1.avsc`);
anything else is JSON lines, optionally compressed (`.gz`, `.bz2`, ...).

* JSON lines: an empty line (nothing between two line ends) is not a record and is not
  counted; any other line is one record, so a line of only spaces is dead-lettered as
  ``invalid_json``, as a Pub/Sub message of only spaces is.
* Avro: read block by block (`transforms.ingest.avro_blocks`); a block that cannot be
  read (damaged, truncated, or a file that is not Avro at all) is one record,
  dead-lettered as ``corrupt_file`` with the file and the byte offset as its source
  (``<path>@<offset>``) and its first bytes as payload, and the rest of the file is
  still read. An empty file holds no records, whatever its format.
"""

from __future__ import annotations

from typing import Iterable, Sequence

import apache_beam as beam
from apache_beam.io import fileio
from apache_beam.utils.timestamp import Timestamp
from apache_beam.utils.windowed_value import WindowedValue

from transforms.contracts.events import Event
from transforms.ingest.avro_blocks import Corrupt, read_avro
from transforms.ingest.parse import Parsed, ParsedTag, RecordJudge
from transforms.ingest.validation import ValidationConfig


class _ParseFileFn(beam.DoFn):
    """Reads one matched file and judges each record in it; events get their event time."""

    def __init__(self, config: ValidationConfig):
        self._config = config

    def setup(self):
        self._judge = RecordJudge(self._config)

    def process(self, readable: fileio.ReadableFile, window=beam.DoFn.WindowParam) -> Iterable:
        path = readable.metadata.path
        # Events stay in the file's (global) window. Built directly: a TimestampedValue
        # would make the runner assign a new window object to every event (tens of microseconds each).
        windows = (window,)
        with readable.open() as handle:
            if path.endswith(".avro"):
                judged = (self._judge.corrupt(item.head, _corrupt_detail(item, path), f"{path}@{item.offset}")
                          if isinstance(item, Corrupt) else self._judge.judge_record(item.value, f"{path}#{item.index}")
                          for item in read_avro(handle, readable.metadata.size_in_bytes))
            else:
                judged = (self._judge.judge_bytes(record, f"{path}:{line_no}")
                          for line_no, line in enumerate(handle, start=1)
                          if (record := line.rstrip(b"\r\n")))
            for output in judged:
                if output is None:  # an invalid record of a suppressed user: counted, not kept
                    continue
                if isinstance(output, Event):
                    yield WindowedValue(output, Timestamp(micros=output.timestamp_us), windows)
                else:
                    yield output


def _corrupt_detail(item: Corrupt, path: str) -> str:
    kept = f"; the payload holds its first {len(item.head):,} bytes" if len(item.head) < item.length else ""
    return f"{path}: bytes {item.offset:,} to {item.offset + item.length:,} ({item.length:,} bytes): {item.detail}{kept}"


class ReadEventFiles(beam.PTransform):
    """Reads and validates event files.

    Args:
      patterns: file patterns (paths, globs, `gs://...`); each must match a file.
      config: validation limits.

    Returns:
      `Parsed`: events (`Event`, stamped with event time) and dead letters.
    """

    def __init__(self, patterns: Sequence[str], config: ValidationConfig):
        super().__init__()
        self._patterns = list(patterns)
        self._config = config

    def expand(self, pbegin: beam.pvalue.PBegin):  # -> Parsed (not annotated: Beam would take it for an element type)
        return Parsed.of(
            pbegin
            | "Patterns" >> beam.Create(self._patterns)
            | "MatchFiles" >> fileio.MatchAll(fileio.EmptyMatchTreatment.DISALLOW)
            | "ReadMatches" >> fileio.ReadMatches()
            | "ParseRecords" >> beam.ParDo(_ParseFileFn(self._config)).with_outputs(
                ParsedTag.DEAD_LETTERS.value, main=ParsedTag.EVENTS.value)
        )

