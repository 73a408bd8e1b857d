"""The one interface shared by pipeline and annotator steps.

A stage is built from a frozen `Config`. `__init__` is cheap; `setup()` does the heavy work (loading a model)
once per worker; `__call__` maps a batch (a list of items) to a batch, and may drop items, recording each under a
named reason in `self.ledger`. The same list of configs runs in-process or on Ray Data (see `runners.py`), inside a
`Job` (`job.py`), which also uses two optional hooks: `stream` (a last stage hands its outputs over one at a time)
and `take_tables` (side-table rows, such as the consensus stage's audit rows).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Iterator
from typing import Any, ClassVar

from vlaforge.datasets.configurable import Configurable
from vlaforge.datasets.drops import DropLedger


@dataclasses.dataclass(frozen=True, kw_only=True)
class StageConfig(Configurable.Config):
    """Base of every stage's nested `Config`. `build()` makes the stage, so the config type is the plugin handle."""


class Stage(Configurable, abc.ABC):
    """Maps a batch to a batch. Subclasses nest a `Config(StageConfig)` dataclass (see `datasets/configurable.py`)."""

    Config: ClassVar[type[StageConfig]] = StageConfig
    pooled: ClassVar[bool] = False
    """Whether the stage runs in its own actor pool on a Ray cluster (`stage_pools.py`): it loads a model, or holds
    a quota all units share. Its pool is then sized apart from the CPU stages (GPUs per actor, actors)."""

    def __init__(self, config: StageConfig) -> None:
        self.config = config
        self.ledger = DropLedger()

    def setup(self) -> None:
        """Heavy, once-per-worker initialisation. The default has nothing to do."""

    @abc.abstractmethod
    def __call__(self, batch: list[Any]) -> list[Any]:
        """Map a batch to a batch, recording every dropped item in `self.ledger`."""

    def stream(self, batch: list[Any]) -> Iterator[Any]:
        """What `__call__(batch)` returns, one item at a time. A last stage whose outputs are large (a robot sample
        per step, with its frames) overrides it to build each output only when the job asks for the next one."""
        yield from self(batch)

    def take_tables(self) -> dict[str, list[dict[str, Any]]]:
        """Side-table rows recorded since the last call, by table name (the job writes them per unit and gathers
        each table into `<name>.parquet` beside the manifest). The default records none."""
        return {}

    @property
    def pool_name(self) -> str:
        """The name its pool's placement is given under (`--stage-pool NAME=...`)."""
        return type(self).__name__
