"""The `Job` one `vlaforge relabel` run is (the generators it knows are registered in `generators.py`).

Over robot shards (a dataset written by `vlaforge ingest`), every generator works on episodes. Over a VL dataset
(its `summary.json` says `"kind": "vl"`, e.g. one written by `vlaforge ingest vl-parquet`), only `vqa` applies: it
relabels the answers, and the output keeps the input's task.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

from vlaforge.annotators.answer_judge import AnswerJudge
from vlaforge.annotators.generators import RELABELS_VL, generator_class
from vlaforge.annotators.vlm_client import VlmBackendConfig
from vlaforge.datasets.configurable import config_from_dict
from vlaforge.datasets.schema import VlTask
from vlaforge.datasets.source import SourceError
from vlaforge.pipelines.job import SUMMARY_NAME, Job
from vlaforge.pipelines.shards.robot_source import RobotShardSource
from vlaforge.pipelines.shards.vl_source import VlShardSource
from vlaforge.pipelines.shards.writer import ShardConfig
from vlaforge.pipelines.vl_dataset import DEFAULT_SHARDS, EPISODES_PER_BATCH, VlDatasetSink


def input_kind(shards: str | pathlib.Path) -> tuple[str, dict[str, Any]]:
    """("vl" or "robot", the input's summary) of a dataset directory."""
    summary_path = pathlib.Path(shards) / SUMMARY_NAME
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return ("vl" if summary.get("kind") == "vl" else "robot"), summary


def relabel_job(*, shards: str, output: str, generator: str, vlm: VlmBackendConfig | None,
                dataset: str | None = None, options: dict[str, Any] | None = None, split: str | None = None,
                shards_per_unit: int = 4, shard_config: ShardConfig = DEFAULT_SHARDS,
                judge: VlmBackendConfig | None = None, judge_threshold: float = 7.0) -> Job:
    """The job of one relabel run. `options` are fields of the generator's Config (a misspelt one is named);
    `judge` (any VLM backend) scores every answer the generator kept, and samples below `judge_threshold` go."""
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
    stage = config_from_dict(stage_class.Config, options or {}, where=f"{generator} generator",
                             given={"dataset": name, "vlm": vlm})
    task = VlTask(summary["task"]) if kind == "vl" else stage_class.task
    stages = (stage, *([AnswerJudge.Config(vlm=judge, threshold=judge_threshold)] if judge is not None else []))
    return Job(source=source, stages=stages, sink=VlDatasetSink.Config(dataset=name, task=task, shards=shard_config),
               output=str(output), items_per_batch=EPISODES_PER_BATCH)

