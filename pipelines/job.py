"""The one job runner: a source, a chain of stages and a dataset sink, run unit by unit, then finalized.

Every dataset vlaforge writes is a `Job`: robot ingest (a format's source, filters and the sample builder, into a
robot dataset), VL ingest (a VL-row source and the row-to-sample stage, into a VL dataset), relabel and annotate
(our own robot or VL shards, annotator stages, into a VL dataset). The model is datatrove's executor: one runner,
readers and writers at the two ends of one pipeline, a completion marker per finished unit.

- `plan_units`: the source splits the dataset into `WorkUnit`s, deterministically.
- `run_units`: a runner (`runners.py`: in-process or a Ray Data actor pool) gives each unit to a `UnitWorker`.
  The worker reads the unit's items (episodes, or VL rows) in batches of `items_per_batch`, passes each batch
  through the stages, and writes what the last stage streams out (`Stage.stream`) into the sink's unit writer.
  Side-table rows (`Source.take_tables`, `Stage.take_tables`: the consensus audit, the resampling report) are
  written per unit to `_tables/<name>/<unit>.parquet`. Then the unit's marker (`_units/<unit>.json`, its
  `UnitSummary`) is written: a rerun skips units with a marker, and redoes the others, whose committed shards it
  skips while writing the rest byte-identically (`shards/sink.py`).
- `finalize_job`: once every unit has its marker, the quarantine table, one `<name>.parquet` per side table, and
  what the sink writes for the whole dataset (the manifest, robot statistics, `summary.json`).
- `claimed`: around all three, the run owns its output (`output_claim.py`, `output_lock.py`): one run at a time,
  `options.json` refusing a rerun with other options, and every commit of a worker (a shard, a marker, a table part)
  checked against the run's token, so the workers of a killed run never commit into an output a new run owns.

What differs between kinds of dataset lives in the sink (`robot_dataset.py`, `vl_dataset.py`), not here.
"""

from __future__ import annotations

import abc
import collections
import contextlib
import dataclasses
import functools
import itertools
import json
import logging
import pathlib
from collections.abc import Callable, Iterator
from typing import Any, ClassVar, Protocol

import pyarrow as pa
import pyarrow.parquet as pq

from vlaforge.datasets.configurable import Configurable
from vlaforge.datasets.drops import Drop, DropLedger
from vlaforge.datasets.source import Source, SourceConfig, WorkUnit
from vlaforge.pipelines.atomic_files import atomic_write_bytes, atomic_write_table
from vlaforge.pipelines.output_claim import claim_output, job_options
from vlaforge.pipelines.output_lock import LOCK_DIR, CommitGuard
from vlaforge.pipelines.quarantine import write_quarantine
from vlaforge.pipelines.runners import LocalRunner, RayRunner
from vlaforge.pipelines.stage import Stage, StageConfig
from vlaforge.pipelines.stage_pools import StagePools

logger = logging.getLogger(__name__)

UNITS_DIR = "_units"
SUMMARY_NAME = "summary.json"
"""What every dataset a job writes says about itself (counts, kind, task), beside its manifest."""
TABLES_DIR = "_tables"
Runner = LocalRunner | RayRunner


@dataclasses.dataclass(frozen=True, kw_only=True)
class UnitWritten:
    """What a unit writer wrote, counted as it wrote."""

    samples_by_split: dict[str, int]
    episodes: int
    """Distinct episodes among the written samples."""
    shards_written: int
    shards_skipped: int
    """Shards an earlier run had already committed (counted, not written again)."""


class UnitWriter(Protocol):
    """Where one unit's samples go (a dataset sink opens one per unit)."""

    def add(self, sample: Any) -> None: ...

    def close(self) -> UnitWritten: ...

    def abort(self) -> None: ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class DatasetSinkConfig(Configurable.Config):
    """Base of each sink's nested `Config`; `build()` makes the sink."""


class DatasetSink(Configurable, abc.ABC):
    """One kind of dataset a job writes: a writer per unit, and what the whole dataset gets once every unit is done."""

    Config: ClassVar[type[DatasetSinkConfig]] = DatasetSinkConfig

    def __init__(self, config: DatasetSinkConfig) -> None:
        self.config = config

    @abc.abstractmethod
    def dataset_name(self, source: Source) -> str:
        """The dataset's name: shards are `<split>/<name>-<unit>-<part>.tar`."""

    @abc.abstractmethod
    def open_unit(self, output: pathlib.Path, dataset: str, unit: WorkUnit, guard: CommitGuard) -> UnitWriter:
        """A writer for one unit's samples, in the order they come; each of its commits happens in `guard.held()`."""

    @abc.abstractmethod
    def finalize(self, job: Job, summaries: list[UnitSummary], drops: list[Drop],
                 tables: dict[str, pa.Table], runner: Runner, units_resumed: int) -> dict[str, Any]:
        """Write what the dataset gets as a whole (manifest, statistics, summary.json); returns the summary."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Job:
    """Everything a run needs, as configs (so it can be shipped to Ray workers and rebuilt there)."""

    source: SourceConfig
    """Where the items come from, and how to read them."""
    stages: tuple[StageConfig, ...]
    """Stages in order: the first gets a list of the source's items; the last returns the sink's samples."""
    sink: DatasetSinkConfig
    """What kind of dataset the samples make (robot or VL), and when a shard is full."""
    output: str
    """The dataset directory (shards, manifest, tables, summary)."""
    items_per_batch: int = 1
    """Items handed to the stages at once. Model stages batch their requests across them (an HTTP VLM keeps that
    many episodes' requests in flight); memory holds that many items. Robot ingest reads one episode at a time."""
    owner: str | None = None
    """The token of the run that claimed `output` (set by `claimed`): workers commit only while the output's lock
    still holds it. None: an unclaimed output, whose commits are not checked (tests that drive a `UnitWorker`)."""

    def __post_init__(self) -> None:
        if not self.stages:
            raise ValueError("Job.stages is empty: the last stage must turn items into samples")
        if self.items_per_batch < 1:
            raise ValueError(f"Job.items_per_batch must be >= 1, got {self.items_per_batch}")


@dataclasses.dataclass
class UnitSummary:
    """What one unit produced; stored in its completion marker."""

    unit: int
    episodes_read: int = 0
    """Items the source yielded: episodes, or the rows of a VL dataset."""
    episodes_written: int = 0
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
    def from_dict(cls, data: dict[str, Any]) -> "UnitSummary":
        return cls(**data)

    def drop_records(self) -> list[Drop]:
        return [Drop.from_row(row) for row in self.drops]


def unit_marker(output: pathlib.Path, unit: int) -> pathlib.Path:
    return output / UNITS_DIR / f"{unit:05d}.json"


def table_part(output: pathlib.Path, name: str, unit: int) -> pathlib.Path:
    return output / TABLES_DIR / name / f"{unit:05d}.parquet"


def read_marker(output: pathlib.Path, unit: int) -> UnitSummary | None:
    """The unit's summary, or None when it has not finished, or finished under a marker format this version does not
    read (it is then run again: its committed shards are skipped, the rest rewritten byte-identically)."""
    marker = unit_marker(output, unit)
    if not marker.exists():
        return None
    try:
        return UnitSummary.from_dict(json.loads(marker.read_text()))
    except (TypeError, ValueError) as error:
        logger.warning("%s is not a marker this version reads (%s); unit %d runs again", marker, error, unit)
        return None


class UnitWorker:
    """Runs units of one job. Built once per worker process; `setup()` loads what the stages need (models).

    With `pools` (a cluster run, `stage_pools.py`), the pooled stages are not set up here: each unit calls their
    actor pools instead."""

    def __init__(self, job: Job, pools: StagePools | None = None) -> None:
        self.job = job
        self.pools = pools
        self.output = pathlib.Path(job.output)
        self.source = job.source.build()
        self.stages: list[Stage] = [config.build() for config in job.stages]
        self.sink = job.sink.build()
        self.dataset = self.sink.dataset_name(self.source)
        self.guard = CommitGuard(self.output, job.owner)

    def setup(self) -> None:
        for index, stage in enumerate(self.stages):
            if self.pools is None or index not in self.pools.pools:
                stage.setup()

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        """The runner's entry point: a `WorkUnit` as a dict in, its `UnitSummary` as a dict out."""
        return self.run_unit(WorkUnit.from_dict(item)).as_dict()

    def run_unit(self, unit: WorkUnit) -> UnitSummary:
        summary = read_marker(self.output, unit.index)
        if summary is not None:
            summary.resumed = True
            return summary
        summary = self._run(unit)
        with self.guard.held():
            atomic_write_bytes(unit_marker(self.output, unit.index),
                               json.dumps(summary.as_dict(), sort_keys=True).encode())
        return summary

    def _run(self, unit: WorkUnit) -> UnitSummary:
        if self.pools is not None:
            for index, remote in self.pools.remote_stages(self.job.stages, unit.index).items():
                self.stages[index] = remote
        self._remove_stale_temporaries(unit)
        self._take_tables()  # rows left by a unit that failed in this worker belong to no summary
        summary = UnitSummary(unit=unit.index)
        ledger = DropLedger()
        writer = self.sink.open_unit(self.output, self.dataset, unit, self.guard)
        try:
            for batch in _batches(self.source.read(unit, ledger), self.job.items_per_batch):
                summary.episodes_read += len(batch)
                self._write(batch, writer)
                del batch  # before the source reads the next batch: one batch of items in memory, not two
            written = writer.close()
        except BaseException:
            writer.abort()
            raise
        summary.table_rows = self._write_tables(unit)  # before the marker: a finished unit has all its parts
        summary.samples_by_split = dict(sorted(written.samples_by_split.items()))
        summary.samples_written = sum(written.samples_by_split.values())
        summary.episodes_written = written.episodes
        summary.shards_written, summary.shards_skipped = written.shards_written, written.shards_skipped
        summary.drops = [d.as_row() for d in ledger.take() + [d for s in self.stages for d in s.ledger.take()]]
        logger.info("unit %d: %d items in, %d samples out", unit.index, summary.episodes_read, summary.samples_written)
        return summary

    def _write(self, batch: list[Any], writer: UnitWriter) -> None:
        """The batch through the stages into `writer`. The last stage streams its outputs, so a long episode's
        samples (and the frames they carry) are never all in memory at once."""
        *leading, last = self.stages
        for stage in leading:
            batch = stage(batch)
            if not batch:
                return
        for sample in last.stream(batch):
            writer.add(sample)

    def _take_tables(self) -> dict[str, list[dict[str, Any]]]:
        rows: dict[str, list[dict[str, Any]]] = collections.defaultdict(list)
        for producer in (self.source, *self.stages):
            for name, new_rows in producer.take_tables().items():
                rows[name].extend(new_rows)
        return rows

    def _write_tables(self, unit: WorkUnit) -> dict[str, int]:
        """The unit's side-table rows as `_tables/<name>/<unit>.parquet` (tables without rows get no part)."""
        schemas = table_schemas(self.source, self.stages)
        counts = {}
        for name, rows in sorted(self._take_tables().items()):
            if rows:
                with self.guard.held():
                    atomic_write_table(table_part(self.output, name, unit.index), _table(rows, schemas.get(name)))
                counts[name] = len(rows)
        return counts

    def _remove_stale_temporaries(self, unit: WorkUnit) -> None:
        """Shards a killed run left half-written for this unit (units never run twice at the same time within one
        run; a worker of a run that lost the output removes nothing)."""
        with self.guard.held():
            for stale in self.output.glob(f"*/.{self.dataset}-{unit.index:05d}-*.tar.tmp-*"):
                logger.info("removing %s, left by an interrupted run", stale)
                stale.unlink(missing_ok=True)


def table_schemas(source: Source, stages: list[Stage]) -> dict[str, pa.Schema]:
    """The side tables declared with a schema by the source or a stage (written even without rows)."""
    schemas: dict[str, pa.Schema] = {}
    for producer in (source, *stages):
        schemas.update(getattr(producer, "table_schemas", {}))
    return schemas


def _table(rows: list[dict[str, Any]], schema: pa.Schema | None) -> pa.Table:
    """Rows as a table: with a declared schema, its columns only (extra keys ignored); else types inferred."""
    if schema is None:
        return pa.Table.from_pylist(rows)
    return pa.Table.from_pylist([{name: row.get(name) for name in schema.names} for row in rows], schema=schema)


def _batches(items: Iterator[Any], size: int) -> Iterator[list[Any]]:
    """`items` in lists of `size` (the last may be shorter), pulled lazily."""
    while batch := list(itertools.islice(items, size)):
        yield batch


def plan_units(job: Job) -> list[WorkUnit]:
    """The job's units, planned from the dataset's metadata (raises SourceError on unusable metadata)."""
    units = job.source.build().plan()
    logger.info("%d work units planned from %s", len(units), job.source.root)
    return units


def run_units(job: Job, units: list[WorkUnit], runner: Runner,
              on_done: Callable[[UnitSummary], None] | None = None) -> list[UnitSummary]:
    """Run units (skipping finished ones) and return their summaries, in unit order. On Ray, a job with pooled
    stages runs stage by stage: each pooled stage in its own actor pool, the units as tasks (`stage_pools.py`)."""
    pools = _start_pools(job, runner)
    summaries = []
    try:
        items = [u.as_dict() for u in units]
        for result in runner.map(functools.partial(UnitWorker, job, pools), items, tasks=pools is not None):
            summary = UnitSummary.from_dict(result)
            summaries.append(summary)
            if on_done is not None:
                on_done(summary)
    finally:
        if pools is not None:
            pools.shutdown()
    return sorted(summaries, key=lambda s: s.unit)


def _start_pools(job: Job, runner: Runner) -> StagePools | None:
    if not isinstance(runner, RayRunner) or not runner.stage_pools:
        return None
    if not any(config.build().pooled for config in job.stages):
        return None
    runner.connect()
    return StagePools.start(job.stages, runner.placements, runner.default_placement)


def finalize_job(job: Job, units: list[WorkUnit], runner: Runner, units_resumed: int = 0) -> dict[str, Any]:
    """Gather every unit's results: quarantine.parquet, one Parquet file per side table, and what the sink writes
    (manifest, statistics, summary.json). Returns the summary. `units_resumed` (units an earlier run had finished)
    is only reported."""
    output = pathlib.Path(job.output)
    summaries = [_finished(output, unit) for unit in units]
    _remove_stale_records(output)
    drops = [drop for summary in summaries for drop in summary.drop_records()]
    write_quarantine(output, drops)
    tables = _gather_tables(output, summaries, job)
    return job.sink.build().finalize(job, summaries, drops, tables, runner, units_resumed)


@contextlib.contextmanager
def claimed(job: Job, *, overwrite: bool = False, command: str = "",
            more_options: dict[str, Any] | None = None) -> Iterator[Job]:
    """The job as the owner of its output, for the length of the block: the output is locked (a second run is
    refused, naming this one), holds this job's options and `more_options` (a rerun with others is refused, listing
    them, unless `overwrite` clears the output first), and the job carries the token its workers check at each
    commit."""
    options = {**job_options(job.source, job.stages, job.sink), **(more_options or {})}
    lock = claim_output(pathlib.Path(job.output), options, overwrite=overwrite,
                        command=command or f"{type(job.source).__qualname__} {job.source.root} -> {job.output}")
    try:
        yield dataclasses.replace(job, owner=lock.owner.token)
    finally:
        lock.release()


def run_job(job: Job, runner: Runner, *, overwrite: bool = False) -> dict[str, Any]:
    """Claim the output, plan, run and finalize in one call, without Prefect (the flows run the same three steps as
    tasks, inside the same claim)."""
    with claimed(job, overwrite=overwrite) as owned:
        units = plan_units(owned)
        summaries = run_units(owned, units, runner)
        return finalize_job(owned, units, runner, units_resumed=sum(s.resumed for s in summaries))


def _finished(output: pathlib.Path, unit: WorkUnit) -> UnitSummary:
    summary = read_marker(output, unit.index)
    if summary is None:
        raise RuntimeError(f"unit {unit.index} ({', '.join(unit.files)}) has not finished; rerun the job")
    return summary


def _remove_stale_records(output: pathlib.Path) -> None:
    """Half-written files of killed runs (shards, commit records, markers, table parts); every unit is finished and
    the output is this run's when this runs."""
    for stale in output.rglob(".*.tmp-*"):
        if stale.is_file() and LOCK_DIR not in stale.relative_to(output).parts:
            stale.unlink(missing_ok=True)


def _gather_tables(output: pathlib.Path, summaries: list[UnitSummary], job: Job) -> dict[str, pa.Table]:
    """Each side table's unit parts, in unit order, as `<name>.parquet` beside the manifest."""
    schemas = table_schemas(job.source.build(), [config.build() for config in job.stages])
    tables = {}
    for name in sorted({*schemas, *(name for s in summaries for name in s.table_rows)}):
        parts = [pq.read_table(table_part(output, name, s.unit)) for s in summaries if s.table_rows.get(name)]
        if name in schemas:  # declared: one schema, written even when empty
            table = pa.concat_tables([schemas[name].empty_table(), *parts]).combine_chunks()
        else:
            table = pa.concat_tables(parts, promote_options="permissive")
        atomic_write_table(output / f"{name}.parquet", table)
        tables[name] = table
    return tables
