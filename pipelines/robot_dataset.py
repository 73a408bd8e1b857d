"""Robot datasets: the sink of every ingest job, and what it writes beside the shards.

Per unit, `RobotUnitWriter` writes the samples into shards (`shards/sink.py`) and keeps the state and action of every
step it wrote (`step_values.py`, `_units/<unit>.steps.parquet`). Once every unit is done, `RobotDatasetSink.finalize`
writes `manifest.parquet`, the per-embodiment normalization statistics (`stats.json`, from those step tables) and
`summary.json` (an `IngestReport`).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import logging
import pathlib
from typing import Any

import pyarrow as pa

from vlaforge.datasets.drops import Drop, count_by_reason
from vlaforge.datasets.source import Source, WorkUnit
from vlaforge.datasets.timeline import RESAMPLING_TABLE, summarize
from vlaforge.pipelines import norm_stats
from vlaforge.pipelines.atomic_files import atomic_write_bytes
from vlaforge.pipelines.job import (
    SUMMARY_NAME,
    UNITS_DIR,
    DatasetSink,
    DatasetSinkConfig,
    Job,
    Runner,
    UnitSummary,
    UnitWritten,
)
from vlaforge.pipelines.output_lock import CommitGuard
from vlaforge.pipelines.samples import RobotSample
from vlaforge.pipelines.shards.manifest import ShardRecord, load_commits, write_manifest
from vlaforge.pipelines.shards.sink import ShardSink
from vlaforge.pipelines.shards.writer import ShardConfig
from vlaforge.pipelines.split import Split
from vlaforge.pipelines.step_values import StepValues, step_values_path, step_values_rows

logger = logging.getLogger(__name__)

@dataclasses.dataclass
class IngestReport:
    """What a finished ingest produced, as shown in the CLI's summary table and saved as summary.json."""

    dataset: str
    output: str
    units: int
    episodes_read: int
    episodes_written: int
    steps_written: int
    steps_by_split: dict[str, int]
    shards: int
    bytes: int
    drops_by_reason: dict[str, int]
    quarantined: int
    units_resumed: int
    resampling: dict[str, Any] = dataclasses.field(default_factory=dict)
    """The timeline summary (`timeline.summarize`) for sources that resample; empty for the others."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class RobotUnitWriter:
    """One unit's robot samples into shards, and each written episode's values into the unit's step table."""

    def __init__(self, output: pathlib.Path, dataset: str, unit: WorkUnit, shards: ShardConfig,
                 guard: CommitGuard) -> None:
        self.output, self.unit, self.guard = output, unit.index, guard
        self.shards = ShardSink(output, dataset, unit.index, list(unit.files), shards, guard)
        self.values = StepValues()
        self.complete = True
        """Whether every sample carried its episode (else the step table would miss steps: none is written)."""
        self.by_split: collections.Counter[str] = collections.Counter()
        self.episodes: set[str] = set()
        self._episode = ""

    def add(self, sample: RobotSample) -> None:
        self.shards.add(sample)
        self.by_split[sample.split.value] += 1
        if sample.episode_id != self._episode:  # an episode's samples come together, in step order
            self._episode = sample.episode_id
            self.episodes.add(sample.episode_id)
            if sample.episode is None:
                self.complete = False
            else:
                self.values.add(sample.episode, sample.split.value)

    def close(self) -> UnitWritten:
        self.shards.close()
        if self.complete:  # before the unit's marker: a unit with a marker always has its table
            with self.guard.held():
                self.values.write(step_values_path(self.output, self.unit, UNITS_DIR))
        return UnitWritten(samples_by_split=dict(self.by_split), episodes=len(self.episodes),
                           shards_written=len(self.shards.records), shards_skipped=len(self.shards.skipped))

    def abort(self) -> None:
        self.shards.abort()


class RobotDatasetSink(DatasetSink):
    """Robot samples (one per step) into a robot dataset named after the source's dataset."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(DatasetSinkConfig):
        shards: ShardConfig
        """When a shard is full."""

    config: Config

    def dataset_name(self, source: Source) -> str:
        return source.dataset_name

    def open_unit(self, output: pathlib.Path, dataset: str, unit: WorkUnit, guard: CommitGuard) -> RobotUnitWriter:
        return RobotUnitWriter(output, dataset, unit, self.config.shards, guard)

    def finalize(self, job: Job, summaries: list[UnitSummary], drops: list[Drop],
                 tables: dict[str, pa.Table], runner: Runner, units_resumed: int) -> dict[str, Any]:
        output = pathlib.Path(job.output)
        records = load_commits(output)
        manifest = write_manifest(output, records)
        statistics = norm_stats.stats_of_items(_statistics_items(output, summaries, records), runner)
        norm_stats.write_stats(output, statistics, manifest, Split.TRAIN.value)
        resampling = tables[RESAMPLING_TABLE].to_pylist() if RESAMPLING_TABLE in tables else []
        report = _report(job, summaries, records, drops, units_resumed, summarize(resampling))
        atomic_write_bytes(output / SUMMARY_NAME, json.dumps(report.as_dict(), indent=1, sort_keys=True).encode())
        return report.as_dict()


def _statistics_items(output: pathlib.Path, summaries: list[UnitSummary],
                      records: list[ShardRecord]) -> list[dict[str, Any]]:
    """What the statistics are computed from: the training steps (every step when there are none), from each unit's
    step table, or from its shards when it has none (a unit finished by a version that did not write one)."""
    train = Split.TRAIN.value
    split = train if any(summary.samples_by_split.get(train) for summary in summaries) else None
    items: list[dict[str, Any]] = []
    for summary in summaries:
        table = step_values_path(output, summary.unit, UNITS_DIR)
        if step_values_rows(table) == summary.samples_written:
            items.append({"path": str(table), "steps": True, "splits": None if split is None else [split]})
        else:
            if table.exists():
                logger.warning("%s does not hold the %d steps unit %d wrote; reading its shards instead", table,
                               summary.samples_written, summary.unit)
            items += [{"path": str(output / r.url)} for r in records
                      if r.unit == summary.unit and split in (None, r.split)]
    return items


def _report(job: Job, summaries: list[UnitSummary], records: list[ShardRecord], drops: list[Drop],
            units_resumed: int, resampling: dict[str, Any]) -> IngestReport:
    steps_by_split: collections.Counter[str] = collections.Counter()
    for summary in summaries:
        steps_by_split.update(summary.samples_by_split)
    return IngestReport(
        dataset=records[0].dataset if records else job.source.build().dataset_name,
        output=job.output,
        units=len(summaries),
        episodes_read=sum(s.episodes_read for s in summaries),
        episodes_written=sum(s.episodes_written for s in summaries),
        steps_written=sum(s.samples_written for s in summaries),
        steps_by_split=dict(sorted(steps_by_split.items())),
        shards=len(records),
        bytes=sum(r.bytes for r in records),
        drops_by_reason=count_by_reason(drops),
        quarantined=sum(d.quarantined for d in drops),
        units_resumed=units_resumed,
        resampling=resampling,
    )
