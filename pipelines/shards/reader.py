"""Samples of one shard, as raw bytes keyed by extension, read safely whatever the URL.

Nothing is decoded here and nothing is ever unpickled: members stay bytes. A shard is refused (`BadShardError`, with a
`BadShardReason`) when its size differs from the corpus manifest's (checked before any sample is read), when its
sha256 differs (with `verify_sha256`: a remote shard is then spooled to a temporary file while it is hashed, so no
sample of a bad shard is used and the shard is downloaded once), when a member has an unsafe name or an extension
outside `extensions` (`.pyd`, `.pkl` and friends are never allowed), or when it holds a different number of samples.

A local (or spooled) shard is checked whole before its first sample is handed out: one pass over its member headers
(seeking over the data) checks every name and counts the samples, and keeps where each member's data lies, so the
samples are then read by offset without parsing a header twice, and unwanted samples are never read. A remote shard
read without verification is checked as it streams: a bad member stops it at that member, and the samples before it
(complete, with safe names) will have been used. A sample is handed out only once the next member header (or the
end-of-archive block) shows it is complete: a sample cut short by a truncated archive is never handed out.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import hashlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from typing import IO, Any

from vlaforge.datasets.schema import SampleKey
from vlaforge.pipelines.shards.members import UnsafeShardError, check_member
from vlaforge.pipelines.shards.tar_reader import TarFormatError, TarMember, TarReader
from vlaforge.pipelines.shards.urls import ShardNotFoundError, ShardOpener, ShardSource

_CHUNK = 2**20
_PICKLING = frozenset({".pyd", ".pkl", ".pickle", ".pth", ".pt", ".joblib", ".npz"})

Interval = tuple[int, int]
"""[start, stop) sample indices within one shard."""
SampleIndex = tuple[str, list[tuple[str, int, int]]]
"""One sample of an indexed shard: its key, and per member (extension, data offset, size)."""


class StreamField(str, enum.Enum):
    """Keys a stream adds to each sample's members (which are keyed by extension, e.g. "state.npy")."""

    KEY = SampleKey.KEY.value
    URL = "__url__"
    COMPONENT = "component"
    KIND = "kind"
    """The sample's kind: robot or vl."""
    EPOCH = "epoch"
    """The component's epoch the sample was drawn in (0 first)."""


class BadShardReason(str, enum.Enum):
    MISSING = "missing"
    SIZE_MISMATCH = "size_mismatch"
    SHA256_MISMATCH = "sha256_mismatch"
    TRUNCATED = "truncated"
    UNSAFE_MEMBER = "unsafe_member"
    UNKNOWN_EXTENSION = "unknown_extension"
    SAMPLE_COUNT_MISMATCH = "sample_count_mismatch"
    CORRUPT = "corrupt"


class BadShardError(ValueError):
    """A shard that must not be (further) used; the message names the shard, the problem and the fix."""

    def __init__(self, url: str, reason: BadShardReason, detail: str) -> None:
        super().__init__(f"{url}: {detail}")
        self.url = url
        self.reason = reason


@dataclasses.dataclass(frozen=True)
class ShardEntry:
    """What the corpus manifest promises about one shard."""

    url: str
    """Absolute (resolved) URL."""
    samples: int
    bytes: int
    sha256: str


class ShardReader:
    """Reads the samples of shards: checks first, then streams."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config:
        """What a shard may contain and how hard to check it."""

        extensions: tuple[str, ...] = (".jpg", ".npy", ".json")
        """The final extensions a member may have (`conversation.json` is a `.json`); any other refuses the shard."""
        verify_sha256: bool = False
        """Hash every shard before using it (remote shards are spooled to `spool_dir` for that)."""
        spool_dir: str | None = None
        """Where remote shards are spooled while verified (None: the system's temporary directory)."""

        def __post_init__(self) -> None:
            bad = [e for e in self.extensions if not e.startswith(".") or e.lower() in _PICKLING]
            if bad:
                raise ValueError(f"ShardReader.Config.extensions: {bad} not allowed (each starts with '.', and "
                                 f"formats that unpickle, {sorted(_PICKLING)}, are never read)")

    def __init__(self, config: ShardReader.Config | None = None, opener: ShardOpener | None = None) -> None:
        self.config = config or ShardReader.Config()
        self.opener = opener or ShardOpener()

    def samples(self, shard: ShardEntry, wanted: Sequence[Interval]) -> Iterator[dict[str, Any]]:
        """The samples at indices `wanted` (sorted intervals), in index order: {"__key__", "__url__", ext: bytes}.

        Raises BadShardError when the shard is refused (see the module docstring for when samples may already have
        been handed out).
        """
        with contextlib.ExitStack() as stack:
            try:
                source = stack.enter_context(self.opener.open(shard.url))
            except ShardNotFoundError as error:
                raise BadShardError(shard.url, BadShardReason.MISSING, f"not found ({error}); restore the shard or "
                                    "rebuild the corpus manifest without it") from None
            _check_size(shard, _size_of(source))
            if self.config.verify_sha256:
                source = stack.enter_context(self._verified(source, shard))
            if source.seekable():
                index = self._index(source, shard)
                yield from self._read_indexed(source, shard, index, wanted)
            else:
                yield from self._stream(source, shard, wanted)

    @contextlib.contextmanager
    def _verified(self, source: IO[bytes], shard: ShardEntry) -> Iterator[IO[bytes]]:
        """`source` after its sha256 matched: itself (local), or a spooled copy (remote)."""
        digest = hashlib.sha256()
        with contextlib.ExitStack() as stack:
            target = None
            if not source.seekable():
                target = stack.enter_context(tempfile.TemporaryFile(dir=self.config.spool_dir))
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                if target is not None:
                    target.write(chunk)
            if digest.hexdigest() != shard.sha256:
                raise BadShardError(shard.url, BadShardReason.SHA256_MISMATCH,
                                    f"sha256 is {digest.hexdigest()}, the manifest says {shard.sha256}; the shard is "
                                    "corrupt or was replaced: restore it, or rebuild the corpus manifest")
            readable = target if target is not None else source
            readable.seek(0)
            yield readable

    def _index(self, source: IO[bytes], shard: ShardEntry) -> list[SampleIndex]:
        """Check every member header and count samples before any sample is used (seeking over the data); each
        sample's key and members as (extension, data offset, size)."""
        index: list[SampleIndex] = []
        try:
            for member in TarReader(source, seekable=True).members():
                key = self._checked_key(shard, member)
                if not index or index[-1][0] != key:
                    index.append((key, []))
                index[-1][1].append((member.name.split(".", 1)[1], member.offset, member.size))
        except TarFormatError as error:
            raise BadShardError(shard.url, BadShardReason.CORRUPT, f"is not a readable tar ({error})") from None
        if len(index) != shard.samples:
            raise BadShardError(shard.url, BadShardReason.SAMPLE_COUNT_MISMATCH,
                                f"holds {len(index)} samples, the manifest says {shard.samples}; rebuild the corpus "
                                "manifest")
        return index

    @staticmethod
    def _read_indexed(source: IO[bytes], shard: ShardEntry, index: list[SampleIndex],
                      wanted: Sequence[Interval]) -> Iterator[dict[str, Any]]:
        """The samples at `wanted` of an indexed (seekable) shard, each member read at its offset."""
        for start, stop in wanted:
            for position in range(start, stop):
                key, members = index[position]
                sample = {StreamField.KEY.value: key, StreamField.URL.value: shard.url}
                for extension, offset, size in members:
                    source.seek(offset)
                    data = source.read(size)
                    if len(data) != size:
                        raise BadShardError(shard.url, BadShardReason.TRUNCATED, f"ends inside member {key}."
                                            f"{extension} ({len(data)} of {size} bytes); restore the shard")
                    sample[extension] = data
                yield sample

    def _checked_key(self, shard: ShardEntry, member: TarMember) -> str:
        try:
            check_member(shard.url, member)
        except UnsafeShardError as error:
            raise BadShardError(shard.url, BadShardReason.UNSAFE_MEMBER, f"refused: {error}") from None
        if os.path.splitext(member.name)[1].lower() not in self.config.extensions:
            raise BadShardError(shard.url, BadShardReason.UNKNOWN_EXTENSION,
                                f"refused: member {member.name!r} is not one of {list(self.config.extensions)}")
        return member.name.split(".", 1)[0]

    def _stream(self, source: IO[bytes], shard: ShardEntry, wanted: Sequence[Interval]) -> Iterator[dict[str, Any]]:
        targets = (index for start, stop in wanted for index in range(start, stop))
        target = next(targets, None)
        index, current = -1, None
        try:
            for member in TarReader(source, seekable=source.seekable()).members():
                key = self._checked_key(shard, member)
                if current is None or current[StreamField.KEY.value] != key:
                    if current is not None and index == target:  # complete: the next sample has begun
                        yield current
                        target = next(targets, None)
                    if target is None:
                        return
                    index += 1
                    current = {StreamField.KEY.value: key, StreamField.URL.value: shard.url}
                if index == target:
                    current[member.name.split(".", 1)[1]] = member.read()
        except TarFormatError as error:
            raise BadShardError(shard.url, BadShardReason.TRUNCATED if "ends" in str(error) else
                                BadShardReason.CORRUPT, f"is not a whole tar: {error} (at sample {index}); restore "
                                "the shard") from None
        if current is not None and index == target:
            yield current
            target = next(targets, None)
        if target is not None:
            raise BadShardError(shard.url, BadShardReason.SAMPLE_COUNT_MISMATCH,
                                f"holds {index + 1} samples, the manifest says {shard.samples}")


def sha256_of(opener: ShardOpener, url: str) -> tuple[str, int]:
    """The sha256 and size of the object at `url`, streamed."""
    digest, size = hashlib.sha256(), 0
    with opener.open(url) as source:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def _size_of(source: IO[bytes]) -> int | None:
    if isinstance(source, ShardSource):
        return source.size
    return os.fstat(source.fileno()).st_size


def _check_size(shard: ShardEntry, size: int | None) -> None:
    if size is not None and size != shard.bytes:
        raise BadShardError(shard.url, BadShardReason.SIZE_MISMATCH,
                            f"is {size} bytes, the manifest says {shard.bytes}; the shard was truncated or replaced: "
                            "restore it, or rebuild the corpus manifest")
