"""Boxes and points in the target VLM's answer convention: for Qwen3-VL, integers 0-1000 relative to the image.

`x` runs along the width and `y` along the height; pixel coordinates are continuous (0 is the left edge of the
first pixel, `width` the right edge of the last), so a box covering the whole image is [0, 0, 1000, 1000].
Grounding answers are Qwen3-VL's own format: a fenced JSON list of `{"bbox_2d": [x1, y1, x2, y2], "label": ...}`.
It lives with the records because every producer of boxes shares it: the consensus's grounding samples and the
general datasets' grounding rows (RefCOCO, LLaVA's 0-1 boxes) alike, so one convention reaches training.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

SCALE = 1000


def _relative(value: float, extent: int) -> int:
    return min(SCALE, max(0, round(value / extent * SCALE)))


def to_qwen_box(box_xyxy: Sequence[float], height: int, width: int) -> list[int]:
    """[x1, y1, x2, y2] in pixels -> [x1, y1, x2, y2] in 0-1000, clipped to the image."""
    x1, y1, x2, y2 = box_xyxy
    if x2 < x1 or y2 < y1:
        raise ValueError(f"box {list(box_xyxy)} has x2 < x1 or y2 < y1; expected [x1, y1, x2, y2] in pixels")
    return [_relative(x1, width), _relative(y1, height), _relative(x2, width), _relative(y2, height)]


def to_qwen_point(point_xy: Sequence[float], height: int, width: int) -> list[int]:
    """[x, y] in pixels -> [x, y] in 0-1000, clipped to the image."""
    x, y = point_xy
    return [_relative(x, width), _relative(y, height)]


def from_qwen_box(box: Sequence[int], height: int, width: int) -> list[float]:
    """The inverse of `to_qwen_box` (up to its rounding): 0-1000 -> pixels."""
    x1, y1, x2, y2 = box
    return [x1 * width / SCALE, y1 * height / SCALE, x2 * width / SCALE, y2 * height / SCALE]


def grounding_answer(items: Sequence[tuple[Sequence[int], str]]) -> str:
    """Qwen3-VL's grounding answer for (0-1000 box, label) pairs: a fenced JSON list of bbox_2d and label."""
    return "```json\n" + json.dumps([{"bbox_2d": list(box), "label": label} for box, label in items]) + "\n```"
