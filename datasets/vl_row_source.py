"""What every general VL dataset source shares: files split into row ranges, and reading only the selected rows.

A VL-row source (LLaVA JSON / hub Parquet, img2dataset WebDataset tars, caption Parquet, FineVision / The Cauldron,
RefCOCO-style grounding rows) finds its files under `root`, counts each file's rows, and splits them into units of
`rows_per_unit`. The VL ingest reads it twice (`pipelines/vl_ingest.py`): an index pass over every row
(`records(unit)` then `row(file, index, record)`), then, with `selection` set to the table the index pass made, a
read that skips rows past the limit without reading their images and drops duplicates under their named reason.
A subclass says which files are its (`suffixes`), how many rows one holds (`row_count`), how to iterate a unit's raw
records (`records`), and how one record becomes a `VlRow` or a `RowReject` (`row`).
"""

from __future__ import annotations

import abc
import dataclasses
import pathlib
from collections.abc import Iterator
from typing import Any, ClassVar

import pyarrow.parquet as pq

from vlaforge.datasets.drops import DropLedger, DropReason
from vlaforge.datasets.schema import VlTask
from vlaforge.datasets.source import Source, SourceConfig, SourceError, WorkUnit
from vlaforge.datasets.vl_rows import RowReject, VlRow, where

KEEP, DUPLICATE, NEAR_DUPLICATE, OVER_LIMIT, REJECTED = "keep", "duplicate", "near_duplicate", "over_limit", "rejected"
"""Row statuses of a selection table (columns file, row, status, duplicate_of)."""
_DROPPED = {DUPLICATE: (DropReason.DUPLICATE_SAMPLE, "the same images and conversation as"),
            NEAR_DUPLICATE: (DropReason.NEAR_DUPLICATE_IMAGE, "a near-duplicate image of")}


@dataclasses.dataclass(frozen=True, kw_only=True)
class VlRowSourceConfig(SourceConfig):
    """The options every VL-row source has."""

    rows_per_unit: int = 1000
    """Rows per work unit."""
    image_root: str | None = None
    """Where image paths resolve; None: the dataset directory (the file's directory when root is a file)."""
    selection: str | None = None
    """The index pass's selection table; None reads every row."""

    def __post_init__(self) -> None:
        if self.rows_per_unit < 1:
            raise ValueError(f"{type(self).__qualname__}.rows_per_unit must be >= 1, got {self.rows_per_unit}")


class VlRowSource(Source, abc.ABC):
    """Base of the general VL dataset sources (see the module docstring)."""

    suffixes: ClassVar[tuple[str, ...]]
    """The file suffixes this source reads under `root`."""
    task: ClassVar[VlTask] = VlTask.GENERAL
    """What the dataset teaches, unless the ingest is told otherwise."""
    config: VlRowSourceConfig

    def __init__(self, config: VlRowSourceConfig) -> None:
        super().__init__(config)
        self._selection: tuple[str, dict[int, tuple[str, str]]] | None = None
        """(file, row -> (status, duplicate_of)) of the file being read: one file's rows in memory at a time."""

    @property
    def base(self) -> pathlib.Path:
        return self.root if self.root.is_dir() else self.root.parent

    @property
    def dataset_name(self) -> str:
        return self.root.stem

    def image_root(self) -> pathlib.Path:
        return pathlib.Path(self.config.image_root) if self.config.image_root else self.base

    def files(self) -> list[str]:
        """The dataset's files, relative to `base`, in sorted order."""
        if self.root.is_file():
            paths = [self.root]
        elif self.root.is_dir():
            paths = sorted(p for p in self.root.rglob("*") if p.suffix in self.suffixes and p.is_file())
        else:
            raise SourceError(f"{self.root} does not exist: pass a {'/'.join(self.suffixes)} file or a directory "
                              "of them")
        if not paths or any(p.suffix not in self.suffixes for p in paths):
            raise SourceError(f"{self.root}: no {', '.join(self.suffixes)} files to read")
        return [str(p.relative_to(self.base)) for p in paths]

    def plan(self) -> list[WorkUnit]:
        units = []
        for file in self.files():
            rows = self.row_count(self.base / file)
            for start in range(0, rows, self.config.rows_per_unit):
                stop = min(start + self.config.rows_per_unit, rows)
                units.append(WorkUnit(len(units), (file,), (start, stop)))
        return units

    @abc.abstractmethod
    def row_count(self, path: pathlib.Path) -> int:
        """Rows in one file; SourceError when it cannot be read at all."""

    @abc.abstractmethod
    def records(self, unit: WorkUnit) -> Iterator[tuple[int, Any]]:
        """(row index, raw record) for the unit's rows."""

    @abc.abstractmethod
    def row(self, file: str, row: int, record: Any) -> VlRow:
        """One raw record as a VlRow; RowReject names what is wrong."""

    def row_id(self, record: Any, row: int) -> str:
        """The dataset's own id for a record (its `id` field), or the row index."""
        value = record.get("id") if isinstance(record, dict) else None
        return str(value) if value not in (None, "") else str(row)

    def read(self, unit: WorkUnit, ledger: DropLedger) -> Iterator[VlRow]:  # type: ignore[override]
        file = unit.files[0]
        for row, record in self.records(unit):
            status, first = self._status(file, row)
            if status == OVER_LIMIT:
                continue
            row_id = self.row_id(record, row)
            if status in _DROPPED:
                reason, words = _DROPPED[status]
                ledger.drop(file=file, episode=row_id, reason=reason, message=f"{where(file, row, row_id)}: {words} "
                                                                              f"{first}")
                continue
            try:
                yield self.row(file, row, record)
            except RowReject as reject:
                ledger.quarantine(file=file, episode=row_id, reason=reject.reason, message=str(reject))

    def _status(self, file: str, row: int) -> tuple[str, str]:
        if self.config.selection is None:
            return KEEP, ""
        if self._selection is None or self._selection[0] != file:
            table = pq.read_table(self.config.selection, filters=[("file", "=", file)]).to_pylist()
            self._selection = (file, {r["row"]: (r["status"], r["duplicate_of"] or "") for r in table})
        status = self._selection[1].get(row)
        if status is None:
            raise SourceError(f"{self.config.selection} has no row {row} of {file}: the dataset changed since it "
                              "was indexed; ingest it into a new output directory")
        return status


def parquet_row_count(path: pathlib.Path) -> int:
    try:
        return pq.ParquetFile(path).metadata.num_rows
    except OSError as error:
        raise SourceError(f"{path}: cannot read it as Parquet ({error})") from None


def parquet_records(path: pathlib.Path, start: int, stop: int,
                    columns: list[str] | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(row index, row as a dict) for rows [start, stop) of a Parquet file, one row group in memory at a time."""
    parquet = pq.ParquetFile(path)
    first = 0
    for group in range(parquet.metadata.num_row_groups):
        count = parquet.metadata.row_group(group).num_rows
        if first < stop and first + count > start:
            table = parquet.read_row_group(group, columns=columns)
            for offset, record in enumerate(table.to_pylist()):
                if start <= first + offset < stop:
                    yield first + offset, record
        first += count
