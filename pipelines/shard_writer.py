"""Deterministic WebDataset shards: the same samples always give byte-identical tar files.

The tar is written by hand rather than through `tarfile`: every member has the same fixed metadata, so its 512-byte
USTAR header is a constant template with only the name, size and checksum filled in. The bytes are those that
`tarfile.addfile` wrote in USTAR format (Python 3.11.7), at a fraction of its per-member cost, which dominated
ingest; and they no longer depend on which Python's tarfile runs.
"""

from __future__ import annotations

import dataclasses
import hashlib
import pathlib
import re

from vlaforge.pipelines.atomic_files import publish, temporary_path

_MEMBER_NAME = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_.-]+$")
BLOCK = 512
RECORD = 20 * BLOCK
"""tar's record size: the archive is padded with zeros to a multiple of it, as tarfile does."""
_MAX_SIZE = 8**11 - 1
"""The largest member USTAR's 11 octal digits can hold (8 GiB - 1)."""
# Header fields after name, mode, uid, gid, size and mtime (see POSIX ustar): typeflag "0" (regular file), no link
# name, the "ustar\0" magic and version "00", empty user and group names, empty device fields (as this Python's tarfile
# writes them for anything but a device; some older versions wrote zeros there), no prefix, padding to 512 bytes.
_TAIL = b"0" + bytes(100) + b"ustar\x0000" + bytes(64) + bytes(16) + bytes(155 + 12)
_MODE_UID_GID = b"0000444\x00" + b"0000000\x00" * 2
_MTIME = b"00000000000\x00"
_FIXED_SUM = sum(_MODE_UID_GID) + sum(_MTIME) + sum(_TAIL) + 8 * ord(" ")
"""The checksum's share from the fixed fields, and from the checksum field itself, which counts as eight spaces."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ShardConfig:
    """When a shard is full. Whichever limit is reached first closes it."""

    max_samples: int | None = None
    """Samples per shard; None for no limit."""
    max_bytes: int | None = 256 * 2**20
    """Bytes of member data per shard (about the tar size); None for no limit."""

    def __post_init__(self) -> None:
        if self.max_samples is None and self.max_bytes is None:
            raise ValueError("ShardConfig needs max_samples or max_bytes (both are None)")
        if self.max_samples is not None and self.max_samples < 1:
            raise ValueError(f"ShardConfig.max_samples must be >= 1, got {self.max_samples}")
        if self.max_bytes is not None and self.max_bytes < 1:
            raise ValueError(f"ShardConfig.max_bytes must be >= 1, got {self.max_bytes}")

    def is_full(self, samples: int, size: int) -> bool:
        return (self.max_samples is not None and samples >= self.max_samples) or (
            self.max_bytes is not None and size >= self.max_bytes
        )


@dataclasses.dataclass(frozen=True)
class WrittenShard:
    path: pathlib.Path
    samples: int
    bytes: int
    sha256: str


def member_header(name: str, size: int) -> bytes:
    """The USTAR header of a regular file `name` of `size` bytes, mtime 0, mode 0444, uid/gid 0, no owner names."""
    encoded = name.encode("ascii")
    if len(encoded) > 100 or size > _MAX_SIZE:
        raise ValueError(f"tar member {name!r} of {size} bytes does not fit a USTAR header (name <= 100, < 8 GiB)")
    size_field = b"%011o\x00" % size
    checksum = sum(encoded) + sum(size_field) + _FIXED_SUM
    fields = (encoded.ljust(100, b"\x00"), _MODE_UID_GID, size_field, _MTIME, b"%06o\x00 " % checksum, _TAIL)
    return b"".join(fields)


def _padding(size: int) -> bytes:
    """Zeros that take `size` bytes to the next block boundary."""
    return bytes(-size % BLOCK)


class TarShardWriter:
    """Writes one shard under a temporary name; `finish()` publishes it under its final name.

    Members of a sample are sorted by name and carry fixed metadata (mtime 0, uid 0, mode 0444), so the bytes
    depend only on the samples.
    """

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.samples = 0
        self.data_bytes = 0
        self.size = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._temporary = temporary_path(path)
        self._handle = open(self._temporary, "wb")
        self._digest = hashlib.sha256()

    def write(self, key: str, members: dict[str, bytes]) -> None:
        """Add one sample: `members` maps extension (e.g. "state.npy") to encoded bytes."""
        pieces = []
        for extension in sorted(members):
            name, data = f"{key}.{extension}", members[extension]
            if not _MEMBER_NAME.match(name) or len(name) > 100:
                raise ValueError(f"member name {name!r} is not a safe WebDataset name (letters, digits, _ - .)")
            pieces += (member_header(name, len(data)), data, _padding(len(data)))
        self._append(b"".join(pieces))  # one write and one hash update per sample, not three per member
        self.data_bytes += sum(len(data) for data in members.values())
        self.samples += 1

    def finish(self) -> WrittenShard:
        """End the archive as tarfile does (two zero blocks, then zeros up to a whole record), fsync, rename."""
        self._append(bytes(2 * BLOCK))
        self._append(bytes(-self.size % RECORD))
        self._handle.close()
        publish(self._temporary, self.path)
        return WrittenShard(self.path, self.samples, self.size, self._digest.hexdigest())

    def abort(self) -> None:
        """Drop the unfinished shard."""
        self._handle.close()
        self._temporary.unlink(missing_ok=True)

    def _append(self, data: bytes) -> None:
        self._digest.update(data)
        self._handle.write(data)
        self.size += len(data)
