"""The sources `vlaforge ingest` knows, by name. Adding a format is one line here."""

from __future__ import annotations

import difflib

from vlaforge.datasets.droid_rlds import DroidRldsSource
from vlaforge.datasets.lerobot import LeRobotSource
from vlaforge.datasets.source import Source
from vlaforge.datasets.teleop_hdf5 import TeleopHdf5Source
from vlaforge.datasets.teleop_mcap import TeleopMcapSource

SOURCES: dict[str, type[Source]] = {
    DroidRldsSource.name: DroidRldsSource,
    LeRobotSource.name: LeRobotSource,
    TeleopMcapSource.name: TeleopMcapSource,
    TeleopHdf5Source.name: TeleopHdf5Source,
}


def source_class(name: str) -> type[Source]:
    """The source registered under `name`, or a ValueError that suggests the closest name."""
    if name in SOURCES:
        return SOURCES[name]
    close = difflib.get_close_matches(name, SOURCES, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown source {name!r}{hint} Known sources: {', '.join(sorted(SOURCES))}")
