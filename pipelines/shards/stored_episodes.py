"""Robot episodes as our shards store them: each step's members as raw bytes, grouped by episode, never re-encoded.

The input of the tools that edit, view and export robot datasets (`vlaforge dataset filter|split|merge`, `vlaforge
view`, `vlaforge export lerobot`): a filtered or merged dataset holds exactly the samples of its inputs, byte for
byte (only `meta.json` changes where an edit changes what it says, the split), so an edit never re-encodes a frame.

`StoredEpisodeSource` reads one or more robot datasets (directories written by a vlaforge job, each with its
`manifest.parquet`). A unit is a run of consecutive shards of one input that never splits an episode (as
`RobotShardSource` plans them); units follow the inputs in the order given, so the output is deterministic.
"""

from __future__ import annotations

import dataclasses
import pathlib
import tarfile
from collections.abc import Iterator, Sequence
from typing import IO, Any

from vlaforge.datasets.drops import DropLedger, DropReason
from vlaforge.datasets.schema import MetaField, SampleKey
from vlaforge.datasets.source import Source, SourceConfig, WorkUnit
from vlaforge.pipelines.shards.manifest import ShardRecord, records_of_split
from vlaforge.pipelines.shards.members import UnsafeShardError, check_member, decode_member
from vlaforge.pipelines.shards.tar_reader import TarFormatError, TarReader

KEY = "__key__"
"""The sample's key (encoded) among a stored step's members."""


@dataclasses.dataclass
class StoredEpisode:
    """One episode's samples as stored: per step, {member name: bytes} (with `__key__`), in step order."""

    steps: list[dict[str, bytes]]
    input: str
    """The dataset directory it was read from."""
    shards: list[str]
    """Its shards' URLs, relative to `input`."""
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The first step's `meta.json`, decoded (what selections look at)."""

    def __post_init__(self) -> None:
        if not self.meta:
            self.meta = decode_member(SampleKey.META.value, self.steps[0][SampleKey.META.value])

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def episode_id(self) -> str:
        return str(self.meta[MetaField.EPISODE_ID.value])

    @property
    def embodiment(self) -> str:
        return str(self.meta[MetaField.EMBODIMENT.value])

    @property
    def split(self) -> str:
        return str(self.meta[MetaField.SPLIT.value])

    @property
    def instruction(self) -> str:
        return str(self.meta.get(MetaField.INSTRUCTION.value) or "")

    @property
    def success(self) -> bool | None:
        return (self.meta.get(MetaField.FLAGS.value) or {}).get("success")

    @property
    def cameras(self) -> list[str]:
        return sorted(name[: -len(".jpg")] for name in self.steps[0] if name.endswith(".jpg"))

    def step_meta(self, step: int) -> dict[str, Any]:
        return decode_member(SampleKey.META.value, self.steps[step][SampleKey.META.value])


def raw_samples(fileobj: IO[bytes], shard: str) -> Iterator[dict[str, bytes]]:
    """A shard's samples as {member name: bytes} plus `__key__` (the key, encoded), members checked, never
    decoded."""
    current: dict[str, bytes] = {}
    current_key = None
    for member in TarReader(fileobj, seekable=bool(getattr(fileobj, "seekable", lambda: False)())).members():
        check_member(shard, member)
        key, extension = member.name.split(".", 1)
        if current and key != current_key:
            yield current
            current = {}
        current_key = key
        current.setdefault(KEY, key.encode())
        current[extension] = member.read()
    if current:
        yield current


def episodes_of(samples: Iterator[tuple[str, dict[str, bytes]]], input_root: str) -> Iterator[StoredEpisode]:
    """(shard url, sample) pairs, in shard order, grouped into episodes (an episode's samples are consecutive)."""
    steps: list[dict[str, bytes]] = []
    urls: list[str] = []
    current = None
    for url, sample in samples:
        episode = decode_member(SampleKey.META.value, sample[SampleKey.META.value])[MetaField.EPISODE_ID.value]
        if steps and episode != current:
            yield StoredEpisode(steps, input_root, urls)
            steps, urls = [], []
        current = episode
        steps.append(sample)
        if url not in urls:
            urls.append(url)
    if steps:
        yield StoredEpisode(steps, input_root, urls)


class StoredEpisodeSource(Source):
    """Episodes of one or more robot datasets, as stored (see the module docstring)."""

    name = "stored-episodes"

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(SourceConfig):
        inputs: tuple[str, ...] = ()
        """Every input dataset directory, in order (`root` is the first); () means `root` alone."""
        dataset_name: str
        """The output's name: its shards are `<split>/<dataset_name>-<unit>-<part>.tar`."""
        shards_per_unit: int = 4
        """Shards per work unit (more when episodes straddle shards: a unit never splits an episode)."""

        def __post_init__(self) -> None:
            object.__setattr__(self, "inputs", tuple(self.inputs) or (self.root,))
            if self.shards_per_unit < 1:
                raise ValueError(f"StoredEpisodeSource.Config.shards_per_unit must be >= 1, got "
                                 f"{self.shards_per_unit}")

    config: Config

    @property
    def dataset_name(self) -> str:
        return self.config.dataset_name

    def plan(self) -> list[WorkUnit]:
        """Units over every input in order; a unit's files are `<input index>:<shard url>`."""
        groups: list[list[str]] = []
        for index, root in enumerate(self.config.inputs):
            for group in shard_groups(records_of_split(pathlib.Path(root), None), self.config.shards_per_unit):
                groups.append([f"{index}:{url}" for url in group])
        return [WorkUnit(index, tuple(files)) for index, files in enumerate(groups)]

    def read(self, unit: WorkUnit, ledger: DropLedger) -> Iterator[StoredEpisode]:
        index = int(unit.files[0].split(":", 1)[0])
        root = self.config.inputs[index]
        urls = [file.split(":", 1)[1] for file in unit.files]
        yield from episodes_of(self._samples(root, urls, ledger), root)

    def _samples(self, root: str, urls: list[str], ledger: DropLedger) -> Iterator[tuple[str, dict[str, bytes]]]:
        for url in urls:
            path = pathlib.Path(root) / url
            try:
                with open(path, "rb") as handle:
                    for sample in raw_samples(handle, url):
                        yield url, sample
            except (OSError, tarfile.TarError, TarFormatError, UnsafeShardError, ValueError) as error:
                ledger.quarantine(file=str(path), episode="", reason=DropReason.UNREADABLE_FILE,
                                  message=f"{path}: {error}; rerun the job that wrote it (its sha256 is in the "
                                          "manifest), or leave this dataset out")


def shard_groups(records: Sequence[ShardRecord], per_group: int) -> list[list[str]]:
    """Shard URLs in runs of about `per_group`, never splitting an episode between two runs."""
    groups: list[list[str]] = []
    previous_last: str | None = None
    for record in records:
        continues = groups and record.episodes and record.episodes[0] == previous_last
        if continues or (groups and len(groups[-1]) < per_group):
            groups[-1].append(record.url)
        else:
            groups.append([record.url])
        previous_last = record.episodes[-1] if record.episodes else None
    return groups
