"""What `vlaforge inspect` reports about a raw dataset (`inspection.py` finds the format; one module per format fills
the report), and the exact `vlaforge ingest` line it suggests."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shlex
from typing import Any

from vlaforge.datasets.schema import safe_key_part


@dataclasses.dataclass
class InspectionTable:
    """One table of facts: a title, column names, rows of text."""

    title: str
    columns: list[str]
    rows: list[list[str]] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class RawReport:
    """What `vlaforge inspect` prints about one raw dataset."""

    format: str
    """The `vlaforge ingest` format name (`datasets/registry.py`)."""
    root: pathlib.Path
    """What `--input` should be."""
    name: str | None = None
    """The dataset's name, for the suggested `--output` (default: the directory's name)."""
    summary: list[str] = dataclasses.field(default_factory=list)
    """One line each: the layout detected, counts, how it will be read."""
    tables: list[InspectionTable] = dataclasses.field(default_factory=list)
    problems: list[str] = dataclasses.field(default_factory=list)
    """What the ingest would set aside or refuse, and why."""
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Source options (`--set KEY=VALUE`) that this dataset needs instead of the defaults."""

    def command(self, output: str | None = None) -> str:
        """The `vlaforge ingest` line for this dataset (shell-quoted), writing to `output` (default:
        `shards/<directory name>`)."""
        output = output or f"shards/{safe_key_part(self.name or self.root.resolve().name)}"
        words = ["vlaforge", "ingest", self.format, "--input", str(self.root), "--output", output]
        for key, value in self.settings.items():
            words += ["--set", f"{key}={json.dumps(value) if not isinstance(value, str) else value}"]
        return shlex.join(words)



def rate_and_gaps(stamps_ns: list[int], gap_s: float) -> tuple[float, float, int]:
    """(measured rate Hz, longest interval s, intervals longer than `gap_s`) of sorted stamps."""
    if len(stamps_ns) < 2:
        return 0.0, 0.0, 0
    intervals = [(b - a) / 1e9 for a, b in zip(stamps_ns, stamps_ns[1:])]
    span = (stamps_ns[-1] - stamps_ns[0]) / 1e9
    return (len(stamps_ns) - 1) / span if span > 0 else 0.0, max(intervals), sum(i > gap_s for i in intervals)
