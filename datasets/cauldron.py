"""Multi-turn VL datasets in The Cauldron's layout (HuggingFaceM4/the_cauldron, and FineVision, which keeps it) as
a `Source` of `VlRow`s.

A row holds `images` (a list of HF `Image` structs) and `texts` (turns `{"user", "assistant", "source"}`); the
images go before the first user turn, in order. FineVision rates every turn 1-5 on relevance, visual dependency,
image correspondence and formatting (`<quality>_ratings`, one value per turn): with `min_rating`, a turn rated
below it on any quality is left out, and a row left with no turn is dropped as having no answer. A row without
images is kept only when `allow_text_only` (the Cauldron mixes a few text-only subsets). The subset's `source` is
recorded in the sample's provenance settings through the row's layout.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Iterator
from typing import Any

from vlaforge.datasets.drops import DropReason
from vlaforge.datasets.schema import ChatRole
from vlaforge.datasets.source import WorkUnit
from vlaforge.datasets.vl_row_source import VlRowSource, VlRowSourceConfig, parquet_records, parquet_row_count
from vlaforge.datasets.vl_rows import Message, RowReject, VlRow, image_bytes, require_answer, where

QUALITIES = ("relevance", "visual_dependency", "image_correspondence", "formatting")


class CauldronSource(VlRowSource):
    """Rows of The Cauldron / FineVision subsets."""

    name = "cauldron"
    suffixes = (".parquet",)

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(VlRowSourceConfig):
        min_rating: int | None = None
        """FineVision: leave out turns rated below this (1-5) on any quality; None keeps every turn."""
        allow_text_only: bool = False
        """Keep rows without images (as text-only conversations)."""

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.min_rating is not None and not 1 <= self.min_rating <= 5:
                raise ValueError(f"CauldronSource.Config.min_rating must be in 1..5 or None, got {self.min_rating}")

    config: Config

    def row_count(self, path: pathlib.Path) -> int:
        return parquet_row_count(path)

    def records(self, unit: WorkUnit) -> Iterator[tuple[int, Any]]:
        start, stop = unit.episodes or (0, 0)
        yield from parquet_records(self.base / unit.files[0], start, stop)

    def row(self, file: str, row: int, record: Any) -> VlRow:
        at = where(file, row, str(row))
        turns = record.get("texts")
        if not isinstance(turns, list) or not turns:
            raise RowReject(DropReason.BAD_CONVERSATION, f"{at}: 'texts' must be a non-empty list of {{user, "
                            "assistant}} turns")
        images = [image_bytes(value, self.image_root(), at) for value in record.get("images") or []]
        if not images and not self.config.allow_text_only:
            raise RowReject(DropReason.MISSING_IMAGE, f"{at}: the row has no image; pass --set allow_text_only=true "
                            "to keep text-only rows")
        kept = [t for i, t in enumerate(turns) if self._rated_well(record, i)]
        conversation = _conversation(kept, len(images), at)
        require_answer(conversation, at)
        sources = sorted({str(t.get("source")) for t in turns if isinstance(t, dict) and t.get("source")})
        return VlRow(file=file, row=row, row_id=str(row), images=tuple(images), conversation=conversation,
                     layout="cauldron" + (f":{','.join(sources)}" if sources else ""))

    def _rated_well(self, record: dict[str, Any], turn: int) -> bool:
        if self.config.min_rating is None:
            return True
        for quality in QUALITIES:
            ratings = record.get(f"{quality}_ratings")
            rating = ratings[turn] if isinstance(ratings, list) and turn < len(ratings) else None
            if rating is not None and rating < self.config.min_rating:
                return False
        return True


def _conversation(turns: list[Any], n_images: int, at: str) -> list[Message]:
    """User and assistant messages of the turns that have an answer (a question left unanswered teaches nothing);
    the images come with the first question."""
    messages: list[Message] = []
    for index, turn in enumerate(turns):
        if not (isinstance(turn, dict) and isinstance(turn.get("user"), str) and isinstance(turn.get("assistant"),
                                                                                             str)):
            raise RowReject(DropReason.BAD_CONVERSATION, f"{at}: turn {index} is not {{user, assistant}} text: "
                            f"{str(turn)[:80]}")
        if not turn["assistant"].strip():
            continue
        images = [{"type": "image"}] * n_images if not messages else []
        question = {"type": "text", "text": turn["user"].strip()}
        messages += [{"role": ChatRole.USER.value, "content": [*images, question]},
                     {"role": ChatRole.ASSISTANT.value, "content": [{"type": "text",
                                                                     "text": turn["assistant"].strip()}]}]
    return messages
