"""The input formats `vlaforge ingest <format>` knows, by name, and what each yields. Adding a format is one module
(a `Source` with a nested `Config`) and one line here."""

from __future__ import annotations

import dataclasses
import enum

from vlaforge.datasets.caption_parquet import CaptionParquetSource
from vlaforge.datasets.cauldron import CauldronSource
from vlaforge.datasets.configurable import lookup
from vlaforge.datasets.droid_rlds import DroidRldsSource
from vlaforge.datasets.lerobot import LeRobotSource
from vlaforge.datasets.refcoco import RefCocoSource
from vlaforge.datasets.source import Source
from vlaforge.datasets.teleop_hdf5 import TeleopHdf5Source
from vlaforge.datasets.teleop_mcap import TeleopMcapSource
from vlaforge.datasets.vl_parquet import VlParquetSource
from vlaforge.datasets.vl_webdataset import WebDatasetCaptionSource


class Yields(str, enum.Enum):
    """What a source reads its input into, which decides the job that ingests it."""

    EPISODES = "episodes"
    """Robot `Episode`s: filtered, chunked and written as robot shards (the `ingest` flow)."""
    VL_ROWS = "vl_rows"
    """`VlRow`s of a general VL dataset: deduplicated and written as VL shards (the `ingest-vl` flow)."""


@dataclasses.dataclass(frozen=True)
class InputFormat:
    """One registry entry."""

    source: type[Source]
    """The source class; its nested `Config` holds the format's options (`--set KEY=VALUE`)."""
    yields: Yields
    """What its `read` yields."""


SOURCES: dict[str, InputFormat] = {
    DroidRldsSource.name: InputFormat(DroidRldsSource, Yields.EPISODES),
    LeRobotSource.name: InputFormat(LeRobotSource, Yields.EPISODES),
    TeleopMcapSource.name: InputFormat(TeleopMcapSource, Yields.EPISODES),
    TeleopHdf5Source.name: InputFormat(TeleopHdf5Source, Yields.EPISODES),
    VlParquetSource.name: InputFormat(VlParquetSource, Yields.VL_ROWS),
    WebDatasetCaptionSource.name: InputFormat(WebDatasetCaptionSource, Yields.VL_ROWS),
    CaptionParquetSource.name: InputFormat(CaptionParquetSource, Yields.VL_ROWS),
    CauldronSource.name: InputFormat(CauldronSource, Yields.VL_ROWS),
    RefCocoSource.name: InputFormat(RefCocoSource, Yields.VL_ROWS),
}


def input_format(name: str) -> InputFormat:
    """The format registered under `name`, or a ValueError that suggests the closest name."""
    return lookup(SOURCES, name, what="source")


def source_class(name: str) -> type[Source]:
    """The source class registered under `name` (see `input_format`)."""
    return input_format(name).source


def formats_yielding(yields: Yields) -> list[str]:
    """The names of the formats whose sources yield `yields`, in registry order."""
    return [name for name, entry in SOURCES.items() if entry.yields is yields]
