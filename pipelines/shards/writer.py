"""Deterministic WebDataset shards: the same samples always give byte-identical tar files.

The tar is written by hand rather than through `tarfile`: every member has the same fixed metadata, so its 512-byte
USTAR header is a constant template with only the name, size and checksum filled in. The bytes are those that
`tarfile.addfile` wrote in USTAR format (Python 3.11.7), at a fraction of its per-member cost, which dominated
ingest; and they no longer depend on which Python's tarfile runs.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import struct

from vlaforge.pipelines.atomic_files import temporary_path
from vlaforge.pipelines.shards.digest import WrittenFileSha256

_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_EXTENSION = re.compile(r"^[A-Za-z0-9_.-]+$")
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
_HEADER = struct.Struct("100s24s12s12s8s356s")
"""name, mode + uid + gid, size, mtime, checksum, the rest (see `_TAIL`): 512 bytes, the name NUL-padded."""
_PADDING = [bytes(size) for size in range(BLOCK)]
"""Zeros that take a member of each size modulo BLOCK to the next block boundary, by -size % BLOCK."""
WRITE_CHUNK = 4 * 2**20
"""Bytes gathered before one write and one hash hand-off."""
_IOV_MAX = min(os.sysconf("SC_IOV_MAX"), 1024)
"""Pieces per gathering write."""
_OWN_PIECE = 4096
"""Members this large are written from their own buffer; smaller ones are joined with the headers and padding
around them (each piece of a gathering write costs the kernel about as much as copying 1 KiB)."""
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


def member_header(name: bytes, name_sum: int, size: int) -> bytes:
    """The USTAR header of a regular file `name` of `size` bytes, mtime 0, mode 0444, uid/gid 0, no owner names.
    `name_sum` is the sum of the name's bytes, which the caller sums in parts (the key once per sample)."""
    if len(name) > 100 or size > _MAX_SIZE:
        raise ValueError(f"tar member {name!r} of {size} bytes does not fit a USTAR header (name <= 100, < 8 GiB)")
    size_field = b"%011o\x00" % size
    checksum = name_sum + sum(size_field) + _FIXED_SUM
    return _HEADER.pack(name, _MODE_UID_GID, size_field, _MTIME, b"%06o\x00 " % checksum, _TAIL)


class TarShardWriter:
    """Writes one shard under a temporary name; `finish()` publishes it under its final name.

    Members of a sample are sorted by name and carry fixed metadata (mtime 0, uid 0, mode 0444), so the bytes
    depend only on the samples. Samples are gathered into chunks of about `WRITE_CHUNK` bytes, each written with
    one gathering write (small writes cost the page cache, and then fsync, twice as much per byte), and hashed on
    a helper thread that reads them back while the next chunk is built (see `WrittenFileSha256`).
    """

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.samples = 0
        self.data_bytes = 0
        self.size = 0
        """Bytes of the archive so far, written or still gathered."""
        path.parent.mkdir(parents=True, exist_ok=True)
        self._temporary = temporary_path(path)
        self._handle = open(self._temporary, "wb+", buffering=0)  # read too: the hash helper reads it back
        self._digest = WrittenFileSha256(self._handle.fileno())
        self._written = 0
        self._pieces: list[bytes] = []
        self._gathered = 0
        self._extensions: dict[str, tuple[bytes, int]] = {}
        """Extension -> (b".extension", the sum of its bytes), each checked once."""

    def write(self, key: str, members: dict[str, bytes]) -> int:
        """Add one sample: `members` maps extension (e.g. "state.npy") to encoded bytes. Returns its data bytes."""
        if not _KEY.match(key):
            raise ValueError(f"sample key {key!r} is not a safe WebDataset name: a key is letters, digits, _ and -")
        encoded_key = key.encode("ascii")
        key_sum = sum(encoded_key) + _FIXED_SUM
        pieces, small, data_bytes, added = [], [], 0, 0
        for extension in sorted(members):
            dotted, dotted_sum = self._extensions.get(extension) or self._check_extension(key, extension)
            data = members[extension]
            size, name = len(data), encoded_key + dotted
            if len(name) > 100 or size > _MAX_SIZE:
                raise ValueError(f"tar member {name!r} of {size} bytes does not fit a USTAR header (name <= 100, "
                                 f"< 8 GiB)")
            size_field = b"%011o\x00" % size  # member_header, inlined: this loop runs for every member of every step
            checksum = b"%06o\x00 " % (key_sum + dotted_sum + sum(size_field))
            small.append(_HEADER.pack(name, _MODE_UID_GID, size_field, _MTIME, checksum, _TAIL))
            padding = -size % BLOCK
            if size < _OWN_PIECE:
                small += (data, _PADDING[padding])
            else:  # a frame: written from where it is, between the joined small pieces around it
                pieces += (b"".join(small), data)
                small = [_PADDING[padding]]
            data_bytes += size
            added += BLOCK + size + padding
        pieces.append(b"".join(small))
        self._pieces += pieces  # only once the whole sample is encoded: a refused member leaves nothing behind
        self.data_bytes += data_bytes
        self.samples += 1
        self._gather(added)
        return data_bytes

    def finish(self) -> WrittenShard:
        """`complete()`, then `publish()`."""
        written = self.complete()
        self.publish()
        return written

    def complete(self) -> WrittenShard:
        """End the archive as tarfile does (two zero blocks, then zeros up to a whole record) and fsync it, still under
        its temporary name."""
        end = bytes(2 * BLOCK + -(self.size + 2 * BLOCK) % RECORD)
        self._pieces.append(end)
        self._gather(len(end))
        self._flush()
        os.fsync(self._handle.fileno())  # durable before the rename, as `publish` does; the hash helper ends meanwhile
        sha256 = self._digest.hexdigest()
        self._handle.close()
        return WrittenShard(self.path, self.samples, self.size, sha256)

    def publish(self) -> None:
        """Give the completed shard its final name (a rename: readers see all of it or nothing)."""
        os.replace(self._temporary, self.path)

    def abort(self) -> None:
        """Drop the unfinished shard."""
        self._digest.close()
        self._handle.close()
        self._temporary.unlink(missing_ok=True)

    def _check_extension(self, key: str, extension: str) -> tuple[bytes, int]:
        if not _EXTENSION.match(extension):
            raise ValueError(f"member name {key}.{extension!r} is not a safe WebDataset name (letters, digits, _ - .)")
        dotted = b"." + extension.encode("ascii")
        self._extensions[extension] = (dotted, sum(dotted))
        return self._extensions[extension]

    def _gather(self, size: int) -> None:
        self.size += size
        self._gathered += size
        if self._gathered >= WRITE_CHUNK:
            self._flush()

    def _flush(self) -> None:
        if not self._pieces:
            return
        self._written += write_pieces(self._handle.fileno(), self._pieces)
        self._pieces.clear()
        self._gathered = 0
        self._digest.written(self._written)


def write_pieces(fd: int, pieces: list[bytes | memoryview]) -> int:
    """Write `pieces` one after another with gathering writes (no copy into one buffer); returns the bytes written."""
    total = 0
    for start in range(0, len(pieces), _IOV_MAX):
        batch = pieces[start : start + _IOV_MAX]
        size = sum(map(len, batch))
        done = os.writev(fd, batch)
        if done < size:  # a short write (a signal, a full disk): finish the batch plainly, which raises on failure
            rest = memoryview(b"".join(batch))[done:]
            while rest:
                rest = rest[os.write(fd, rest) :]
        total += size
    return total
