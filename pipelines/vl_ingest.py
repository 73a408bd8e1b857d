"""Ingest a general VL dataset into VL shards: an index pass, a selection, then a `Job`.

Deduplication and the per-dataset limit need the whole dataset in view, while units run in parallel. So the ingest
runs in three steps, each resumable:
1. index: per unit (in parallel), every row's status, its images' hash, its sample hash (images and conversation)
   and its first image's perceptual hash -> `_index/units-v2/<unit>.parquet`;
2. select: in dataset order, the first row of each sample hash is kept and later ones are duplicates (rows sharing
   an image but asking something else are all kept: LLaVA's mix shows one COCO image in an instruct row, a VQAv2
   row and a RefCOCO row); near-duplicate images (`pipelines/near_duplicates.py`) are reported, and dropped only
   when `near_duplicates` is "drop"; kept rows past `limit` are left out -> `_index/selection.parquet` (with the
   settings it was made with);
3. the `Job` over the same units reads only the kept rows (quarantining bad ones) and writes shards, manifest,
   quarantine table and summary.
A rerun skips indexed units, reuses the selection (refusing one made with other settings) and skips finished units.
All three run inside one claim of the output (`claimed_vl_ingest`: the lock, and the options record, which also
holds the limit and deduplication), like any job's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import pathlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vlaforge.datasets import registry
from vlaforge.datasets.configurable import config_from_dict
from vlaforge.datasets.schema import VlTask
from vlaforge.datasets.source import WorkUnit
from vlaforge.datasets.vl_parquet import VlParquetSource
from vlaforge.datasets.vl_row_source import DUPLICATE, KEEP, NEAR_DUPLICATE, OVER_LIMIT, REJECTED, VlRowSourceConfig
from vlaforge.datasets.vl_rows import RowReject, where
from vlaforge.pipelines.atomic_files import atomic_write_bytes, atomic_write_table
from vlaforge.pipelines.job import SUMMARY_NAME, Job, claimed, finalize_job, run_units
from vlaforge.pipelines.near_duplicates import NO_MATCH, near_duplicate_of, perceptual_hash
from vlaforge.pipelines.output_lock import CommitGuard
from vlaforge.pipelines.shards.writer import ShardConfig
from vlaforge.pipelines.vl_dataset import DEFAULT_SHARDS, EPISODES_PER_BATCH, VlDatasetSink
from vlaforge.pipelines.vl_row_samples import VlRowSamples

INDEX_DIR = "_index"
INDEX_VERSION = 2
"""Bumped when the index gains columns: a rerun re-indexes instead of reading an older index."""
SELECTION_NAME = "selection.parquet"
NEAR_DUPLICATE_POLICIES = ("report", "drop", "off")
_INDEX_COLUMNS = pa.schema([("file", pa.string()), ("row", pa.int64()), ("status", pa.string()),
                            ("image_hash", pa.string()), ("sample_hash", pa.string()), ("phash", pa.string()),
                            ("where", pa.string())])


@dataclasses.dataclass(frozen=True, kw_only=True)
class VlIngest:
    """One general VL dataset into one VL dataset of shards: the index and selection passes, then `job()`."""

    source: VlRowSourceConfig
    """Where the rows are (and how to read them): a VL-row source's config (`datasets/vl_row_source.py`)."""
    samples: VlRowSamples.Config
    """How rows become samples (dataset name, task, JPEG settings)."""
    output: str
    """The VL dataset directory."""
    limit: int | None = None
    """At most this many rows (after deduplication, in dataset order); None for all."""
    dedup: bool = True
    """Keep only the first row of each sample (the same images and the same conversation)."""
    near_duplicates: str = "report"
    """Near-duplicate images of earlier rows: "report" (counted in the summary, kept), "drop", or "off" (not
    looked for: no image is decoded for it)."""
    near_duplicate_bits: int = 4
    """Perceptual hashes at most this many bits apart (of 64) are near-duplicates."""
    shards: ShardConfig = DEFAULT_SHARDS
    """When a shard is full."""
    owner: str | None = None
    """The token of the run that claimed `output` (`claimed_vl_ingest`); see `Job.owner`."""

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"VlIngest.limit must be >= 1 or None, got {self.limit}")
        if self.near_duplicates not in NEAR_DUPLICATE_POLICIES:
            raise ValueError(f"VlIngest.near_duplicates must be one of {NEAR_DUPLICATE_POLICIES}, got "
                             f"{self.near_duplicates!r}")
        if not 0 <= self.near_duplicate_bits <= 16:
            raise ValueError(f"VlIngest.near_duplicate_bits must be in 0..16, got {self.near_duplicate_bits}")

    @property
    def selection_path(self) -> pathlib.Path:
        return pathlib.Path(self.output) / INDEX_DIR / SELECTION_NAME

    def job(self) -> Job:
        """The generation job of step 3: the same source, reading only the selected rows."""
        source = dataclasses.replace(self.source, selection=str(self.selection_path))
        sink = VlDatasetSink.Config(dataset=self.samples.dataset, task=self.samples.task, shards=self.shards)
        return Job(source=source, stages=(self.samples,), sink=sink, output=self.output,
                   items_per_batch=EPISODES_PER_BATCH, owner=self.owner)


@contextlib.contextmanager
def claimed_vl_ingest(job: VlIngest, *, overwrite: bool = False, command: str = "") -> Iterator[VlIngest]:
    """The ingest as the owner of its output for the length of the block (`pipelines/job.py`: `claimed`), its
    options record holding the limit and deduplication beside the job's options."""
    more = {"vl_ingest.limit": job.limit, "vl_ingest.dedup": job.dedup}
    with claimed(job.job(), overwrite=overwrite, command=command, more_options=more) as owned:
        yield dataclasses.replace(job, owner=owned.owner)


def unit_index_path(output: str | pathlib.Path, unit: int) -> pathlib.Path:
    return pathlib.Path(output) / INDEX_DIR / f"units-v{INDEX_VERSION}" / f"{unit:05d}.parquet"


class IndexWorker:
    """Step 1 for one unit: each row's status (kept or rejected) and image hash, written once."""

    def __init__(self, job: VlIngest) -> None:
        self.job = job
        self.source = dataclasses.replace(job.source, selection=None).build()
        self.guard = CommitGuard(pathlib.Path(job.output), job.owner)

    def setup(self) -> None:
        """Nothing heavy: rows and images are read per unit."""

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        unit = WorkUnit.from_dict(item)
        path = unit_index_path(self.job.output, unit.index)
        if not path.exists():
            rows = [self._indexed(unit.files[0], row, record) for row, record in self.source.records(unit)]
            with self.guard.held():
                atomic_write_table(path, pa.Table.from_pylist(rows, schema=_INDEX_COLUMNS))
        return {"unit": unit.index}

    def _indexed(self, file: str, row: int, record: Any) -> dict[str, Any]:
        try:
            parsed = self.source.row(file, row, record)
        except RowReject:
            return {"file": file, "row": row, "status": REJECTED, "image_hash": "", "sample_hash": "", "phash": "",
                    "where": f"{file} row {row}"}
        looks = self.job.near_duplicates != "off" and parsed.images
        return {"file": file, "row": row, "status": KEEP, "image_hash": parsed.image_hash,
                "sample_hash": parsed.sample_hash, "phash": perceptual_hash(parsed.images[0]) if looks else "",
                "where": where(file, row, parsed.row_id)}


def index_units(job: VlIngest, units: list[WorkUnit], runner: Any) -> None:
    """Step 1 over all units (finished ones are skipped)."""
    for _ in runner.map(functools.partial(IndexWorker, job), [u.as_dict() for u in units]):
        pass


def select_rows(job: VlIngest, units: list[WorkUnit]) -> dict[str, int]:
    """Step 2: write (or check) the selection; returns row counts by status."""
    settings = {"limit": job.limit, "dedup": job.dedup, "units": len(units), "index": INDEX_VERSION,
                "near_duplicates": job.near_duplicates, "near_duplicate_bits": job.near_duplicate_bits}
    settings_path = job.selection_path.with_suffix(".json")
    if job.selection_path.exists() and settings_path.exists():
        made_with = json.loads(settings_path.read_text())
        if made_with != settings:
            raise ValueError(f"{job.output} was selected with {made_with}, not {settings}; write to a new output "
                             "directory (or delete it) to change the limit or deduplication")
        return _counts(pq.read_table(job.selection_path))
    index = pa.concat_tables([pq.read_table(unit_index_path(job.output, u.index)) for u in units])
    selection = _selected(index, job)
    atomic_write_table(job.selection_path, selection)
    atomic_write_bytes(settings_path, json.dumps(settings).encode())
    return _counts(selection)


def _selected(index: pa.Table, job: VlIngest) -> pa.Table:
    """Columns file, row, status, duplicate_of, near_duplicate_of, in dataset order; vectorised (the near-duplicate
    search by bands), so tens of millions of rows fit."""
    status = np.asarray(index.column("status").to_numpy(zero_copy_only=False), dtype=object)
    places = index.column("where").to_numpy(zero_copy_only=False)
    duplicate_of = np.full(index.num_rows, "", dtype=object)
    if job.dedup:
        hashes = index.column("sample_hash").to_numpy(zero_copy_only=False)
        _mark_repeats(status, duplicate_of, hashes, places)
    near_of = np.full(index.num_rows, "", dtype=object)
    if job.near_duplicates != "off":
        kept = np.flatnonzero(status == KEEP)
        found = near_duplicate_of(index.column("phash").take(kept).to_pylist(),
                                  index.column("image_hash").take(kept).to_pylist(), job.near_duplicate_bits)
        near = kept[found != NO_MATCH]
        near_of[near] = places[kept[found[found != NO_MATCH]]]
        if job.near_duplicates == "drop":
            status[near] = NEAR_DUPLICATE
            duplicate_of[near] = near_of[near]
    if job.limit is not None:
        kept_mask = status == KEEP
        status[kept_mask & (np.cumsum(kept_mask) > job.limit)] = OVER_LIMIT
    return pa.table({"file": index.column("file"), "row": index.column("row"), "status": pa.array(status, pa.string()),
                     "duplicate_of": pa.array(duplicate_of, pa.string()),
                     "near_duplicate_of": pa.array(near_of, pa.string())})


def _mark_repeats(status: np.ndarray, duplicate_of: np.ndarray, hashes: np.ndarray, places: np.ndarray) -> None:
    """Rows repeating an earlier kept row's hash become DUPLICATE, naming the first row."""
    order = np.arange(len(status))
    candidates = (status == KEEP) & (hashes != "")
    _, first = np.unique(hashes[candidates], return_index=True)  # first position of each hash among candidates
    first_rows = order[candidates][first]
    first_of_hash = dict(zip(hashes[first_rows], first_rows))
    repeated = candidates.copy()
    repeated[first_rows] = False
    duplicate_of[repeated] = [places[first_of_hash[h]] for h in hashes[repeated]]
    status[repeated] = DUPLICATE


def _counts(selection: pa.Table) -> dict[str, int]:
    statuses = selection.column("status").to_pylist()
    counts = {status: statuses.count(status) for status in (KEEP, DUPLICATE, NEAR_DUPLICATE, OVER_LIMIT, REJECTED)}
    near = selection.column("near_duplicate_of").to_pylist() if "near_duplicate_of" in selection.column_names else []
    return {**counts, "near_duplicate_images": sum(bool(n) for n in near)}


def record_selection(output: str | pathlib.Path, counts: dict[str, int]) -> dict[str, Any]:
    """Add the selection's counts to `summary.json` (rows read, duplicates, rows past the limit); returns it."""
    path = pathlib.Path(output) / SUMMARY_NAME
    summary = json.loads(path.read_text())
    statuses = {k: v for k, v in counts.items() if k != "near_duplicate_images"}
    summary["rows"] = {"total": sum(statuses.values()), **counts}
    atomic_write_bytes(path, json.dumps(summary, indent=1, sort_keys=True).encode())
    return summary


def run_vl_ingest(job: VlIngest, runner: Any, *, overwrite: bool = False) -> dict[str, Any]:
    """All three steps in this process's runner, without Prefect (the flow runs the same steps as tasks)."""
    with claimed_vl_ingest(job, overwrite=overwrite) as owned:
        units = owned.source.build().plan()
        index_units(owned, units, runner)
        counts = select_rows(owned, units)
        run_units(owned.job(), units, runner)
        finalize_job(owned.job(), units, runner)
        return record_selection(owned.output, counts)


def new_job(source: str, output: str, *, dataset: str | None = None, task: VlTask | None = None,
            limit: int | None = None, dedup: bool = True, near_duplicates: str = "report",
            source_options: dict[str, Any] | None = None, sample_options: dict[str, Any] | None = None,
            shards: ShardConfig = DEFAULT_SHARDS, input_format: str = VlParquetSource.name) -> VlIngest:
    """A job from plain values (what the CLI and the flow pass): `source` is the dataset's directory,
    `input_format` a registered format that yields VL rows; a misspelt option gets the closest name. The dataset
    name defaults to the source's, the task to what the format teaches (RefCOCO rows: grounding)."""
    entry = registry.input_format(input_format)
    if entry.yields is not registry.Yields.VL_ROWS:
        raise ValueError(f"{input_format} yields {entry.yields.value}, not VL rows: ingest it with `vlaforge ingest "
                         f"{input_format}` (the robot ingest)")
    config = config_from_dict(entry.source.Config, source_options or {}, where=f"{input_format} options",
                              given={"root": source})
    built = config.build()
    name = dataset or built.dataset_name
    samples = config_from_dict(VlRowSamples.Config, sample_options or {}, where="VL sample options",
                               given={"dataset": name, "task": task or built.task})
    return VlIngest(source=config, samples=samples, output=output, limit=limit, dedup=dedup,
                    near_duplicates=near_duplicates, shards=shards)
