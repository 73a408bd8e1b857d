"""An ingest run from start to end: plan units, run them, then write the manifest, tables and statistics.

The flow in `flows/ingest.py` calls these three steps as Prefect tasks; the CLI and tests can call them directly.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import logging
import pathlib
from collections.abc import Callable, Iterator
from typing import Any

import pyarrow as pa

from vlaforge.datasets.drops import count_by_reason
from vlaforge.datasets.source import WorkUnit
from vlaforge.datasets.teleop import ReportsResampling
from vlaforge.datasets.timeline import summarize
from vlaforge.pipelines import norm_stats
from vlaforge.pipelines.atomic_files import atomic_write_bytes, atomic_write_table
from vlaforge.pipelines.ingest_job import UNITS_DIR, IngestJob, UnitSummary, UnitWorker, unit_marker
from vlaforge.pipelines.quarantine import write_quarantine
from vlaforge.pipelines.runners import LocalRunner, RayRunner
from vlaforge.pipelines.shards.manifest import COMMITS_DIR, load_commits, write_manifest
from vlaforge.pipelines.split import Split
from vlaforge.pipelines.step_values import step_values_path, step_values_rows

logger = logging.getLogger(__name__)

SUMMARY_NAME = "summary.json"
RESAMPLING_NAME = "resampling.parquet"
RESAMPLING_SCHEMA = pa.schema(
    [("episode_id", pa.string()), ("file", pa.string()), ("outcome", pa.string()), ("segments", pa.int64()),
     ("role", pa.string()), ("stream", pa.string()), ("grid_hz", pa.float64()), ("ticks", pa.int64()),
     ("duration_s", pa.float64()), ("gap_threshold_s", pa.float64()), ("measurements", pa.int64()),
     ("measured_hz", pa.float64()), ("max_offset_ms", pa.float64()), ("mean_offset_ms", pa.float64()),
     ("duplicated", pa.int64()), ("skipped", pa.int64()), ("gaps", pa.int64()), ("max_gap_ms", pa.float64())]
)
"""One row per stream per resampled recording (teleop sources): see `datasets/timeline.py`."""


@dataclasses.dataclass
class IngestReport:
    """What a finished run produced, as shown in the CLI's summary table and saved as summary.json."""

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


def plan_units(job: IngestJob) -> list[WorkUnit]:
    """The job's units, planned from the dataset's metadata (raises SourceError on unusable metadata)."""
    units = job.source.build().plan()
    logger.info("%d work units planned from %s", len(units), job.source.root)
    return units


def run_units(
    job: IngestJob,
    units: list[WorkUnit],
    runner: LocalRunner | RayRunner,
    on_done: Callable[[UnitSummary], None] | None = None,
) -> list[UnitSummary]:
    """Run units (skipping finished ones) and return their summaries, in unit order."""
    summaries = []
    results: Iterator[dict[str, Any]] = runner.map(functools.partial(UnitWorker, job), [u.as_dict() for u in units])
    for result in results:
        summary = UnitSummary.from_dict(result)
        summaries.append(summary)
        if on_done is not None:
            on_done(summary)
    return sorted(summaries, key=lambda s: s.unit)


def finalize(
    job: IngestJob, units: list[WorkUnit], runner: LocalRunner | RayRunner, units_resumed: int = 0
) -> IngestReport:
    """Gather every unit's results into manifest.parquet, quarantine.parquet, stats.json and summary.json.

    `units_resumed` (how many units an earlier run had already finished) is only reported."""
    output = pathlib.Path(job.output)
    summaries = [_load_marker(output, unit) for unit in units]
    _remove_stale_records(output)
    records = load_commits(output)
    manifest = write_manifest(output, records)
    drops = [drop for summary in summaries for drop in summary.drop_records()]
    write_quarantine(output, drops)
    resampling = [row for summary in summaries for row in summary.resampling]
    if isinstance(job.source.build(), ReportsResampling):
        _write_table(output / RESAMPLING_NAME, resampling, RESAMPLING_SCHEMA)
    statistics = stats_of_items(_statistics_items(output, summaries, records), runner)
    norm_stats.write_stats(output, statistics, manifest, Split.TRAIN.value)
    report = _report(job, summaries, records, drops)
    report.units_resumed = units_resumed
    report.resampling = summarize(resampling)
    atomic_write_bytes(output / SUMMARY_NAME, json.dumps(report.as_dict(), indent=1, sort_keys=True).encode())
    return report


def run_ingest(job: IngestJob, runner: LocalRunner | RayRunner) -> IngestReport:
    """Plan, run and finalize in one call, without Prefect (the flow runs the same three steps as tasks)."""
    units = plan_units(job)
    summaries = run_units(job, units, runner)
    return finalize(job, units, runner, units_resumed=sum(s.resumed for s in summaries))


def _statistics_items(output: pathlib.Path, summaries: list[UnitSummary], records: list) -> list[dict[str, Any]]:
    """What the statistics are computed from: the training steps (every step when there are none), from each unit's
    step table, or from its shards when it has none (a unit finished by a version that did not write one)."""
    train = Split.TRAIN.value
    split = train if any(summary.steps_by_split.get(train) for summary in summaries) else None
    items: list[dict[str, Any]] = []
    for summary in summaries:
        table = step_values_path(output, summary.unit, UNITS_DIR)
        if step_values_rows(table) == summary.steps_written:
            items.append({"path": str(table), "steps": True, "splits": None if split is None else [split]})
        else:
            if table.exists():
                logger.warning("%s does not hold the %d steps unit %d wrote; reading its shards instead", table,
                               summary.steps_written, summary.unit)
            items += [{"path": str(output / r.url)} for r in records
                      if r.unit == summary.unit and split in (None, r.split)]
    return items


def compute_stats(shards: list[pathlib.Path], runner: LocalRunner | RayRunner, bins: int = 2048) -> dict[str, Any]:
    """Per-embodiment normalization statistics over `shards`, read back, in two parallel passes."""
    return stats_of_items([{"path": str(path)} for path in shards], runner, bins)


def stats_of_items(items: list[dict[str, Any]], runner: LocalRunner | RayRunner, bins: int = 2048) -> dict[str, Any]:
    """Per-embodiment normalization statistics over statistics items (see `norm_stats`), in two parallel passes."""
    moments = norm_stats.merge_moments(runner.map(norm_stats.MomentsWorker, items))
    ranges = {
        embodiment: {f: [entry[f].low.tolist(), entry[f].high.tolist()] for f in norm_stats.FIELDS}
        for embodiment, entry in moments.items()
    }
    make_worker = functools.partial(norm_stats.HistogramWorker, ranges, bins)
    counts = norm_stats.merge_histograms(runner.map(make_worker, items))
    return norm_stats.finalize(moments, counts)


def _remove_stale_records(output: pathlib.Path) -> None:
    """Half-written commit records or markers of a killed run; every unit is finished when this runs."""
    for directory in (COMMITS_DIR, UNITS_DIR):
        for stale in (output / directory).glob(".*.tmp-*"):
            stale.unlink(missing_ok=True)


def _load_marker(output: pathlib.Path, unit: WorkUnit) -> UnitSummary:
    marker = unit_marker(output, unit.index)
    if not marker.exists():
        raise RuntimeError(f"unit {unit.index} ({', '.join(unit.files)}) has not finished; rerun the ingest")
    return UnitSummary.from_dict(json.loads(marker.read_text()))


def _write_table(path: pathlib.Path, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
    """`rows` (extra keys ignored) as a Parquet file, written atomically."""
    columns = [{name: row.get(name) for name in schema.names} for row in rows]
    atomic_write_table(path, pa.Table.from_pylist(columns, schema=schema))


def _report(job: IngestJob, summaries: list[UnitSummary], records: list, drops: list) -> IngestReport:
    steps_by_split: collections.Counter[str] = collections.Counter()
    for summary in summaries:
        steps_by_split.update(summary.steps_by_split)
    return IngestReport(
        dataset=records[0].dataset if records else job.source.build().dataset_name,
        output=job.output,
        units=len(summaries),
        episodes_read=sum(s.episodes_read for s in summaries),
        episodes_written=sum(s.episodes_written for s in summaries),
        steps_written=sum(s.steps_written for s in summaries),
        steps_by_split=dict(sorted(steps_by_split.items())),
        shards=len(records),
        bytes=sum(r.bytes for r in records),
        drops_by_reason=count_by_reason(drops),
        quarantined=sum(d.quarantined for d in drops),
        units_resumed=0,
    )
