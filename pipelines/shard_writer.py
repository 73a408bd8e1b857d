"""Deterministic WebDataset shards: the same samples always give byte-identical tar files."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import pathlib
import re
import tarfile

from vlaforge.pipelines.atomic_files import publish, temporary_path

_MEMBER_NAME = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_.-]+$")


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


class _HashingFile(io.RawIOBase):
    """A write-only file that hashes everything written to it on the way to disk."""

    def __init__(self, handle: io.BufferedWriter) -> None:
        self._handle = handle
        self.digest = hashlib.sha256()
        self.size = 0

    def writable(self) -> bool:
        return True

    def write(self, data: bytes) -> int:  # type: ignore[override]
        self.digest.update(data)
        self.size += len(data)
        return self._handle.write(data)


class TarShardWriter:
    """Writes one shard under a temporary name; `finish()` publishes it under its final name.

    Members of a sample are sorted by name and carry fixed metadata (mtime 0, uid 0, mode 0444), so the bytes
    depend only on the samples.
    """

    def __init__(self, path: pathlib.Path) -> None:
        self.path = path
        self.samples = 0
        self.data_bytes = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._temporary = temporary_path(path)
        self._handle = open(self._temporary, "wb")
        self._hashing = _HashingFile(self._handle)
        self._tar = tarfile.open(fileobj=self._hashing, mode="w|", format=tarfile.USTAR_FORMAT)

    def write(self, key: str, members: dict[str, bytes]) -> None:
        """Add one sample: `members` maps extension (e.g. "state.npy") to encoded bytes."""
        for extension in sorted(members):
            name = f"{key}.{extension}"
            if not _MEMBER_NAME.match(name) or len(name) > 100:
                raise ValueError(f"member name {name!r} is not a safe WebDataset name (letters, digits, _ - .)")
            info = tarfile.TarInfo(name)
            info.size = len(members[extension])
            info.mtime, info.mode, info.uid, info.gid, info.uname, info.gname = 0, 0o444, 0, 0, "", ""
            self._tar.addfile(info, io.BytesIO(members[extension]))
            self.data_bytes += info.size
        self.samples += 1

    def finish(self) -> WrittenShard:
        """Close the tar, fsync it and rename it to its final name."""
        self._tar.close()
        self._handle.close()
        publish(self._temporary, self.path)
        return WrittenShard(self.path, self.samples, self._hashing.size, self._hashing.digest.hexdigest())

    def abort(self) -> None:
        """Drop the unfinished shard."""
        self._tar.close()
        self._handle.close()
        self._temporary.unlink(missing_ok=True)
