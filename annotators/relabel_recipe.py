"""The generators `vlaforge relabel` knows, by name, and the `Job` one relabel run is.

Over robot shards (a dataset written by `vlaforge ingest`), every generator works on episodes. Over a VL dataset
(its `summary.json` says `"kind": "vl"`, e.g. one written by `vlaforge ingest vl-parquet`), only `vqa` applies: it
relabels the answers, and the output keeps the input's task.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import pathlib
from typing import Any

from vlaforge.annotators.caption_generator import CaptionGenerator
from vlaforge.annotators.eqa_generator import EqaGenerator
from vlaforge.annotators.plan_generator import PlanGenerator
from vlaforge.annotators.trajectory_generator import TrajectoryGenerator
from vlaforge.annotators.vlm_client import VlmBackendConfig
from vlaforge.annotators.vlm_generator import VlmGenerator
from vlaforge.annotators.vqa_generator import VqaGenerator
from vlaforge.datasets.schema import VlTask
from vlaforge.datasets.source import SourceError
from vlaforge.pipelines.job import SUMMARY_NAME, Job
from vlaforge.pipelines.shards.robot_source import RobotShardSource
from vlaforge.pipelines.shards.vl_source import VlShardSource
from vlaforge.pipelines.shards.writer import ShardConfig
from vlaforge.pipelines.vl_dataset import DEFAULT_SHARDS, EPISODES_PER_BATCH, VlDatasetSink

GENERATORS: dict[str, type[VlmGenerator]] = {
    "caption": CaptionGenerator,
    "vqa": VqaGenerator,
    "eqa": EqaGenerator,
    "plan": PlanGenerator,
    "trajectory": TrajectoryGenerator,
}
RELABELS_VL = ("vqa",)
"""Generators that also take VL datasets (they rewrite existing answers)."""


def generator_class(name: str) -> type[VlmGenerator]:
    """The generator registered under `name`, or a ValueError suggesting the closest name."""
    if name in GENERATORS:
        return GENERATORS[name]
    close = difflib.get_close_matches(name, GENERATORS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown generator {name!r}{hint} Known generators: {', '.join(GENERATORS)}")


def input_kind(shards: str | pathlib.Path) -> tuple[str, dict[str, Any]]:
    """("vl" or "robot", the input's summary) of a dataset directory."""
    summary_path = pathlib.Path(shards) / SUMMARY_NAME
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return ("vl" if summary.get("kind") == "vl" else "robot"), summary


def relabel_job(*, shards: str, output: str, generator: str, vlm: VlmBackendConfig | None,
                dataset: str | None = None, options: dict[str, Any] | None = None, split: str | None = None,
                shards_per_unit: int = 4, shard_config: ShardConfig = DEFAULT_SHARDS) -> Job:
    """The job of one relabel run. `options` are fields of the generator's Config (a misspelt one is named)."""
    stage_class = generator_class(generator)
    kind, summary = input_kind(shards)
    if kind == "vl" and generator not in RELABELS_VL:
        raise SourceError(f"{shards} is a VL dataset; only {', '.join(RELABELS_VL)} relabels VL data (the others "
                          "need robot episodes: point --shards at a `vlaforge ingest` output)")
    if kind == "vl":  # relabelled whole: each sample keeps its split (it follows the sample's source group)
        source = VlShardSource.Config(root=str(shards), split=None, shards_per_unit=shards_per_unit)
    else:
        source = RobotShardSource.Config(root=str(shards), split=split, shards_per_unit=shards_per_unit)
    name = dataset or f"{pathlib.Path(shards).resolve().name}-{generator}"
    stage = stage_class.Config(dataset=name, vlm=vlm, **_checked(stage_class, options or {}))
    task = VlTask(summary["task"]) if kind == "vl" else stage_class.task
    return Job(source=source, stages=(stage,), sink=VlDatasetSink.Config(dataset=name, task=task, shards=shard_config),
               output=str(output), items_per_batch=EPISODES_PER_BATCH)


def _checked(stage_class: type[VlmGenerator], options: dict[str, Any]) -> dict[str, Any]:
    """`options` with unknown keys named, nested configs built from dicts and lists made tuples (JSON has neither)."""
    fields = {f.name: f for f in dataclasses.fields(stage_class.Config) if f.name not in ("dataset", "vlm")}
    checked = {}
    for key, value in options.items():
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{stage_class.__name__} has no option {key!r}{hint} Options: {', '.join(sorted(fields))}")
        default = fields[key].default
        if dataclasses.is_dataclass(default) and isinstance(value, dict):
            value = dataclasses.replace(default, **value)
        elif isinstance(default, tuple) and isinstance(value, list):
            value = tuple(value)
        checked[key] = value
    return checked
