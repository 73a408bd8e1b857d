"""Image-caption pairs in hub Parquet (an image column and a caption column) as a `Source` of caption `VlRow`s.

The image column holds HF `Image` structs `{bytes, path}`, raw bytes, or paths under the image root; found by name
(`image`, `jpg`, `img`, `png`) unless `image_column` names it. The caption column likewise (`caption`, `text`,
`txt`, `TEXT`, `alt_text`, `sentence`). Each row becomes the image with a caption question
(`vl_rows.CAPTION_PROMPTS`) and the caption as the answer. A file that holds only image URLs (CC3M's own TSV turned
Parquet) is refused before any work, with the fix: download the images with img2dataset and ingest its output
(`vl-webdataset`).
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Iterator
from typing import Any

import pyarrow.parquet as pq

from vlaforge.datasets.drops import DropReason
from vlaforge.datasets.schema import VlTask
from vlaforge.datasets.source import SourceError, WorkUnit
from vlaforge.datasets.vl_row_source import VlRowSource, VlRowSourceConfig, parquet_records, parquet_row_count
from vlaforge.datasets.vl_rows import RowReject, VlRow, caption_conversation, image_bytes, where

IMAGE_COLUMNS = ("image", "jpg", "img", "png")
CAPTION_COLUMNS = ("caption", "text", "txt", "TEXT", "alt_text", "sentence")
URL_COLUMNS = ("url", "image_url", "URL")


class CaptionParquetSource(VlRowSource):
    """Image-caption rows of hub Parquet files."""

    name = "caption-parquet"
    suffixes = (".parquet",)
    task = VlTask.CAPTION

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(VlRowSourceConfig):
        image_column: str | None = None
        """The image column; None finds one of `IMAGE_COLUMNS`."""
        caption_column: str | None = None
        """The caption column; None finds one of `CAPTION_COLUMNS`."""
        id_column: str = "key"
        """The row id column (img2dataset's `key`); the row index when a row has none."""

    config: Config

    def plan(self) -> list[WorkUnit]:
        for file in self.files():
            self._columns(self.base / file)
        return super().plan()

    def _columns(self, path: pathlib.Path) -> tuple[str, str]:
        """(image column, caption column) of a file; SourceError naming what is missing."""
        names = pq.ParquetFile(path).schema_arrow.names
        image = self.config.image_column or next((c for c in IMAGE_COLUMNS if c in names), None)
        caption = self.config.caption_column or next((c for c in CAPTION_COLUMNS if c in names), None)
        if image is None or image not in names:
            urls = [c for c in URL_COLUMNS if c in names]
            hint = (f"it has only image URLs ({urls[0]}): download them with img2dataset (--output_format "
                    "webdataset) and ingest that with `vlaforge ingest vl-webdataset`") if urls else (
                "name it with --set image_column=NAME")
            raise SourceError(f"{path}: no image column among {names}; {hint}")
        if caption is None or caption not in names:
            raise SourceError(f"{path}: no caption column among {names}; name it with --set caption_column=NAME")
        return image, caption

    def row_count(self, path: pathlib.Path) -> int:
        return parquet_row_count(path)

    def records(self, unit: WorkUnit) -> Iterator[tuple[int, Any]]:
        path = self.base / unit.files[0]
        image, caption = self._columns(path)
        columns = [image, caption, *([self.config.id_column] if self.config.id_column in
                                     pq.ParquetFile(path).schema_arrow.names else [])]
        start, stop = unit.episodes or (0, 0)
        for row, record in parquet_records(path, start, stop, columns):
            yield row, {"image": record[image], "caption": record[caption],
                        "id": record.get(self.config.id_column)}

    def row(self, file: str, row: int, record: Any) -> VlRow:
        row_id = self.row_id(record, row)
        at = where(file, row, row_id)
        if record["image"] is None:
            raise RowReject(DropReason.MISSING_IMAGE, f"{at}: the image is empty; drop the row or re-download it")
        image = image_bytes(record["image"], self.image_root(), at)
        return VlRow(file=file, row=row, row_id=row_id, images=(image,),
                     conversation=caption_conversation(record["caption"], f"{file}:{row_id}", at), layout="caption")
