"""Precomputed detections for `vlaforge annotate consensus`, as a team would bring them: images on disk (real
photos shipped in scikit-image, seen through `datasets/synth/scenes.py`) and a detections table in the documented
layout (`annotators/detection_table.py`), for tests and benchmarks."""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterable
from typing import Any

import numpy as np

from vlaforge.datasets.frames import FrameConfig, encode_jpeg
from vlaforge.datasets.synth.scenes import camera_frames


def write_detection_images(directory: str | pathlib.Path, *, n: int = 2,
                           size: tuple[int, int] = (72, 96)) -> pathlib.Path:
    """`photo_<i>.jpg` views of real photos under `directory`; returns it."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    for index in range(n):
        pixels = np.ascontiguousarray(camera_frames(index, 2, *size)[0])
        (directory / f"photo_{index}.jpg").write_bytes(encode_jpeg(pixels, FrameConfig()))
    return directory


def write_detections_jsonl(path: str | pathlib.Path, rows: Iterable[dict[str, Any]]) -> pathlib.Path:
    """A detections table in JSON Lines, one row per box."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path
