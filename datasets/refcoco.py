"""RefCOCO-style referring-expression rows (image, expressions, box) as a `Source` of grounding `VlRow`s.

The layout is `lmms-lab/RefCOCO`'s (also RefCOCO+ and RefCOCOg there): `image` (HF `Image` struct), `answer` (the
referring expressions of one object), `bbox` (COCO [x, y, width, height] in pixels), `question_id`. Each expression
becomes a question ("Locate the cup on the left in the image...", `vl_rows.REFERRING_PROMPTS`) answered in Qwen3-VL's
grounding format, the box in 0-1000 integers (`qwen_coordinates.grounding_answer`): the same answers the consensus's
grounding samples give, so one convention reaches training. Column names and the box format ("xywh" or "xyxy")
can be set for other dumps. A box with no area or outside the image, and a row without an expression, are
quarantined by name.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Iterator
from typing import Any

from vlaforge.datasets.drops import DropReason
from vlaforge.datasets.qwen_coordinates import grounding_answer, to_qwen_box
from vlaforge.datasets.schema import ChatRole, VlTask
from vlaforge.datasets.source import WorkUnit
from vlaforge.datasets.vl_row_source import VlRowSource, VlRowSourceConfig, parquet_records, parquet_row_count
from vlaforge.datasets.vl_rows import REFERRING_PROMPTS, Message, RowReject, VlRow, image_bytes, image_size, pick, where

BOX_FORMATS = ("xywh", "xyxy")


class RefCocoSource(VlRowSource):
    """Referring-expression grounding rows."""

    name = "refcoco"
    suffixes = (".parquet",)
    task = VlTask.GROUNDING

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(VlRowSourceConfig):
        image_column: str = "image"
        """The image column (HF `Image` struct, bytes, or a path under the image root)."""
        expressions_column: str = "answer"
        """The referring expressions: a list of strings (or one string)."""
        box_column: str = "bbox"
        """The object's box in pixels."""
        box_format: str = "xywh"
        """"xywh" (COCO: x, y, width, height) or "xyxy"."""
        id_column: str = "question_id"
        """The row id column."""

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.box_format not in BOX_FORMATS:
                raise ValueError(f"RefCocoSource.Config.box_format must be one of {BOX_FORMATS}, got "
                                 f"{self.box_format!r}")

    config: Config

    def row_count(self, path: pathlib.Path) -> int:
        return parquet_row_count(path)

    def records(self, unit: WorkUnit) -> Iterator[tuple[int, Any]]:
        start, stop = unit.episodes or (0, 0)
        columns = [self.config.image_column, self.config.expressions_column, self.config.box_column,
                   self.config.id_column]
        yield from parquet_records(self.base / unit.files[0], start, stop, columns)

    def row_id(self, record: Any, row: int) -> str:
        value = record.get(self.config.id_column) if isinstance(record, dict) else None
        return str(value) if value not in (None, "") else str(row)

    def row(self, file: str, row: int, record: Any) -> VlRow:
        row_id = self.row_id(record, row)
        at = where(file, row, row_id)
        expressions = record.get(self.config.expressions_column)
        expressions = [expressions] if isinstance(expressions, str) else list(expressions or [])
        expressions = [e.strip() for e in expressions if isinstance(e, str) and e.strip()]
        if not expressions:
            raise RowReject(DropReason.NO_ASSISTANT_TURN, f"{at}: no referring expression; nothing to ask")
        image = image_bytes(record.get(self.config.image_column), self.image_root(), at)
        height, width = image_size(image, at)
        box = self._box(record.get(self.config.box_column), height, width, at)
        return VlRow(file=file, row=row, row_id=row_id, images=(image,),
                     conversation=_conversation(expressions, box, f"{file}:{row_id}"), layout="refcoco")

    def _box(self, value: Any, height: int, width: int, at: str) -> list[int]:
        if not (isinstance(value, (list, tuple)) and len(value) == 4):
            raise RowReject(DropReason.BAD_RECORD, f"{at}: box {value!r} is not 4 numbers ({self.config.box_format})")
        x1, y1, a, b = (float(v) for v in value)
        x2, y2 = (x1 + a, y1 + b) if self.config.box_format == "xywh" else (a, b)
        if not (0 <= x1 < x2 <= width + 0.5 and 0 <= y1 < y2 <= height + 0.5):
            raise RowReject(DropReason.BAD_RECORD, f"{at}: box {list(value)} ({self.config.box_format}) has no area "
                            f"or leaves the {width}x{height} image; fix the row or drop it")
        return to_qwen_box([x1, y1, min(x2, width), min(y2, height)], height, width)


def _conversation(expressions: list[str], box: list[int], key: str) -> list[Message]:
    """One question per expression, each answered with the same box; the image comes with the first."""
    messages: list[Message] = []
    for expression in expressions:
        question = pick(REFERRING_PROMPTS, key + expression).format(expression=expression)
        images = [{"type": "image"}] if not messages else []
        messages += [{"role": ChatRole.USER.value, "content": [*images, {"type": "text", "text": question}]},
                     {"role": ChatRole.ASSISTANT.value, "content": [{"type": "text",
                                                                     "text": grounding_answer([(box, expression)])}]}]
    return messages
