"""Read our own shards back safely: member names are checked, only our extensions are decoded, never pickle."""

from __future__ import annotations

import json
import re
import tarfile
from collections.abc import Iterator
from typing import IO, Any

from vlaforge.pipelines.shards.npy import load_npy
from vlaforge.pipelines.shards.tar_reader import TarMember, TarReader

_SAFE_MEMBER = re.compile(r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_.-]+$")
DECODABLE = (".npy", ".json")


class UnsafeShardError(ValueError):
    """A shard member that must not be read: a path, a link, or an extension that would need pickle."""


def check_member(shard: str, member: tarfile.TarInfo | TarMember) -> None:
    """Refuse anything but a plain file with a flat, safe WebDataset name."""
    if not member.isreg():
        raise UnsafeShardError(f"{shard}: member {member.name!r} is not a regular file (links are refused)")
    if not _SAFE_MEMBER.match(member.name):
        raise UnsafeShardError(f"{shard}: member name {member.name!r} is not a flat WebDataset name")
    if member.name.endswith((".pyd", ".pkl", ".pickle")):
        raise UnsafeShardError(f"{shard}: member {member.name!r} is a pickle; shards must never contain one")


def decode_member(name: str, data: bytes) -> Any:
    """`.npy` without pickle, `.json` as JSON; anything else stays bytes."""
    if name.endswith(".npy"):
        return load_npy(data)
    if name.endswith(".json"):
        return json.loads(data)
    return data


def iter_samples(fileobj: IO[bytes], shard: str, wanted: tuple[str, ...] | None = None) -> Iterator[dict[str, Any]]:
    """Samples of a shard as dicts keyed by extension, plus `__key__`.

    With `wanted` (extensions such as ("state.npy", "meta.json")), other members are skipped without being read
    when the file is seekable: statistics never touch image bytes. Read with `TarReader` (a header at a time,
    nothing kept per member), not `tarfile`, which keeps every member's TarInfo until the archive is closed.
    """
    current: dict[str, Any] = {}
    seekable = bool(getattr(fileobj, "seekable", lambda: False)())
    for member in TarReader(fileobj, seekable=seekable).members():
        check_member(shard, member)
        key, extension = member.name.split(".", 1)
        if current and current["__key__"] != key:
            yield current
            current = {}
        current.setdefault("__key__", key)
        if wanted is None or extension in wanted:
            current[extension] = decode_member(extension, member.read())
    if current:
        yield current
