"""LLaVA-style JSON files: one JSON list of rows (`llava_v1_5_mix665k.json`), or JSON Lines (one row per line).

A row is `{"id": ..., "image": "coco/train2017/000000033471.jpg" | [paths], "conversations": [{"from": "human",
"value": "<image>\\n..."}, {"from": "gpt", "value": "..."}]}`; a row without `image` is text-only. The rows of a
file are parsed once per process (the list format cannot be read from the middle), then served by index.
"""

from __future__ import annotations

import functools
import json
import pathlib
from typing import Any

from vlaforge.datasets.source import SourceError

JSON_SUFFIXES = (".json", ".jsonl")


def is_llava_json(path: pathlib.Path) -> bool:
    return path.suffix in JSON_SUFFIXES


def llava_rows(path: pathlib.Path) -> list[dict[str, Any]]:
    """All rows of a LLaVA JSON or JSONL file (cached per process by path, size and modification time)."""
    stat = path.stat()
    return _rows(str(path), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=2)
def _rows(path: str, size: int, mtime_ns: int) -> list[dict[str, Any]]:
    text = pathlib.Path(path).read_text("utf-8")
    try:
        if path.endswith(".jsonl"):
            rows = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            rows = json.loads(text)
    except json.JSONDecodeError as error:
        raise SourceError(f"{path}: not valid JSON at line {error.lineno} column {error.colno} ({error.msg}); "
                          "a LLaVA file is one JSON list of rows, or JSON Lines") from None
    if not isinstance(rows, list):
        raise SourceError(f"{path}: a LLaVA JSON file holds a list of rows, got {type(rows).__name__}")
    return rows
