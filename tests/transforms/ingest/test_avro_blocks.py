"""Damaged Avro files: the unreadable stretch is one corrupt_file dead letter, the rest is read.

Block boundaries are found here from the bytes themselves: every block of a container
file ends with the 16-byte sync marker that also ends the header (and the file).
"""

from __future__ import annotations

import io

import apache_beam as beam
import fastavro
import pytest
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

from pipelines.summary import counters_of
from transforms.contracts.events import load_avro_schema
from transforms.ingest.avro_blocks import CORRUPT_PAYLOAD_BYTES, Corrupt, Record, read_avro
from transforms.ingest.files import ReadEventFiles
from transforms.ingest.validation import ValidationConfig

SCHEMA = fastavro.parse_schema({"type": "record", "name": "r",
                                "fields": [{"name": "n", "type": "long"}, {"name": "s", "type": "string"}]})
N = 40


def avro_file(codec="null", n=N) -> bytes:
    out = io.BytesIO()
    # A small sync interval: a handful of records per block.
    fastavro.writer(out, SCHEMA, [{"n": i, "s": "x" * (i % 7)} for i in range(n)], codec=codec, sync_interval=60)
    return out.getvalue()


def block_ends(data: bytes) -> list[int]:
    """Offsets just past each sync marker: the header's end, then each block's end."""
    sync, ends, at = data[-16:], [], 0
    while (at := data.find(sync, at)) >= 0:
        at += 16
        ends.append(at)
    return ends


def records_of(data: bytes) -> list[int]:
    """The `n` of every record fastavro reads from the given blocks (an independent reader)."""
    return [r["n"] for r in fastavro.reader(io.BytesIO(data))]


def read(data: bytes):
    out = list(read_avro(io.BytesIO(data), len(data)))
    return [r.value["n"] for r in out if isinstance(r, Record)], [c for c in out if isinstance(c, Corrupt)]


@pytest.mark.parametrize("codec", ["null", "deflate", "bzip2", "xz"])
def test_an_intact_file_is_read_whole(codec):
    data = avro_file(codec)
    assert len(block_ends(data)) > 4
    assert read(data) == (list(range(N)), [])


def test_a_damaged_block_is_one_stretch_and_the_blocks_after_it_are_read():
    data = avro_file()
    ends = block_ends(data)
    start, end = ends[2], ends[3]  # the third block
    damaged = data[:start] + b"\x7f" + data[start + 1:]  # its record count becomes -64
    numbers, corrupt = read(damaged)
    lost = records_of(data[:ends[0]] + data[start:end])  # what that block held, read by fastavro
    assert numbers == [n for n in range(N) if n not in lost]
    assert [(c.offset, c.length) for c in corrupt] == [(start, end - start)]
    assert corrupt[0].head == damaged[start:end]


def test_a_truncated_file_loses_only_its_last_block():
    data = avro_file()
    ends = block_ends(data)
    cut = ends[-2] + 5  # five bytes into the last block
    numbers, corrupt = read(data[:cut])
    assert numbers == records_of(data[:ends[-2]])
    assert [(c.offset, c.length) for c in corrupt] == [(ends[-2], 5)]


def test_garbage_between_blocks_is_skipped_to_the_next_sync_marker():
    data = avro_file()
    ends = block_ends(data)
    garbage = b"\x00\x01garbage\xff" * 3
    spliced = data[:ends[1]] + garbage + data[ends[1]:]
    numbers, corrupt = read(spliced)
    # The garbage and the block it runs into are one stretch, up to that block's sync marker.
    lost = records_of(data[:ends[0]] + data[ends[1]:ends[2]])
    assert numbers == [n for n in range(N) if n not in lost]
    assert [(c.offset, c.length) for c in corrupt] == [(ends[1], len(garbage) + ends[2] - ends[1])]


def test_a_foreign_file_is_one_stretch():
    data = b'{"event_id": "e1"}\n' * 10_000  # JSON lines named .avro
    numbers, corrupt = read(data)
    assert numbers == []
    assert [(c.offset, c.length, len(c.head)) for c in corrupt] == [(0, len(data), CORRUPT_PAYLOAD_BYTES)]
    assert "not an Avro file" in corrupt[0].detail


def test_an_empty_file_holds_no_records():
    assert read(b"") == ([], [])


def test_an_unsupported_codec_is_one_stretch_that_says_so():
    data = avro_file()
    # The header's metadata map: "avro.codec" -> "null" (length 4, zig-zag 0x08); "nul1" keeps every length.
    assert b"\x14avro.codec\x08null" in data
    numbers, corrupt = read(data.replace(b"\x14avro.codec\x08null", b"\x14avro.codec\x08nul1", 1))
    assert numbers == [] and "codec 'nul1' is not supported" in corrupt[0].detail


def _event(i):
    return {"event_id": f"e{i}", "user_id": f"u{i % 3}", "event_type": "page_view",
            "timestamp": "2026-11-01T10:00:00Z", "consent": {"analytics": True, "personalization": True}}


def test_the_file_reader_dead_letters_a_damaged_block_and_counts_it_once(tmp_path):
    schema = fastavro.parse_schema(load_avro_schema())
    out = io.BytesIO()
    fastavro.writer(out, schema, [_event(i) for i in range(30)], sync_interval=200)
    data = out.getvalue()
    ends = block_ends(data)
    start, end = ends[2], ends[3]
    damaged = data[:start] + b"\x7f" + data[start + 1:]
    lost = len(list(fastavro.reader(io.BytesIO(data[:ends[0]] + data[start:end]))))
    path = tmp_path / "events.avro"
    path.write_bytes(damaged)
    (tmp_path / "empty.avro").write_bytes(b"")
    p = TestPipeline(options=PipelineOptions([]))
    parsed = p | ReadEventFiles([str(path), str(tmp_path / "empty.avro")], ValidationConfig())
    assert_that(parsed.events | "Ids" >> beam.Map(lambda e: e.event_id),
                equal_to(_ids_outside(data, ends, start, end)), label="Events")
    assert_that(parsed.dead_letters | "Letters" >> beam.Map(lambda d: (d.error_code, d.stage, d.source)),
                equal_to([("corrupt_file", "parse", f"{path}@{start}")]), label="DeadLetters")
    result = p.run()
    result.wait_until_finish()
    counters = counters_of(result)
    assert counters["read"] == 30 - lost + 1
    assert counters["dead_letter.corrupt_file"] == 1


def _ids_outside(data, ends, start, end):
    """The event ids of every block but [start, end), read by fastavro from the intact file's bytes."""
    kept = data[:start] + data[end:]
    return [r["event_id"] for r in fastavro.reader(io.BytesIO(kept))]
