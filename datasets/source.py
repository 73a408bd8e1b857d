"""The interface every input format implements, and the unit of work it is split into."""

from __future__ import annotations

import abc
import dataclasses
import pathlib
from collections.abc import Iterator
from typing import Any, ClassVar

import pyarrow as pa

from vlaforge.datasets.configurable import Configurable
from vlaforge.datasets.drops import DropLedger
from vlaforge.datasets.schema import Episode


class SourceError(ValueError):
    """Input that cannot be read at all; the message names the file and says how to fix it."""


@dataclasses.dataclass(frozen=True)
class WorkUnit:
    """A coarse, idempotent piece of a dataset: a group of files, or a range of episodes.

    Units are planned deterministically from the dataset's own metadata, so a rerun plans the same units.
    """

    index: int
    files: tuple[str, ...]
    """Source files this unit reads, relative to the dataset root."""
    episodes: tuple[int, int] | None = None
    """[start, stop) episode indices, for formats that index episodes (LeRobot); None means every episode."""

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "files": list(self.files), "episodes": list(self.episodes or []) or None}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "WorkUnit":
        episodes = data.get("episodes")
        return cls(int(data["index"]), tuple(data["files"]), tuple(episodes) if episodes else None)


@dataclasses.dataclass(frozen=True, kw_only=True)
class SourceConfig(Configurable.Config):
    """Base of every source's nested `Config`; `build()` makes the source."""

    root: str
    """The dataset directory to read."""


class Source(Configurable, abc.ABC):
    """Reads one input format into canonical `Episode`s, one at a time (memory bounded by one episode)."""

    Config: ClassVar[type[SourceConfig]] = SourceConfig
    name: ClassVar[str]
    """The registry name, used in the CLI (`vlaforge ingest <name>`)."""

    def __init__(self, config: SourceConfig) -> None:
        self.config = config

    @property
    def root(self) -> pathlib.Path:
        """The dataset directory."""
        return pathlib.Path(self.config.root)

    @property
    @abc.abstractmethod
    def dataset_name(self) -> str:
        """The dataset's own name (for DROID, the TFDS builder name), used to name shards."""

    @abc.abstractmethod
    def plan(self) -> list[WorkUnit]:
        """Split the dataset into work units. Raises `SourceError` when the metadata is unusable."""

    @abc.abstractmethod
    def read(self, unit: WorkUnit, ledger: DropLedger) -> Iterator[Episode]:
        """Yield the unit's episodes in a deterministic order.

        A bad record is quarantined in `ledger` with a message naming the file, the record and the fix, and
        reading goes on with the next record (or the next file, when the rest of a file is unreadable).
        """

    table_schemas: ClassVar[dict[str, pa.Schema]] = {}
    """Side tables this source reports through `take_tables`, with their schemas: each is written even when a run
    gives it no row (the teleop sources' resampling report)."""

    def take_tables(self) -> dict[str, list[dict[str, Any]]]:
        """Side-table rows (by table name) of what was read since the last call. The default reports none."""
        return {}
