"""Members of a POSIX tar archive, read front to back from any byte stream, a header at a time.

Reads what `tarfile` writes and what WebDataset writers produce: ustar headers (with the name prefix field), pax
extended headers (`path` and `size` records) and GNU long names; the octal and base-256 size encodings; checksums
as POSIX defines them (unsigned, or signed as some old tars wrote). It exists because shards are read on the
training hot path and `tarfile`'s stream mode spends most of a small sample's read time parsing headers, and
because it says when an archive ends without its end-of-archive blocks, where `tarfile` in stream mode ends
silently if the cut falls on a header boundary.
"""

from __future__ import annotations

import dataclasses
import tarfile
from collections.abc import Iterator
from typing import IO

BLOCK = 512
_ZERO = bytes(BLOCK)
_REGULAR = (b"0", b"\x00", b"7")
_PAX, _PAX_GLOBAL, _GNU_LONGNAME = b"x", b"g", b"L"
_MAX_META = 1 << 20
"""The largest pax or long-name record we accept (a hostile archive could announce gigabytes)."""


class TarFormatError(ValueError):
    """The bytes are not a well-formed tar archive (a bad checksum, a cut, a malformed field)."""


@dataclasses.dataclass
class TarMember:
    """One archive member; `read()` returns its data (once, before the iteration moves on)."""

    name: str
    size: int
    type: bytes
    """The typeflag: b"0" (or NUL) for a regular file."""
    _reader: TarReader
    offset: int = 0
    """Where the member's data starts, in bytes from where the reader started."""

    def isreg(self) -> bool:
        return self.type in _REGULAR

    def tarinfo(self) -> tarfile.TarInfo:
        """As a `tarfile.TarInfo`, for checks written against tarfile."""
        info = tarfile.TarInfo(self.name)
        info.size = self.size
        info.type = tarfile.REGTYPE if self.isreg() else self.type
        return info

    def read(self) -> bytes:
        return self._reader.read_data(self)


class TarReader:
    """Iterate `members()` over `source`; skipped data is read through (or seeked over, if `seekable`)."""

    def __init__(self, source: IO[bytes], *, seekable: bool = False) -> None:
        self._source = source
        self._seekable = seekable
        self._unread = 0
        """Bytes of the current member (data and padding) not yet consumed."""
        self._current: TarMember | None = None
        self._position = 0
        """Bytes consumed from `source` so far."""

    def members(self) -> Iterator[TarMember]:
        """Every member up to the end-of-archive block; raises TarFormatError if the archive is cut or bad."""
        overrides: dict[str, str] = {}
        while True:
            self._skip(self._unread)
            header = self._exact(BLOCK, "a header")
            if header == _ZERO:
                return
            name, size, kind = _parse_header(header)
            self._current = None
            self._unread = size + _padding(size)
            if kind in (_PAX, _PAX_GLOBAL, _GNU_LONGNAME):
                data = self._meta(size, kind)
                if kind == _PAX:
                    overrides.update(_pax_records(data))
                elif kind == _GNU_LONGNAME:
                    overrides["path"] = data.rstrip(b"\x00").decode("utf-8", "surrogateescape")
                continue
            if "size" in overrides:
                size = _integer(overrides["size"], "pax size")
                self._unread = size + _padding(size)
            member = TarMember(overrides.get("path", name), size, kind, self, self._position)
            overrides = {}
            self._current = member
            yield member

    def read_data(self, member: TarMember) -> bytes:
        if member is not self._current or self._unread != member.size + _padding(member.size):
            raise RuntimeError(f"tar member {member.name!r} can only be read once, before the next member")
        data = self._exact(member.size, f"the data of {member.name!r}")
        self._unread = _padding(member.size)
        return data

    def _meta(self, size: int, kind: bytes) -> bytes:
        if size > _MAX_META:
            raise TarFormatError(f"a {kind.decode()!r} header of {size} bytes (more than {_MAX_META} is refused)")
        data = self._exact(size, "an extended header")
        self._unread = _padding(size)
        return data

    def _exact(self, size: int, what: str) -> bytes:
        data = self._read(size)
        while len(data) < size:
            more = self._read(size - len(data))
            if not more:
                if not data and what == "a header":
                    raise TarFormatError("the archive ends without its end-of-archive blocks (cut short?)")
                raise TarFormatError(f"the archive ends inside {what} ({len(data)} of {size} bytes)")
            data += more
        return data

    def _skip(self, count: int) -> None:
        if not count:
            return
        if self._seekable:
            self._source.seek(count, 1)
            self._position += count
        else:
            while count:
                data = self._read(min(count, 1 << 20))
                if not data:
                    raise TarFormatError(f"the archive ends {count} bytes inside a member's data")
                count -= len(data)
        self._unread = 0


    def _read(self, size: int) -> bytes:
        data = self._source.read(size)
        self._position += len(data)
        return data


def _padding(size: int) -> int:
    return -size % BLOCK


def _parse_header(header: bytes) -> tuple[str, int, bytes]:
    stored = _integer(header[148:156], "checksum")
    unsigned = sum(header) - sum(header[148:156]) + 8 * 32
    if stored != unsigned and stored != unsigned - 256 * sum(1 for b in header if b > 127):
        raise TarFormatError(f"header checksum {stored} does not match its bytes ({unsigned}); the archive is corrupt")
    name = _text(header[0:100])
    if header[257:262] == b"ustar":
        prefix = _text(header[345:500])
        name = f"{prefix}/{name}" if prefix else name
    return name, _size(header[124:136]), header[156:157]


def _size(field: bytes) -> int:
    if field[0] & 0x80:  # base-256, for members of 8 GiB and more
        value = int.from_bytes(field[1:], "big")
        return value - (1 << (8 * len(field) - 8)) if field[0] & 0x40 else value
    return _integer(field, "size")


def _integer(field: bytes | str, what: str) -> int:
    text = field.decode("ascii", "replace") if isinstance(field, bytes) else field
    text = text.split("\x00", 1)[0].strip()
    try:
        return int(text, 8) if isinstance(field, bytes) else int(text)
    except ValueError:
        raise TarFormatError(f"malformed {what} field {text!r} in a tar header") from None


def _text(field: bytes) -> str:
    return field.split(b"\x00", 1)[0].decode("utf-8", "surrogateescape")


def _pax_records(data: bytes) -> dict[str, str]:
    """The `length key=value\\n` records of a pax extended header."""
    records, position = {}, 0
    while position < len(data) and data[position] != 0:
        space = data.find(b" ", position)
        if space < 0:
            raise TarFormatError("a malformed pax record (no length)")
        length = _integer(data[position:space].decode("ascii", "replace"), "pax record length")
        record = data[space + 1: position + length]
        if length <= 0 or not record.endswith(b"\n") or b"=" not in record:
            raise TarFormatError("a malformed pax record")
        key, value = record[:-1].split(b"=", 1)
        records[key.decode("utf-8", "surrogateescape")] = value.decode("utf-8", "surrogateescape")
        position += length
    return records
