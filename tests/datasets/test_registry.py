"""The input-format registry behind `vlaforge ingest <format>`: each format once, each builds, typos suggested."""

import importlib
import inspect
import pathlib

import pytest

from vlaforge.datasets import registry
from vlaforge.datasets.registry import SOURCES, Yields, formats_yielding, input_format, source_class
from vlaforge.datasets.source import Source
from vlaforge.datasets.vl_parquet import VlParquetSource


def test_each_format_is_registered_once_under_its_own_name(registry_keys):
    keys = registry_keys(registry, "SOURCES")
    assert len(keys) == len(set(keys)) == len(SOURCES)
    assert all(name == entry.source.name for name, entry in SOURCES.items())
    assert len({entry.source for entry in SOURCES.values()}) == len(SOURCES)


def test_every_input_format_source_in_datasets_is_registered():
    folder = pathlib.Path(registry.__file__).parent
    for path in folder.glob("*.py"):  # a Source defined but not registered would be unreachable from the CLI
        importlib.import_module(f"vlaforge.datasets.{path.stem}")
    defined = {cls for cls in _subclasses(Source)
               if cls.__module__.startswith("vlaforge.datasets.") and not inspect.isabstract(cls)}  # not bases
    assert defined == {entry.source for entry in SOURCES.values()}


def _subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_every_format_builds_from_its_default_config(tmp_path):
    for name, entry in SOURCES.items():
        source = entry.source.Config(root=str(tmp_path)).build()
        assert type(source) is entry.source and source.root == tmp_path, name


def test_vl_parquet_is_a_format_that_yields_vl_rows():
    assert input_format("vl-parquet").source is VlParquetSource
    assert formats_yielding(Yields.VL_ROWS) == ["vl-parquet", "vl-webdataset", "caption-parquet", "cauldron", "refcoco"]
    assert set(formats_yielding(Yields.EPISODES)) == {"droid", "lerobot", "teleop-mcap", "teleop-hdf5"}


def test_a_misspelt_format_gets_the_closest_name():
    with pytest.raises(ValueError, match=r"unknown source 'lerobt'; did you mean 'lerobot'\? Known sources: droid, "):
        source_class("lerobt")
