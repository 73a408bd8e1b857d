"""One ingest job: a source, a chain of stages and a shard layout, run unit by unit.

`UnitWorker` processes one `WorkUnit` end to end in one process: read episodes, pass each through the stages,
write the samples into shards. A finished unit leaves a marker holding its summary, so a rerun skips it; an
unfinished one is redone, and its already-committed shards are skipped (see `ShardSink`).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import pathlib
from collections.abc import Iterator
from typing import Any, Protocol, runtime_checkable

from vlaforge.datasets.drops import Drop, DropLedger
from vlaforge.datasets.schema import Episode
from vlaforge.datasets.source import SourceConfig, WorkUnit
from vlaforge.datasets.teleop import ReportsResampling
from vlaforge.pipelines.atomic_files import atomic_write_bytes
from vlaforge.pipelines.samples import RobotSample
from vlaforge.pipelines.shards.sink import ShardSink
from vlaforge.pipelines.shards.writer import ShardConfig
from vlaforge.pipelines.split import Split
from vlaforge.pipelines.stage import StageConfig
from vlaforge.pipelines.step_values import StepValues, step_values_path

logger = logging.getLogger(__name__)

UNITS_DIR = "_units"


@dataclasses.dataclass(frozen=True, kw_only=True)
class IngestJob:
    """Everything an ingest run needs, as configs (so it can be shipped to Ray workers and rebuilt there)."""

    source: SourceConfig
    """Which format to read, and from where."""
    stages: tuple[StageConfig, ...]
    """Episode stages in order; the last one turns episodes into `RobotSample`s."""
    shards: ShardConfig
    """When a shard is full."""
    output: str
    """The output directory (shards, manifest, statistics, tables)."""


@dataclasses.dataclass
class UnitSummary:
    """What one unit produced; stored in its completion marker."""

    unit: int
    episodes_read: int = 0
    episodes_written: int = 0
    steps_written: int = 0
    steps_by_split: dict[str, int] = dataclasses.field(default_factory=dict)
    shards_written: int = 0
    shards_skipped: int = 0
    drops: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    resumed: bool = False
    resampling: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    """Timeline report rows (one per stream per recording) from sources that resample; empty for the others."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "UnitSummary":
        return cls(**data)

    def drop_records(self) -> list[Drop]:
        return [Drop.from_row(row) for row in self.drops]


def unit_marker(output: pathlib.Path, unit: int) -> pathlib.Path:
    return output / UNITS_DIR / f"{unit:05d}.json"


@runtime_checkable
class StreamsSamples(Protocol):
    """A last stage that can hand over an episode's samples one at a time instead of as one list, and says which
    split they go to (so the unit can keep their values for the statistics, see `StepValues`)."""

    def iter_samples(self, episode: Episode) -> Iterator[RobotSample]: ...

    def split_of(self, episode: Episode) -> Split: ...


class UnitWorker:
    """Runs units of one job. Built once per worker process; `setup()` loads what the stages need."""

    def __init__(self, job: IngestJob) -> None:
        self.job = job
        self.output = pathlib.Path(job.output)
        self.source = job.source.build()
        self.stages = [config.build() for config in job.stages]
        self.dataset = self.source.dataset_name

    def setup(self) -> None:
        for stage in self.stages:
            stage.setup()

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        """The runner's entry point: a `WorkUnit` as a dict in, its `UnitSummary` as a dict out."""
        return self.run_unit(WorkUnit.from_dict(item)).as_dict()

    def run_unit(self, unit: WorkUnit) -> UnitSummary:
        marker = unit_marker(self.output, unit.index)
        if marker.exists():
            summary = UnitSummary.from_dict(json.loads(marker.read_text()))
            summary.resumed = True
            return summary
        summary = self._run(unit)
        atomic_write_bytes(marker, json.dumps(summary.as_dict(), sort_keys=True).encode())
        return summary

    def _remove_stale_temporaries(self, unit: WorkUnit) -> None:
        """Shards a killed run left half-written for this unit (units never run twice at the same time)."""
        for stale in self.output.glob(f"*/.{self.dataset}-{unit.index:05d}-*.tar.tmp-*"):
            logger.info("removing %s, left by an interrupted run", stale)
            stale.unlink(missing_ok=True)

    def _run(self, unit: WorkUnit) -> UnitSummary:
        self._remove_stale_temporaries(unit)
        if isinstance(self.source, ReportsResampling):
            self.source.take_resampling_rows()  # rows of a unit that failed in this worker belong to no summary
        summary = UnitSummary(unit=unit.index)
        ledger = DropLedger()
        sink = ShardSink(self.output, self.dataset, unit.index, list(unit.files), self.job.shards)
        steps_by_split: collections.Counter[str] = collections.Counter()
        values = StepValues() if isinstance(self.stages[-1], StreamsSamples) else None
        try:
            for episode in self.source.read(unit, ledger):
                summary.episodes_read += 1
                written: set[str] = set()
                for sample in self._samples(episode, values):
                    sink.add(sample)
                    steps_by_split[sample.split.value] += 1
                    written.add(sample.episode_id)
                summary.episodes_written += len(written)
                del episode  # before the source reads the next one: one episode in memory, not two
            sink.close()
        except BaseException:
            sink.abort()
            raise
        if values is not None:  # before the marker: a unit with a marker always has its table
            values.write(step_values_path(self.output, unit.index, UNITS_DIR))
        summary.steps_written = sum(steps_by_split.values())
        summary.steps_by_split = dict(sorted(steps_by_split.items()))
        summary.shards_written, summary.shards_skipped = len(sink.records), len(sink.skipped)
        drops = ledger.take() + [d for stage in self.stages for d in stage.ledger.take()]
        summary.drops = [d.as_row() for d in drops]
        if isinstance(self.source, ReportsResampling):
            summary.resampling = self.source.take_resampling_rows()
        logger.info("unit %d: %d episodes in, %d steps out", unit.index, summary.episodes_read, summary.steps_written)
        return summary

    def _samples(self, episode: Episode, values: StepValues | None) -> Iterator[RobotSample]:
        """The episode through the stages. The last one streams its samples one step at a time when it can
        (`RobotSampleBuilder.iter_samples`), so a long episode's samples, and the frames they carry, are never all
        in memory at once; the values of the steps it streamed are added to `values`."""
        *filters, last = self.stages
        batch: list[Any] = [episode]
        for stage in filters:
            batch = stage(batch)
            if not batch:
                return
        if isinstance(last, StreamsSamples):
            for item in batch:
                yield from last.iter_samples(item)
                if values is not None:
                    values.add(item, last.split_of(item).value)
        else:
            yield from last(batch)
