"""VL datasets: the sink of VL ingest, relabel and annotate jobs, laid out exactly like robot datasets.

Deterministic tar shards named after the unit, a commit record per shard, `manifest.parquet`, and a `summary.json`
saying it is a VL dataset and of which task (one task per dataset, so the corpus can weight them). A rerun
regenerates a unit's shards, skips those already committed, and writes the rest byte-identically.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import pathlib
from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from vlaforge.datasets.drops import Drop, count_by_reason
from vlaforge.datasets.schema import VlTask
from vlaforge.datasets.source import Source, WorkUnit
from vlaforge.pipelines.atomic_files import atomic_write_bytes
from vlaforge.pipelines.job import SUMMARY_NAME, DatasetSink, DatasetSinkConfig, Job, Runner, UnitSummary, UnitWritten
from vlaforge.pipelines.output_lock import CommitGuard
from vlaforge.pipelines.shards.manifest import ShardRecord, load_commits, write_manifest
from vlaforge.pipelines.shards.sink import ShardSink
from vlaforge.pipelines.shards.writer import ShardConfig
from vlaforge.pipelines.vl_samples import VlSample

DEFAULT_SHARDS = ShardConfig(max_samples=2000, max_bytes=256 * 2**20)
GATES_TABLE = "gates"
"""The side table of quality-gate counts (answer validation, the VLM judge) a VL job's stages report; `finalize`
sums it into `summary.json` under `gates`."""
GATES_SCHEMA = pa.schema([("gate", pa.string()), ("checked", pa.int64()), ("dropped", pa.int64())])
EPISODES_PER_BATCH = 8
"""Items a VL job hands its stages at once (`Job.items_per_batch`): model stages batch their requests across them
(an HTTP VLM keeps that many episodes' requests in flight); memory holds that many episodes' frames."""


class VlUnitWriter:
    """One unit's VL samples into shards, counted by split."""

    def __init__(self, output: pathlib.Path, dataset: str, unit: int, source_files: list[str],
                 shards: ShardConfig, guard: CommitGuard | None = None) -> None:
        self.shards = ShardSink(output, dataset, unit, source_files, shards, guard)
        self.by_split: collections.Counter[str] = collections.Counter()
        self.episodes: set[str] = set()

    def add(self, sample: VlSample) -> None:
        self.shards.add(sample)
        self.by_split[sample.split.value] += 1
        self.episodes.add(sample.episode_id)

    def close(self) -> UnitWritten:
        self.shards.close()
        return UnitWritten(samples_by_split=dict(self.by_split), episodes=len(self.episodes),
                           shards_written=len(self.shards.records), shards_skipped=len(self.shards.skipped))

    def abort(self) -> None:
        self.shards.abort()


class VlDatasetSink(DatasetSink):
    """VL samples into one VL dataset of one task."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(DatasetSinkConfig):
        dataset: str
        """The VL dataset's name: shards are `<split>/<dataset>-<unit>-<part>.tar`."""
        task: VlTask
        """What the dataset teaches."""
        shards: ShardConfig = DEFAULT_SHARDS
        """When a shard is full."""

    config: Config

    def dataset_name(self, source: Source) -> str:
        return self.config.dataset

    def open_unit(self, output: pathlib.Path, dataset: str, unit: WorkUnit, guard: CommitGuard) -> VlUnitWriter:
        return VlUnitWriter(output, dataset, unit.index, list(unit.files), self.config.shards, guard)

    def finalize(self, job: Job, summaries: list[UnitSummary], drops: list[Drop],
                 tables: dict[str, pa.Table], runner: Runner, units_resumed: int) -> dict[str, Any]:
        extra = {
            "units": len(summaries),
            "episodes_read": sum(s.episodes_read for s in summaries),
            "drops_by_reason": count_by_reason(drops),
            "quarantined": sum(d.quarantined for d in drops),
            "tables": {name: sum(s.table_rows.get(name, 0) for s in summaries)
                       for name in sorted({name for s in summaries for name in s.table_rows})},
            "source": job.source.root,
            **({"gates": gate_rates(tables[GATES_TABLE].to_pylist())} if GATES_TABLE in tables else {}),
        }
        return write_vl_summary(pathlib.Path(job.output), dataset=self.config.dataset, task=self.config.task,
                                extra=extra)


def gate_rates(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each quality gate's texts checked, dropped and drop rate, summed over units (rows of the `gates` table that
    the generators and the judge report: gate, checked, dropped)."""
    totals: dict[str, list[int]] = {}
    for row in rows:
        entry = totals.setdefault(row["gate"], [0, 0])
        entry[0] += row["checked"]
        entry[1] += row["dropped"]
    return {gate: {"checked": checked, "dropped": dropped, "drop_rate": round(dropped / checked, 4) if checked else 0.0}
            for gate, (checked, dropped) in sorted(totals.items())}


def write_vl_unit(output: pathlib.Path, dataset: str, unit: int, samples: Iterable[VlSample], *,
                  source_files: list[str], shard_config: ShardConfig = DEFAULT_SHARDS) -> list[ShardRecord]:
    """Write one unit's samples (in the order given) without a job, as a job's unit writer would; returns the
    records of the shards this call committed. For sample data built in memory."""
    writer = VlUnitWriter(pathlib.Path(output), dataset, unit, source_files, shard_config)
    try:
        for sample in samples:
            writer.add(sample)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    return writer.shards.records


def write_vl_summary(output: pathlib.Path, *, dataset: str, task: VlTask, extra: dict | None = None) -> dict:
    """Gather the committed shards into `manifest.parquet` and write `summary.json`; returns the summary."""
    output = pathlib.Path(output)
    records = load_commits(output)
    write_manifest(output, records)
    samples_by_split: collections.Counter[str] = collections.Counter()
    for record in records:
        samples_by_split[record.split] += record.samples
    summary = {
        "kind": "vl",
        "dataset": dataset,
        "task": VlTask(task).value,
        "shards": len(records),
        "samples": sum(samples_by_split.values()),
        "samples_by_split": dict(sorted(samples_by_split.items())),
        "bytes": sum(r.bytes for r in records),
        **(extra or {}),
    }
    atomic_write_bytes(output / SUMMARY_NAME, json.dumps(summary, indent=1, sort_keys=True).encode())
    return summary
