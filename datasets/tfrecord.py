"""TFRecord framing, read and written without TensorFlow.

A TFRecord file is a sequence of records, each framed as:

    uint64 length (little endian) | uint32 masked CRC32C of those 8 bytes | data | uint32 masked CRC32C of data

The reader streams: it holds one record at a time (`file.read(length)`), so memory is bounded by the largest
record. It checks both checksums and tells three failures apart, because they call for different recovery:

- `TruncatedRecordError`: the file ends inside a record. Nothing after it exists.
- `LengthCrcError`: the length field is corrupt, so the next record's position is unknown: stop reading the file.
- `DataCrcError`: this record's data is corrupt but its length was trustworthy, so the reader has already moved
  past it and the next record can still be read.
"""

from __future__ import annotations

import dataclasses
import mmap
import os
import struct
from collections.abc import Iterable, Iterator
from typing import BinaryIO, NoReturn

import crc32c

_HEADER = struct.Struct("<QI")
_FOOTER = struct.Struct("<I")
_MASK_DELTA = 0xA282EAD8


def masked_crc32c(data: bytes | memoryview) -> int:
    """TFRecord's masked CRC32C: the CRC rotated right by 15 bits plus a constant, modulo 2**32."""
    crc = crc32c.crc32c(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


class TFRecordError(ValueError):
    """A record that cannot be read. Carries the file name, the record index and its byte offset."""

    def __init__(self, name: str, index: int, offset: int, detail: str) -> None:
        super().__init__(f"{name}: record {index} at byte offset {offset}: {detail}")
        self.name, self.index, self.offset, self.detail = name, index, offset, detail


class TruncatedRecordError(TFRecordError):
    """The file ends inside a record (a partial download or an interrupted copy)."""


class LengthCrcError(TFRecordError):
    """The length field fails its checksum: the rest of the file cannot be trusted."""


class DataCrcError(TFRecordError):
    """The record's data fails its checksum. The reader has moved past it; the next record is readable."""


@dataclasses.dataclass(frozen=True)
class Record:
    """One record's payload and where it was found."""

    index: int
    offset: int
    """Byte offset of the record's length field in the file."""
    data: bytes | memoryview
    """The payload: bytes, or a read-only memoryview of a memory map when the reader maps records."""


class TFRecordReader:
    """Reads records one at a time from a binary file object.

    `read()` returns the next `Record`, or None at the end of the file. After a `DataCrcError` the reader is
    positioned at the next record; after a `TruncatedRecordError` or `LengthCrcError` it is finished and
    `read()` returns None.

    With `map_records=True` (and a real file) each record's data is a read-only memoryview of a memory map of
    just that record: nothing is copied, and the view stays valid for as long as it is referenced (the map goes
    when the last view does), so values decoded as views into it can outlive the next `read()`. Reading a
    multi-megabyte record into a fresh bytes object instead costs page faults that can exceed the read itself. A
    file that cannot be mapped is read as usual. The file must not shrink while views of it are alive (touching a
    mapped page past its new end raises SIGBUS): source datasets are read, never written, during an ingest.
    """

    def __init__(self, file: BinaryIO, name: str = "", *, verify_data: bool = True, map_records: bool = False) -> None:
        self._file = file
        self.name = name or str(getattr(file, "name", "<stream>"))
        self.verify_data = verify_data
        self.index = 0
        self.offset = 0
        self.finished = False
        self._size = _file_size(file)
        self._start = file.tell() if map_records and self._size is not None else None
        """Where the reader began in the file, when it maps records (None: it reads them)."""

    def __iter__(self) -> Iterator[Record]:
        """Every record, raising on the first error (use `read()` to recover from a `DataCrcError`)."""
        while (record := self.read()) is not None:
            yield record

    def read(self) -> Record | None:
        """The next record, or None at a clean end of file."""
        if self.finished:
            return None
        index, offset = self.index, self.offset
        length = self._read_length(index, offset)
        if length is None:
            self.finished = True
            return None
        data = self._map(length, offset) if self._start is not None else None
        if data is None:
            data = self._read_exact(length, index, offset, "data")
        (data_crc,) = _FOOTER.unpack(self._read_exact(_FOOTER.size, index, offset, "data checksum"))
        self.index, self.offset = index + 1, offset + _HEADER.size + length + _FOOTER.size
        if self.verify_data and masked_crc32c(data) != data_crc:
            raise DataCrcError(self.name, index, offset, f"data checksum mismatch over {length} bytes")
        return Record(index, offset, data)

    def _read_length(self, index: int, offset: int) -> int | None:
        header = self._file.read(_HEADER.size)
        if not header:
            return None
        if len(header) < _HEADER.size:
            self._fail(TruncatedRecordError, index, offset, f"file ends inside the length field ({len(header)} bytes)")
        length, length_crc = _HEADER.unpack(header)
        if masked_crc32c(header[:8]) != length_crc:
            self._fail(LengthCrcError, index, offset, "length checksum mismatch; the rest of the file is unreadable")
        remaining = None if self._size is None else self._size - offset - _HEADER.size
        if remaining is not None and length + _FOOTER.size > remaining:
            self._fail(
                TruncatedRecordError, index, offset, f"record declares {length} bytes but only {remaining} remain"
            )
        return length

    def _read_exact(self, size: int, index: int, offset: int, what: str) -> bytes:
        data = self._file.read(size)
        if len(data) < size:
            detail = f"file ends inside the {what} ({len(data)} of {size} bytes)"
            self._fail(TruncatedRecordError, index, offset, detail)
        return data

    def _map(self, length: int, offset: int) -> memoryview | None:
        """The record's `length` data bytes, mapped, the file left after them; None (and records read from then on)
        where the file cannot be mapped. `_read_length` has checked that the file holds them."""
        start = self._start + offset + _HEADER.size
        page_start = start - start % mmap.ALLOCATIONGRANULARITY
        try:
            mapped = mmap.mmap(self._file.fileno(), start + length - page_start, offset=page_start,
                               access=mmap.ACCESS_READ) if length else b""
        except (OSError, ValueError):  # a file system or object that does not map: read it instead
            self._start = None
            return None
        self._file.seek(length, os.SEEK_CUR)
        return memoryview(mapped)[start - page_start :] if length else memoryview(mapped)

    def _fail(self, error: type[TFRecordError], index: int, offset: int, detail: str) -> NoReturn:
        self.finished = True
        raise error(self.name, index, offset, detail)


def _file_size(file: BinaryIO) -> int | None:
    """The file's size when it is a real file, so a huge bogus length is caught before allocating it."""
    try:
        return os.fstat(file.fileno()).st_size - file.tell()
    except (AttributeError, OSError, ValueError):
        return None


def read_records(path: str | os.PathLike[str]) -> Iterator[bytes]:
    """Every record's data in a file, raising `TFRecordError` on the first bad one."""
    with open(path, "rb") as file:
        for record in TFRecordReader(file, os.fspath(path)):
            yield record.data


def frame_record(data: bytes) -> bytes:
    """One record's bytes on disk: the length, its checksum, the data, its checksum."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


class TFRecordWriter:
    """Appends framed records to a binary file object."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self.records = 0
        self.bytes_written = 0

    def write(self, data: bytes) -> None:
        framed = frame_record(data)
        self._file.write(framed)
        self.records += 1
        self.bytes_written += len(framed)


def write_records(path: str | os.PathLike[str], records: Iterable[bytes]) -> int:
    """Write `records` to a new TFRecord file at `path`; returns the file's size in bytes."""
    with open(path, "wb") as file:
        writer = TFRecordWriter(file)
        for data in records:
            writer.write(data)
    return writer.bytes_written
