"""Reading an Avro container file block by block, surviving damage.

``fastavro.reader`` stops at the first bad byte, and the rest of the file (and, in a
pipeline, the job) with it. `read_avro` reads the object container format itself
(header, then blocks of ``count``, ``size``, data, 16-byte sync marker: the Avro 1.x
specification, "Object Container Files") and decodes each block's records with
``fastavro.schemaless_reader``. A block that cannot be read (a bad length, a failed
decompression, a record that does not decode, a missing sync marker) is reported as a
`Corrupt` stretch, from its first byte to the next sync marker, and reading goes on
after that marker. A file that is not Avro at all (no magic, a damaged header) is one
`Corrupt` stretch. An empty file holds no records.

Codecs: null, deflate, bzip2 and xz (the standard library's); a file in another codec
is one `Corrupt` stretch that says so.
"""

from __future__ import annotations

import bz2
import io
import json
import lzma
import zlib
from typing import Any, BinaryIO, Callable, Iterator, NamedTuple, Union

import fastavro

MAGIC = b"Obj\x01"
SYNC_SIZE = 16
# The first bytes of a corrupt stretch kept as its dead letter's payload.
CORRUPT_PAYLOAD_BYTES = 64 * 1024
_CHUNK = 1 << 20

_HEADER_SCHEMA = fastavro.parse_schema({
    "type": "record", "name": "org.apache.avro.file.Header",
    "fields": [{"name": "magic", "type": {"type": "fixed", "name": "magic", "size": 4}},
               {"name": "meta", "type": {"type": "map", "values": "bytes"}},
               {"name": "sync", "type": {"type": "fixed", "name": "sync", "size": 16}}]})

_CODECS: dict[str, Callable[[bytes], bytes]] = {
    "null": lambda data: data,
    "deflate": lambda data: zlib.decompressobj(-15).decompress(data),
    "bzip2": bz2.decompress,
    "xz": lzma.decompress,
}


class Record(NamedTuple):
    """A decoded record and its ordinal among the file's decoded records."""

    value: Any
    index: int


class Corrupt(NamedTuple):
    """A stretch of the file that could not be read.

    Attributes:
      offset: its first byte in the file.
      length: its length in bytes.
      head: its first bytes (at most `CORRUPT_PAYLOAD_BYTES`).
      detail: why it could not be read.
    """

    offset: int
    length: int
    head: bytes
    detail: str


class _Damaged(Exception):
    pass


def _read_long(handle: BinaryIO) -> int:
    """An Avro long (zig-zag varint)."""
    shift = result = 0
    while True:
        byte = handle.read(1)
        if not byte:
            raise _Damaged("the file ends inside a block header")
        b = byte[0]
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return (result >> 1) ^ -(result & 1)
        shift += 7
        if shift > 63:
            raise _Damaged("a block header holds an over-long number")


def _read_exact(handle: BinaryIO, n: int) -> bytes:
    data = handle.read(n)
    if len(data) != n:
        raise _Damaged(f"the file ends {n - len(data)} bytes short of a block's end")
    return data


def _next_sync(handle: BinaryIO, start: int, sync: bytes, size: int) -> int:
    """The offset just past the first `sync` marker at or after `start`; `size` when there is none."""
    position = start
    carry = b""
    handle.seek(start)
    while position < size:
        chunk = handle.read(_CHUNK)
        if not chunk:
            break
        window = carry + chunk
        found = window.find(sync)
        if found >= 0:
            return position - len(carry) + found + SYNC_SIZE
        carry = window[-(SYNC_SIZE - 1):]
        position += len(chunk)
    return size


def _head(handle: BinaryIO, offset: int, length: int) -> bytes:
    handle.seek(offset)
    return handle.read(min(length, CORRUPT_PAYLOAD_BYTES))


def read_avro(handle: BinaryIO, size: int) -> Iterator[Union[Record, Corrupt]]:
    """The records of an Avro container file, and the stretches that could not be read, in file order.

    Args:
      handle: the file, opened for reading, seekable.
      size: its length in bytes.
    """
    if size == 0:
        return
    try:
        start = handle.read(len(MAGIC))
        if start != MAGIC:  # checked first: a foreign file must not be parsed as a header
            raise _Damaged(f"not an Avro file (it starts with {start!r}, not {MAGIC!r})")
        handle.seek(0)
        header = fastavro.schemaless_reader(handle, _HEADER_SCHEMA)
        meta = header["meta"]
        codec = meta.get("avro.codec", b"null").decode("utf-8", "replace")
        if codec not in _CODECS:
            raise _Damaged(f"Avro codec {codec!r} is not supported (null, deflate, bzip2, xz are)")
        schema = fastavro.parse_schema(json.loads(meta["avro.schema"]))
        sync = header["sync"]
        position = handle.tell()
    except Exception as error:  # noqa: BLE001 - any failure here means the header is unreadable
        yield Corrupt(0, size, _head(handle, 0, size), f"no readable Avro header: {_describe(error)}")
        return
    decompress = _CODECS[codec]
    index = 0
    while position < size:
        handle.seek(position)
        try:
            count = _read_long(handle)
            length = _read_long(handle)
            if count < 0 or length < 0 or handle.tell() + length + SYNC_SIZE > size:
                raise _Damaged(f"a block header says {count} records in {length} bytes, past the file's end "
                               f"or negative")
            data = decompress(_read_exact(handle, length))
            if _read_exact(handle, SYNC_SIZE) != sync:
                raise _Damaged("a block does not end with the file's sync marker")
            end = handle.tell()
            buffer = io.BytesIO(data)
            records = [fastavro.schemaless_reader(buffer, schema) for _ in range(count)]
            if buffer.tell() != len(data):
                raise _Damaged(f"a block holds {len(data) - buffer.tell()} bytes beyond its {count} records")
        except Exception as error:  # noqa: BLE001 - a damaged block, whatever the decoder raised
            resume = _next_sync(handle, position + 1, sync, size)
            yield Corrupt(position, resume - position, _head(handle, position, resume - position),
                          f"an unreadable block: {_describe(error)}")
            position = resume
            continue
        for record in records:
            yield Record(record, index)
            index += 1
        position = end


def _describe(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0][:200]}" if text and not isinstance(error, _Damaged) else (
        text[0][:200] if text else type(error).__name__)
