"""General VL datasets (Parquet as the HF hub stores them, or LLaVA JSON / JSONL) as a `Source` of `VlRow`s.

`root` is one file or a directory of `*.parquet`, `*.json` and `*.jsonl` files (read in sorted order). Each file is
split into units of `rows_per_unit` rows. Columns are found by name: the conversation in `conversations` (ShareGPT)
or `messages` (HF chat), images in `images` (a list) or `image` (one), the row id in `id`; each can be named
explicitly. A row that cannot be used is quarantined with its reason (missing image, no assistant turn, a broken
conversation) and reading goes on.

With a `selection` (written by the ingest's index pass: which rows to keep after deduplication by image hash and the
per-dataset limit), rows marked duplicate are dropped under DUPLICATE_IMAGE, rows past the limit are skipped without
reading their images, and the rest are read as usual.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Iterator
from typing import Any

import pyarrow.parquet as pq

from vlaforge.datasets.drops import DropLedger, DropReason
from vlaforge.datasets.llava_json import JSON_SUFFIXES, is_llava_json, llava_rows
from vlaforge.datasets.source import Source, SourceConfig, SourceError, WorkUnit
from vlaforge.datasets.vl_rows import (
    RowReject,
    VlRow,
    image_bytes,
    messages_conversation,
    require_answer,
    sharegpt_conversation,
    where,
)

SUFFIXES = (".parquet", *JSON_SUFFIXES)
KEEP, DUPLICATE, OVER_LIMIT, REJECTED = "keep", "duplicate", "over_limit", "rejected"
"""Row statuses of a selection table (columns file, row, status, duplicate_of)."""


class VlParquetSource(Source):
    """Rows of LLaVA-style JSON or Parquet VL datasets, normalised to our conversation format."""

    name = "vl-parquet"

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(SourceConfig):
        image_root: str | None = None
        """Where image paths resolve; None: the dataset directory (the file's directory when root is a file)."""
        rows_per_unit: int = 1000
        """Rows per work unit."""
        conversation_column: str | None = None
        """The conversation column; None finds `conversations` (ShareGPT) or `messages` (HF chat)."""
        image_column: str | None = None
        """The image column; None finds `images` (a list) or `image` (one image or a list)."""
        id_column: str = "id"
        """The row id column (the row index when a row has none)."""
        selection: str | None = None
        """The index pass's selection table; None reads every row."""

        def __post_init__(self) -> None:
            if self.rows_per_unit < 1:
                raise ValueError(f"VlParquetSource.Config.rows_per_unit must be >= 1, got {self.rows_per_unit}")

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._selection: tuple[str, dict[int, tuple[str, str]]] | None = None
        """(file, row -> (status, duplicate_of)) of the file being read: one file's rows in memory at a time."""

    @property
    def base(self) -> pathlib.Path:
        return self.root if self.root.is_dir() else self.root.parent

    @property
    def dataset_name(self) -> str:
        return self.root.stem

    def files(self) -> list[str]:
        if self.root.is_file():
            paths = [self.root]
        elif self.root.is_dir():
            paths = sorted(p for p in self.root.rglob("*") if p.suffix in SUFFIXES and p.is_file())
        else:
            raise SourceError(f"{self.root} does not exist: pass a .parquet/.json/.jsonl file or a directory of them")
        if not paths or any(p.suffix not in SUFFIXES for p in paths):
            raise SourceError(f"{self.root}: no .parquet, .json or .jsonl files to read")
        return [str(p.relative_to(self.base)) for p in paths]

    def plan(self) -> list[WorkUnit]:
        units = []
        for file in self.files():
            rows = self._row_count(self.base / file)
            for start in range(0, rows, self.config.rows_per_unit):
                stop = min(start + self.config.rows_per_unit, rows)
                units.append(WorkUnit(len(units), (file,), (start, stop)))
        return units

    def _row_count(self, path: pathlib.Path) -> int:
        try:
            return len(llava_rows(path)) if is_llava_json(path) else pq.ParquetFile(path).metadata.num_rows
        except OSError as error:
            raise SourceError(f"{path}: cannot read it ({error}); is it a Parquet or JSON file?") from None

    def read(self, unit: WorkUnit, ledger: DropLedger) -> Iterator[VlRow]:  # type: ignore[override]
        file = unit.files[0]
        for row, record in self.records(unit):
            status = self._status(file, row)
            if status[0] == OVER_LIMIT:
                continue
            row_id = self._row_id(record, row)
            if status[0] == DUPLICATE:
                ledger.drop(file=file, episode=row_id, reason=DropReason.DUPLICATE_IMAGE,
                            message=f"{where(file, row, row_id)}: the same images as {status[1]}")
                continue
            try:
                yield self.row(file, row, record)
            except RowReject as reject:
                ledger.quarantine(file=file, episode=row_id, reason=reject.reason, message=str(reject))

    def records(self, unit: WorkUnit) -> Iterator[tuple[int, Any]]:
        """(row index, raw record) for the unit's rows."""
        path = self.base / unit.files[0]
        start, stop = unit.episodes or (0, 0)
        if is_llava_json(path):
            yield from enumerate(llava_rows(path)[start:stop], start)
            return
        parquet = pq.ParquetFile(path)
        first = 0
        for group in range(parquet.metadata.num_row_groups):
            count = parquet.metadata.row_group(group).num_rows
            if first < stop and first + count > start:
                table = parquet.read_row_group(group)
                for offset, record in enumerate(table.to_pylist()):
                    if start <= first + offset < stop:
                        yield first + offset, record
            first += count

    def row(self, file: str, row: int, record: Any) -> VlRow:
        """One raw record as a VlRow; RowReject names what is wrong."""
        row_id = self._row_id(record, row)
        at = where(file, row, row_id)
        if not isinstance(record, dict):
            raise RowReject(DropReason.BAD_RECORD, f"{at}: a row must be an object, got {type(record).__name__}")
        refs = self._image_refs(record)
        column = self.config.conversation_column or next(
            (c for c in ("conversations", "messages") if record.get(c) is not None), "conversations")
        if column == "messages" or (isinstance(record.get(column), list) and record[column]
                                    and isinstance(record[column][0], dict) and "role" in record[column][0]):
            conversation, order = messages_conversation(record.get(column), len(refs), at)
            if len(set(order)) != len(refs):
                raise RowReject(DropReason.BAD_CONVERSATION, f"{at}: the row has {len(refs)} images but its messages "
                                f"show {sorted(set(order))}")
            refs, layout = [refs[i] for i in order], "messages"
        else:
            conversation, layout = sharegpt_conversation(record.get(column), len(refs), at), "sharegpt"
        require_answer(conversation, at)
        images = tuple(image_bytes(ref, self._image_root(), at) for ref in refs)
        return VlRow(file=file, row=row, row_id=row_id, images=images, conversation=conversation, layout=layout)

    def _image_refs(self, record: dict[str, Any]) -> list[Any]:
        column = self.config.image_column or next((c for c in ("images", "image") if c in record), None)
        value = record.get(column) if column else None
        if value is None:
            return []
        return list(value) if isinstance(value, (list, tuple)) else [value]

    def _row_id(self, record: Any, row: int) -> str:
        value = record.get(self.config.id_column) if isinstance(record, dict) else None
        return str(value) if value not in (None, "") else str(row)

    def _image_root(self) -> pathlib.Path:
        return pathlib.Path(self.config.image_root) if self.config.image_root else self.base

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
