"""General VL datasets (Parquet as the HF hub stores them, or LLaVA JSON / JSONL) as a `Source` of `VlRow`s.

`root` is one file or a directory of `*.parquet`, `*.json` and `*.jsonl` files (read in sorted order). Each file is
split into units of `rows_per_unit` rows. Columns are found by name: the conversation in `conversations` (ShareGPT)
or `messages` (HF chat), images in `images` (a list) or `image` (one), the row id in `id`; each can be named
explicitly. A row that cannot be used is quarantined with its reason (missing image, no assistant turn, a broken
conversation) and reading goes on.

LLaVA's own grounding rows (RefCOCO, Visual Genome) carry boxes as 0-1 floats, "[0.39, 0.24, 0.68, 0.71]", relative
to the image padded to a square: `llava_boxes.py` rewrites them into the 0-1000 `bbox_2d` answers every other
grounding sample uses (`box_frame`).

With a `selection` (written by the ingest's index pass: which rows to keep after deduplication by images and
conversation and the per-dataset limit), rows marked duplicate are dropped under DUPLICATE_SAMPLE, rows past the
limit are skipped without reading their images, and the rest are read as usual.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Iterator
from typing import Any

from vlaforge.datasets.drops import DropReason
from vlaforge.datasets.llava_boxes import BOX_FRAMES, convert_llava_boxes
from vlaforge.datasets.llava_json import JSON_SUFFIXES, is_llava_json, llava_rows
from vlaforge.datasets.source import SourceError, WorkUnit
from vlaforge.datasets.vl_row_source import VlRowSource, VlRowSourceConfig, parquet_records, parquet_row_count
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


class VlParquetSource(VlRowSource):
    """Rows of LLaVA-style JSON or Parquet VL datasets, normalised to our conversation format."""

    name = "vl-parquet"
    suffixes = SUFFIXES

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(VlRowSourceConfig):
        conversation_column: str | None = None
        """The conversation column; None finds `conversations` (ShareGPT) or `messages` (HF chat)."""
        image_column: str | None = None
        """The image column; None finds `images` (a list) or `image` (one image or a list)."""
        id_column: str = "id"
        """The row id column (the row index when a row has none)."""
        box_frame: str | None = "padded_square"
        """What LLaVA-style 0-1 boxes are relative to: "padded_square" (LLaVA-1.5's mix: the image padded to a
        square), "image", or None to leave them as they are."""

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.box_frame not in (*BOX_FRAMES, None):
                raise ValueError(f"VlParquetSource.Config.box_frame must be one of {BOX_FRAMES} or None, got "
                                 f"{self.box_frame!r}")

    config: Config

    def row_count(self, path: pathlib.Path) -> int:
        try:
            return len(llava_rows(path)) if is_llava_json(path) else parquet_row_count(path)
        except OSError as error:
            raise SourceError(f"{path}: cannot read it ({error}); is it a Parquet or JSON file?") from None

    def records(self, unit: WorkUnit) -> Iterator[tuple[int, Any]]:
        path = self.base / unit.files[0]
        start, stop = unit.episodes or (0, 0)
        if is_llava_json(path):
            yield from enumerate(llava_rows(path)[start:stop], start)
        else:
            yield from parquet_records(path, start, stop)

    def row(self, file: str, row: int, record: Any) -> VlRow:
        row_id = self.row_id(record, row)
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
        images = tuple(image_bytes(ref, self.image_root(), at) for ref in refs)
        if self.config.box_frame is not None and images:
            conversation = convert_llava_boxes(conversation, images[0], self.config.box_frame, at)
        return VlRow(file=file, row=row, row_id=row_id, images=images, conversation=conversation, layout=layout)

    def row_id(self, record: Any, row: int) -> str:
        value = record.get(self.config.id_column) if isinstance(record, dict) else None
        return str(value) if value not in (None, "") else str(row)

    def _image_refs(self, record: dict[str, Any]) -> list[Any]:
        column = self.config.image_column or next((c for c in ("images", "image") if c in record), None)
        value = record.get(column) if column else None
        if value is None:
            return []
        return list(value) if isinstance(value, (list, tuple)) else [value]
