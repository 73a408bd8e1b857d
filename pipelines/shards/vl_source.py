"""Our own VL datasets read back as records: the input of relabeling (a better VLM rewrites their answers).

A unit is a run of consecutive shards in manifest order. Each record carries the images (in conversation order),
the conversation, the meta and the shard it came from. An unreadable shard is quarantined after the records read
from it so far, and the run goes on.
"""

from __future__ import annotations

import dataclasses
import tarfile
from collections.abc import Iterator
from typing import Any

from vlaforge.datasets.drops import DropLedger, DropReason
from vlaforge.datasets.schema import VlSampleKey
from vlaforge.datasets.source import Source, SourceConfig, WorkUnit
from vlaforge.pipelines.shards.manifest import records_of_split
from vlaforge.pipelines.shards.members import UnsafeShardError, iter_samples


@dataclasses.dataclass(frozen=True)
class VlRecord:
    """One VL sample as stored: what relabeling reads."""

    key: str
    images: tuple[bytes, ...]
    """JPEG bytes of `0.jpg`, `1.jpg`, ... in order."""
    conversation: list[dict[str, Any]]
    meta: dict[str, Any]
    file: str
    """The shard (relative to the dataset root) it was read from."""


class VlShardSource(Source):
    """Records from a VL dataset directory (with `manifest.parquet`) written by vlaforge."""

    name = "vl-shards"

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(SourceConfig):
        shards_per_unit: int = 4
        """Shards per work unit."""
        split: str | None = None
        """Only shards of this split; None for every split."""

        def __post_init__(self) -> None:
            if self.shards_per_unit < 1:
                raise ValueError(f"VlShardSource.Config.shards_per_unit must be >= 1, got {self.shards_per_unit}")

    config: Config

    @property
    def dataset_name(self) -> str:
        return self.root.name

    def plan(self) -> list[WorkUnit]:
        urls = [r.url for r in records_of_split(self.root, self.config.split)]
        size = self.config.shards_per_unit
        return [WorkUnit(i, tuple(urls[start : start + size])) for i, start in enumerate(range(0, len(urls), size))]

    def read(self, unit: WorkUnit, ledger: DropLedger) -> Iterator[VlRecord]:  # type: ignore[override]
        for url in unit.files:
            path = self.root / url
            try:
                with open(path, "rb") as file:
                    for sample in iter_samples(file, url):
                        yield _record(sample, url)
            except (OSError, tarfile.TarError, UnsafeShardError, ValueError, KeyError) as error:
                ledger.quarantine(file=url, episode="", reason=DropReason.UNREADABLE_FILE,
                                  message=f"{path}: {error}; rewrite the shard (its sha256 is in the manifest)")


def _record(sample: dict[str, Any], url: str) -> VlRecord:
    count = sum(1 for name in sample if name.endswith(".jpg"))
    return VlRecord(
        key=sample[VlSampleKey.KEY.value],
        images=tuple(sample[VlSampleKey.image(i)] for i in range(count)),
        conversation=sample[VlSampleKey.CONVERSATION.value],
        meta=sample[VlSampleKey.META.value],
        file=url,
    )
