"""Where one unit's samples go: shards per split, named after the unit, each committed when complete."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Protocol

from vlaforge.pipelines.output_lock import CommitGuard
from vlaforge.pipelines.shards.manifest import ShardRecord, code_version, commit_shard, is_committed
from vlaforge.pipelines.shards.writer import ShardConfig, TarShardWriter


class ShardSample(Protocol):
    """What the sink writes: a robot sample (`RobotSample`) or a VL sample (`VlSample`)."""

    key: str
    split: object
    members: dict[str, bytes]
    episode_id: str


@dataclasses.dataclass
class _OpenShard:
    url: str
    writer: TarShardWriter | None
    """None when the shard was committed by an earlier run: its samples are counted but not written again."""
    samples: int = 0
    data_bytes: int = 0
    episodes: list[str] = dataclasses.field(default_factory=list)


class ShardSink:
    """Writes a unit's samples into `<split>/<dataset>-<unit>-<part>.tar`, in the order they arrive.

    Naming depends only on the unit and the sample order, so a rerun regenerates the same shards: those already
    committed are skipped, the rest are written again, byte-identical. A shard is renamed into place and committed
    inside `guard.held()`, so a worker whose run lost the output commits nothing (its shard is dropped).
    """

    def __init__(self, output: pathlib.Path, dataset: str, unit: int, source_files: list[str], config: ShardConfig,
                 guard: CommitGuard | None = None):
        self.output = output
        self.guard = guard or CommitGuard(output, None)
        self.dataset = dataset
        self.unit = unit
        self.source_files = source_files
        self.config = config
        self.records: list[ShardRecord] = []
        self.skipped: list[str] = []
        self._open: dict[str, _OpenShard] = {}
        self._parts: dict[str, int] = {}

    def add(self, sample: ShardSample) -> None:
        shard = self._open.get(sample.split.value) or self._start(sample.split.value)
        if shard.writer is not None:
            shard.data_bytes += shard.writer.write(sample.key, sample.members)
        else:
            shard.data_bytes += sum(len(v) for v in sample.members.values())
        shard.samples += 1
        if not shard.episodes or shard.episodes[-1] != sample.episode_id:
            shard.episodes.append(sample.episode_id)
        if self.config.is_full(shard.samples, shard.data_bytes):
            self._finish(sample.split.value)

    def close(self) -> list[ShardRecord]:
        """Finish every open shard; returns the records of shards committed by this run."""
        for split in sorted(self._open):
            self._finish(split)
        return self.records

    def abort(self) -> None:
        for shard in self._open.values():
            if shard.writer is not None:
                shard.writer.abort()
        self._open.clear()

    def _start(self, split: str) -> _OpenShard:
        part = self._parts.get(split, 0)
        self._parts[split] = part + 1
        url = f"{split}/{self.dataset}-{self.unit:05d}-{part:04d}.tar"
        writer = None if is_committed(self.output, url) else TarShardWriter(self.output / url)
        if writer is None:
            self.skipped.append(url)
        shard = self._open[split] = _OpenShard(url, writer)
        return shard

    def _finish(self, split: str) -> None:
        shard = self._open.pop(split)
        if shard.writer is None:
            return
        try:
            written = shard.writer.complete()
        except BaseException:
            shard.writer.abort()
            raise
        record = ShardRecord(
            url=shard.url,
            split=split,
            samples=written.samples,
            bytes=written.bytes,
            sha256=written.sha256,
            episodes=shard.episodes,
            source_files=self.source_files,
            dataset=self.dataset,
            unit=self.unit,
            code_version=code_version(),
        )
        try:
            with self.guard.held():
                shard.writer.publish()
                commit_shard(self.output, record)
        except BaseException:
            shard.writer.abort()  # removes the temporary; a shard already renamed stays, uncommitted, and is rewritten
            raise
        self.records.append(record)
