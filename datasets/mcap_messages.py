"""Messages of one MCAP file, found again by where a first streaming pass saw them.

`located_records` streams a file as `mcap`'s `StreamReader` does (CRCs checked, one chunk in memory at a time) and
gives each record with its `MessageLocation`: the file offset of the top-level record holding it (a chunk, or the
message itself when it sits outside chunks) and its ordinal among that chunk's records. `McapMessages` reads a
message back from its location: it seeks to the record, decompresses the chunk and finds where each of its records
starts (parsing only the one asked for), keeping the last few chunks, so a walk in file order (a sample per tick)
decompresses each chunk about once. It needs no summary or index section, so it works on any file the first pass
could stream.

The file is opened on first use and held open until `release()`, which closes it and drops the chunks; the teleop
source releases it when the consumer moves on from the file's episodes. A read after that opens the file for that
read only, so an episode kept longer never holds a file handle.
"""

from __future__ import annotations

import collections
import dataclasses
import io
import pathlib
import struct
from collections.abc import Iterator
from typing import BinaryIO, NamedTuple

from mcap.data_stream import ReadDataStream
from mcap.exceptions import McapError
from mcap.opcode import Opcode
from mcap.records import Chunk, McapRecord, Message
from mcap.stream_reader import StreamReader, breakup_chunk, get_chunk_data_stream

MAGIC_SIZE = 8
"""Bytes of the magic before an MCAP file's first record."""
_LISTED = (Opcode.CHANNEL, Opcode.MESSAGE, Opcode.SCHEMA)
"""The chunk records `breakup_chunk` lists (it passes over others), which ordinals count."""
_RECORD_HEADER = struct.Struct("<BQ")
"""A record's opcode (uint8) and body length (uint64)."""


class MessageLocation(NamedTuple):
    """Where a record sits in its file."""

    offset: int
    """The file offset of the top-level record that holds it; only records `StreamReader` skips (opcodes it does
    not know) may come between this offset and that record."""
    ordinal: int
    """Its index among the records of the chunk at `offset` (as `breakup_chunk` lists them); -1: the top-level
    record is the message itself."""


def located_records(handle: BinaryIO) -> Iterator[tuple[McapRecord, MessageLocation]]:
    """Every record of an open MCAP file in file order, chunks broken up, each with its location; CRCs are checked.

    Raises what `StreamReader` raises on a bad file (EndOfFile for a truncated one, CRCValidationError, McapError)."""
    offset = MAGIC_SIZE
    for record in StreamReader(handle, validate_crcs=True, emit_chunks=True).records:
        if isinstance(record, Chunk):
            for ordinal, inner in enumerate(breakup_chunk(record, validate_crc=True)):
                yield inner, MessageLocation(offset, ordinal)
        else:
            yield record, MessageLocation(offset, -1)
        offset = handle.tell()  # the reader has consumed the record (and its padding): the next one starts here


def field_offset(message: bytes, field: bytes) -> int:
    """Where the bytes of a decoded byte-array field (a CDR `uint8[]`, stored as is after its length) start in the
    encoded `message`, so it can be cut out again without decoding; -1 when they are not there. Its first bytes
    are looked for, then the whole is compared: searching for a whole JPEG costs more than decoding the message."""
    start = message.find(field[:16])
    if start >= 0 and message[start : start + len(field)] != field:
        start = message.find(field)
    return start


@dataclasses.dataclass
class _Chunk:
    """A decompressed chunk's records, and where each record `breakup_chunk` lists starts among them."""

    data: bytes
    starts: list[int]

    @classmethod
    def of(cls, chunk: Chunk) -> "_Chunk":
        stream, size = get_chunk_data_stream(chunk, validate_crc=True)
        data, starts, position = stream.read(size), [], 0
        while position < size:  # record headers only: the one record asked for is parsed in `record`
            opcode, length = _RECORD_HEADER.unpack_from(data, position)
            if opcode in _LISTED:
                starts.append(position)
            position += _RECORD_HEADER.size + length
        return cls(data, starts)

    def record(self, ordinal: int) -> Message | None:
        """The record at `ordinal` when it is a message."""
        if not 0 <= ordinal < len(self.starts):
            return None
        buffer = io.BytesIO(self.data)  # shares the bytes, copies nothing
        buffer.seek(self.starts[ordinal])
        stream = ReadDataStream(buffer)
        opcode, length = stream.read1(), stream.read8()
        return Message.read(stream, length) if opcode == Opcode.MESSAGE else None


class McapMessages:
    """Reads messages of one MCAP file back by their `MessageLocation`, keeping the last `chunks_kept` chunks."""

    def __init__(self, path: pathlib.Path, chunks_kept: int = 4) -> None:
        self.path = path
        self.chunks_kept = chunks_kept
        self._handle: BinaryIO | None = None
        self._released = False
        self._chunks: collections.OrderedDict[int, _Chunk] = collections.OrderedDict()

    def message(self, location: MessageLocation) -> Message:
        """The message at `location`; raises McapError (or OSError, EndOfFile) when the file no longer holds it."""
        if location.ordinal < 0:
            record: McapRecord | None = self._record_at(location.offset)
        else:
            record = self._chunk(location.offset).record(location.ordinal)
        if not isinstance(record, Message):
            raise McapError(f"{self.path}: no message at offset {location.offset} (record {location.ordinal}); the "
                            f"file changed after it was read")
        return record

    def release(self) -> None:
        """Close the file and drop the kept chunks; from now on each read opens and closes the file."""
        self._released = True
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        self._chunks.clear()

    def _chunk(self, offset: int) -> _Chunk:
        chunk = self._chunks.pop(offset, None)
        if chunk is None:
            record = self._record_at(offset)
            if not isinstance(record, Chunk):
                raise McapError(f"{self.path}: no chunk at offset {offset}; the file changed after it was read")
            chunk = _Chunk.of(record)
        self._chunks[offset] = chunk  # most recently used last
        while len(self._chunks) > self.chunks_kept:
            self._chunks.popitem(last=False)
        return chunk

    def _record_at(self, offset: int) -> Chunk | Message:
        if self._released:
            with open(self.path, "rb") as handle:
                return _record_at(handle, offset)
        if self._handle is None:
            self._handle = open(self.path, "rb")
        return _record_at(self._handle, offset)


def _record_at(handle: BinaryIO, offset: int) -> Chunk | Message:
    """The first chunk or message record at or after `offset`, passing over records of unknown opcodes as
    `StreamReader` does."""
    handle.seek(offset)
    stream = ReadDataStream(handle)
    while True:
        opcode, length = stream.read1(), stream.read8()
        if opcode == Opcode.CHUNK:
            return Chunk.read(stream)
        if opcode == Opcode.MESSAGE:
            return Message.read(stream, length)
        handle.seek(length, io.SEEK_CUR)
