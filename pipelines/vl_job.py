"""A VL generation job: episodes from a source (usually our robot shards) through annotator stages into VL shards.

The twin of `ingest_job.py` for VL data, with the same guarantees: a unit's shards are named after the unit and
committed one by one, a finished unit leaves a marker, so a rerun (after a crash, or with more units) skips
finished units and committed shards and writes the rest byte-identically.

Stages may also produce table rows (an annotator's audit rows, for example) through an optional
`take_rows() -> {table name: [row, ...]}`. Rows are written per unit under `_tables/<name>/`, before the unit's
marker, and `finalize_vl_job` gathers each table into `<name>.parquet` beside the manifest.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import itertools
import json
import logging
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from vlaforge.datasets.drops import Drop, DropLedger, count_by_reason
from vlaforge.datasets.schema import VlTask
from vlaforge.datasets.source import SourceConfig, WorkUnit
from vlaforge.pipelines.atomic_files import atomic_write_bytes, atomic_write_table
from vlaforge.pipelines.ingest_job import unit_marker  # the same completion markers as ingest
from vlaforge.pipelines.quarantine import write_quarantine
from vlaforge.pipelines.shards.sink import ShardSink
from vlaforge.pipelines.shards.writer import ShardConfig
from vlaforge.pipelines.stage import StageConfig
from vlaforge.pipelines.vl_dataset import finalize_vl_dataset
from vlaforge.pipelines.vl_samples import VlSample

logger = logging.getLogger(__name__)

TABLES_DIR = "_tables"


@dataclasses.dataclass(frozen=True, kw_only=True)
class VlJob:
    """Everything a VL generation run needs, as configs (shipped to Ray workers and rebuilt there)."""

    source: SourceConfig
    """Where episodes come from (usually `RobotShardSource.Config(root=<robot dataset>)`)."""
    stages: tuple[StageConfig, ...]
    """Stages in order: the first gets `list[Episode]`, the last returns `list[VlSample]`."""
    shards: ShardConfig
    """When a VL shard is full."""
    output: str
    """The VL dataset directory (shards, manifest, tables)."""
    dataset: str
    """The VL dataset's name: shards are `<split>/<dataset>-<unit>-<part>.tar`."""
    task: VlTask
    """What the dataset teaches (one task per dataset, so the corpus can weight them)."""
    episodes_per_batch: int = 8
    """Episodes handed to the stages at once: model stages batch their requests across them (an HTTP VLM keeps
    that many episodes' requests in flight); memory holds that many episodes' frames."""

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("VlJob.stages is empty: the last stage must turn items into VlSamples")
        if self.episodes_per_batch < 1:
            raise ValueError(f"VlJob.episodes_per_batch must be >= 1, got {self.episodes_per_batch}")


@dataclasses.dataclass
class VlUnitSummary:
    """What one unit produced; stored in its completion marker."""

    unit: int
    episodes_read: int = 0
    samples_written: int = 0
    samples_by_split: dict[str, int] = dataclasses.field(default_factory=dict)
    shards_written: int = 0
    shards_skipped: int = 0
    table_rows: dict[str, int] = dataclasses.field(default_factory=dict)
    drops: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    resumed: bool = False

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "VlUnitSummary":
        return cls(**data)


def table_part(output: pathlib.Path, name: str, unit: int) -> pathlib.Path:
    return output / TABLES_DIR / name / f"{unit:05d}.parquet"


class VlUnitWorker:
    """Runs units of one VL job. Built once per worker process; `setup()` loads the models."""

    def __init__(self, job: VlJob) -> None:
        self.job = job
        self.output = pathlib.Path(job.output)
        self.source = job.source.build()
        self.stages = [config.build() for config in job.stages]

    def setup(self) -> None:
        for stage in self.stages:
            stage.setup()

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        return self.run_unit(WorkUnit.from_dict(item)).as_dict()

    def run_unit(self, unit: WorkUnit) -> VlUnitSummary:
        marker = unit_marker(self.output, unit.index)
        if marker.exists():
            summary = VlUnitSummary.from_dict(json.loads(marker.read_text()))
            summary.resumed = True
            return summary
        summary = self._run(unit)
        atomic_write_bytes(marker, json.dumps(summary.as_dict(), sort_keys=True).encode())
        return summary

    def _run(self, unit: WorkUnit) -> VlUnitSummary:
        for stale in self.output.glob(f"*/.{self.job.dataset}-{unit.index:05d}-*.tar.tmp-*"):
            stale.unlink(missing_ok=True)  # left half-written by a killed run of this unit
        summary = VlUnitSummary(unit=unit.index)
        ledger = DropLedger()
        sink = ShardSink(self.output, self.job.dataset, unit.index, list(unit.files), self.job.shards)
        by_split: collections.Counter[str] = collections.Counter()
        rows: dict[str, list[dict]] = collections.defaultdict(list)
        try:
            for batch in _batches(self.source.read(unit, ledger), self.job.episodes_per_batch):
                summary.episodes_read += len(batch)
                for sample in self._apply_stages(batch):
                    sink.add(sample)
                    by_split[sample.split.value] += 1
                self._collect_rows(rows)
            sink.close()
        except BaseException:
            sink.abort()
            raise
        for name, table_rows in rows.items():
            atomic_write_table(table_part(self.output, name, unit.index), pa.Table.from_pylist(table_rows))
        summary.samples_written = sum(by_split.values())
        summary.samples_by_split = dict(sorted(by_split.items()))
        summary.shards_written, summary.shards_skipped = len(sink.records), len(sink.skipped)
        summary.table_rows = {name: len(r) for name, r in sorted(rows.items())}
        summary.drops = [d.as_row() for d in ledger.take() + [d for s in self.stages for d in s.ledger.take()]]
        return summary

    def _apply_stages(self, batch: list[Any]) -> list[VlSample]:
        for stage in self.stages:
            batch = stage(batch)
            if not batch:
                break
        return batch

    def _collect_rows(self, rows: dict[str, list[dict]]) -> None:
        for stage in self.stages:
            take_rows = getattr(stage, "take_rows", None)
            for name, new_rows in (take_rows() if take_rows else {}).items():
                rows[name].extend(new_rows)


def _batches(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    """`items` in lists of `size` (the last may be shorter), pulled lazily."""
    while batch := list(itertools.islice(items, size)):
        yield batch


def plan_vl_units(job: VlJob) -> list[WorkUnit]:
    return job.source.build().plan()


def run_vl_units(job: VlJob, units: list[WorkUnit], runner: Any,
                 on_done: Callable[[VlUnitSummary], None] | None = None) -> list[VlUnitSummary]:
    """Run units (skipping finished ones) on a runner from `runners.py`; summaries in unit order."""
    summaries = []
    for result in runner.map(functools.partial(VlUnitWorker, job), [u.as_dict() for u in units]):
        summary = VlUnitSummary.from_dict(result)
        summaries.append(summary)
        if on_done is not None:
            on_done(summary)
    return sorted(summaries, key=lambda s: s.unit)


def finalize_vl_job(job: VlJob, units: list[WorkUnit]) -> dict[str, Any]:
    """manifest.parquet, quarantine.parquet, one Parquet file per table, summary.json; returns the summary."""
    output = pathlib.Path(job.output)
    summaries = []
    for unit in units:
        marker = unit_marker(output, unit.index)
        if not marker.exists():
            raise RuntimeError(f"unit {unit.index} ({', '.join(unit.files)}) has not finished; rerun the job")
        summaries.append(VlUnitSummary.from_dict(json.loads(marker.read_text())))
    drops = [Drop.from_row(row) for s in summaries for row in s.drops]
    write_quarantine(output, drops)
    tables = sorted({name for s in summaries for name in s.table_rows})
    for name in tables:
        parts = [table_part(output, name, s.unit) for s in summaries if s.table_rows.get(name)]
        table = pa.concat_tables([pq.read_table(p) for p in parts], promote_options="permissive")
        atomic_write_table(output / f"{name}.parquet", table)
    extra = {
        "units": len(summaries),
        "episodes_read": sum(s.episodes_read for s in summaries),
        "drops_by_reason": count_by_reason(drops),
        "quarantined": sum(d.quarantined for d in drops),
        "tables": {name: sum(s.table_rows.get(name, 0) for s in summaries) for name in tables},
        "source": job.source.root,
    }
    return finalize_vl_dataset(output, dataset=job.dataset, task=job.task, extra=extra)


def run_vl_job(job: VlJob, runner: Any) -> dict[str, Any]:
    """Plan, run and finalize in one call, without Prefect (the flows run the same three steps as tasks)."""
    units = plan_vl_units(job)
    run_vl_units(job, units, runner)
    return finalize_vl_job(job, units)
