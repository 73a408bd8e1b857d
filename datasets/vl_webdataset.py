"""Image-text WebDataset tars as img2dataset writes them (CC3M, CC12M, LAION) as a `Source` of caption `VlRow`s.

`root` is a directory of `*.tar` shards (or one tar). A sample is the consecutive members sharing a key:
`<key>.jpg` (or `.png`, `.webp`), `<key>.txt` (the caption) and `<key>.json` (img2dataset's metadata, whose
`caption` is used when there is no `.txt`). Each becomes one conversation: the image with a caption question
(`vl_rows.CAPTION_PROMPTS`, picked by key) and the caption as the answer. The row id is the key; a unit is a row
range of one tar. Member names are checked: one that is absolute or climbs out (`..`) refuses the whole tar.
A sample without an image, with an image that does not decode, or with an empty caption is quarantined by name.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import tarfile
from collections.abc import Iterator
from typing import Any

from vlaforge.datasets.drops import DropReason
from vlaforge.datasets.schema import VlTask
from vlaforge.datasets.source import SourceError, WorkUnit
from vlaforge.datasets.vl_row_source import VlRowSource, VlRowSourceConfig
from vlaforge.datasets.vl_rows import RowReject, VlRow, caption_conversation, where

IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


class WebDatasetCaptionSource(VlRowSource):
    """Caption rows of img2dataset's WebDataset output."""

    name = "vl-webdataset"
    suffixes = (".tar",)
    task = VlTask.CAPTION

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(VlRowSourceConfig):
        pass

    def row_count(self, path: pathlib.Path) -> int:
        return len(_keys(str(path), path.stat().st_mtime_ns))

    def records(self, unit: WorkUnit) -> Iterator[tuple[int, Any]]:
        path = self.base / unit.files[0]
        start, stop = unit.episodes or (0, 0)
        index = -1
        for index, sample in enumerate(_samples(path)):
            if index >= stop:
                return
            if index >= start:
                yield index, sample

    def row(self, file: str, row: int, record: Any) -> VlRow:
        key = record["__key__"]
        at = where(file, row, key)
        image = next((record[e] for e in IMAGE_EXTENSIONS if e in record), None)
        if image is None:
            raise RowReject(DropReason.MISSING_IMAGE, f"{at}: no {'/'.join(IMAGE_EXTENSIONS)} member for this key; "
                            "re-download the sample or drop it")
        caption = record["txt"].decode("utf-8", "replace") if "txt" in record else _json_caption(record, at)
        return VlRow(file=file, row=row, row_id=key, images=(image,),
                     conversation=caption_conversation(caption, key, at), layout="webdataset")

    def row_id(self, record: Any, row: int) -> str:
        return record.get("__key__", str(row)) if isinstance(record, dict) else str(row)


def _json_caption(record: dict[str, Any], at: str) -> str:
    try:
        return str(json.loads(record.get("json", b"{}")).get("caption") or "")
    except (ValueError, AttributeError):
        raise RowReject(DropReason.BAD_RECORD, f"{at}: its .json member is not a JSON object") from None


def _samples(path: pathlib.Path) -> Iterator[dict[str, Any]]:
    """A tar's samples in order: members grouped by key (WebDataset keeps a sample's members together)."""
    sample: dict[str, Any] = {}
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                key, extension = _split(path, member)
                if key is None:
                    continue
                if sample and sample["__key__"] != key:
                    yield sample
                    sample = {}
                sample["__key__"] = key
                extracted = tar.extractfile(member)
                sample[extension] = extracted.read() if extracted else b""
    except tarfile.TarError as error:
        raise SourceError(f"{path}: not a readable tar ({error}); re-download the shard") from None
    if sample:
        yield sample


def _split(path: pathlib.Path, member: tarfile.TarInfo) -> tuple[str | None, str]:
    """(key, extension) of a member, as WebDataset splits names (the key ends at the basename's first dot);
    (None, "") for what is not a sample file."""
    name = member.name
    if name.startswith("/") or ".." in name.split("/"):
        raise SourceError(f"{path}: member {name!r} is absolute or climbs out of the archive; refused")
    directory, _, base = name.rpartition("/")
    stem, dot, extension = base.partition(".")
    if not member.isfile() or not dot:
        return None, ""
    return (f"{directory}/{stem}" if directory else stem), extension.lower()


@functools.lru_cache(maxsize=64)
def _keys(path: str, mtime_ns: int) -> list[str]:
    """The keys of a tar, in order, from its headers alone (cached by path and modification time)."""
    keys: list[str] = []
    try:
        with tarfile.open(path) as tar:
            for member in tar:
                key, _ = _split(pathlib.Path(path), member)
                if key is not None and (not keys or keys[-1] != key):
                    keys.append(key)
    except tarfile.TarError as error:
        raise SourceError(f"{path}: not a readable tar ({error}); re-download the shard") from None
    return keys
