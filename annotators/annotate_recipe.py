"""The grounding recipe: which detectors, SAM, frames, phrases and consensus thresholds, as one plain dict (what
the CLI builds and the `annotate` flow receives: JSON, so Prefect can record it) turned into a `Job`.

    {"detectors": [{"kind": "grounding_dino", "model": "..."}, {"kind": "llmdet", ...}, {"kind": "hosted", ...}],
     "sam": {"model": "..."} or None, "frames": {...}, "phrases": {...}, "consensus": {...}, "samples": {...},
     "source": {"shards_per_unit": 4, "split": "train"}, "shards": {"max_samples": 2000}}

Each section holds fields of one component's `Config`; a misspelt field is answered with the closest name. No
secret ever goes in the recipe: the hosted detector's token is passed separately (`hosted_token`).
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import pathlib
import typing
from typing import Any

from vlaforge.annotators.consensus import ConsensusStage
from vlaforge.annotators.frame_selection import FrameSelector
from vlaforge.annotators.grounding_dino import GroundingDinoDetector
from vlaforge.annotators.grounding_samples import GroundingSampleBuilder
from vlaforge.annotators.hosted_detector import HostedDetector, RetryPolicy
from vlaforge.annotators.phrases import PhraseStage
from vlaforge.annotators.sam_masks import SamMasker
from vlaforge.annotators.vlm_backends import backend_config
from vlaforge.datasets.schema import VlTask
from vlaforge.pipelines.job import Job
from vlaforge.pipelines.shards.robot_source import RobotShardSource
from vlaforge.pipelines.shards.writer import ShardConfig
from vlaforge.pipelines.vl_dataset import EPISODES_PER_BATCH, VlDatasetSink

DETECTOR_KINDS = ("grounding_dino", "llmdet", "hosted")
SECTIONS = ("detectors", "sam", "frames", "phrases", "consensus", "samples", "source", "shards")
RECIPE_NAME = "annotate_recipe.json"


def default_recipe() -> dict[str, Any]:
    """The report's recipe: Grounded SAM (Grounding DINO + SAM), LLMDet and hosted Grounding DINO 1.5, 2 of 3."""
    return {
        "detectors": [{"kind": "grounding_dino"}, {"kind": "llmdet"}, {"kind": "hosted"}],
        "sam": {}, "frames": {}, "phrases": {}, "consensus": {}, "samples": {},
        "source": {"shards_per_unit": 4, "split": "train"}, "shards": {"max_samples": 2000},
    }


def build_config(config_class: type, options: dict[str, Any], where: str) -> Any:
    """`config_class(**options)` with JSON lists turned into tuples, and unknown fields named with a suggestion."""
    fields = {f.name: f for f in dataclasses.fields(config_class) if f.init and not f.name.startswith("_")}
    hints = typing.get_type_hints(config_class)
    values = {}
    for key, value in options.items():
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known: {sorted(fields)}"
            raise ValueError(f"{where}: unknown option {key!r}{hint}")
        values[key] = _typed(value, hints.get(key))
    return config_class(**values)


def _typed(value: Any, hint: Any) -> Any:
    if hint is RetryPolicy and isinstance(value, dict):
        return build_config(RetryPolicy, value, "hosted.retry")
    if isinstance(value, list):
        return tuple(tuple(v) if isinstance(v, list) else v for v in value)
    return value


PRESETS = {
    "grounding_dino": {"name": "grounding_dino", "architecture": "grounding_dino",
                       "model": "IDEA-Research/grounding-dino-base"},
    "llmdet": {"name": "llmdet", "architecture": "mm_grounding_dino", "model": "iSEE-Laboratory/llmdet_large"},
}


def _detector(options: dict[str, Any], hosted_token: str | None) -> Any:
    options = dict(options)
    kind = options.pop("kind", None)
    if kind in PRESETS:
        return build_config(GroundingDinoDetector.Config, {**PRESETS[kind], **options}, f"recipe detectors[{kind}]")
    if kind == "hosted":
        config = build_config(HostedDetector.Config, options, "recipe detectors[hosted]")
        return dataclasses.replace(config, api_token=hosted_token) if hosted_token else config
    raise ValueError(f"recipe detectors: kind {kind!r} is not one of {DETECTOR_KINDS}")


def detector_configs(recipe: dict[str, Any], hosted_token: str | None = None) -> tuple[Any, ...]:
    """The detector stage configs of a recipe; their names must be unique (the audit keys on them)."""
    detectors = tuple(_detector(options, hosted_token) for options in recipe.get("detectors", []))
    if not detectors:
        raise ValueError("recipe detectors is empty: ask for at least one (--gdino, --llmdet, --hosted)")
    names = [d.name for d in detectors]
    if len(set(names)) != len(names):
        raise ValueError(f"recipe detectors have duplicate names {names}; give each a distinct 'name'")
    return detectors


def annotate_job(recipe: dict[str, Any], shards: str, output: str, *, hosted_token: str | None = None) -> Job:
    """The job grounding one robot dataset (a directory written by `vlaforge ingest`) into `output`."""
    unknown = [key for key in recipe if key not in SECTIONS]
    if unknown:
        raise ValueError(f"recipe: unknown sections {unknown}; known: {list(SECTIONS)}")
    name = pathlib.Path(shards).name
    detectors = detector_configs(recipe, hosted_token)
    settings = tuple((d.name, json.dumps(d.settings(), sort_keys=True)) for d in detectors)
    samples = build_config(GroundingSampleBuilder.Config,
                           {"dataset": f"grounding-{name}", "detector_settings": settings, **recipe.get("samples", {})},
                           "recipe samples")
    sam = recipe.get("sam")
    consensus_options = dict(recipe.get("consensus", {}))
    if sam is None:
        consensus_options.setdefault("mask_iou", None)  # no SAM stage: agreement is judged on boxes only
    stages = (
        build_config(FrameSelector.Config, {"dataset": name, **recipe.get("frames", {})}, "recipe frames"),
        build_config(PhraseStage.Config, _phrase_options(recipe.get("phrases", {})), "recipe phrases"),
        *detectors,
        *([build_config(SamMasker.Config, sam, "recipe sam")] if sam is not None else []),
        build_config(ConsensusStage.Config, consensus_options, "recipe consensus"),
        samples,
    )
    sink = VlDatasetSink.Config(dataset=samples.dataset, task=VlTask.GROUNDING,
                                shards=build_config(ShardConfig, recipe.get("shards", {}), "recipe shards"))
    return Job(
        source=build_config(RobotShardSource.Config, {"root": shards, **recipe.get("source", {})}, "recipe source"),
        stages=stages, sink=sink, output=output, items_per_batch=EPISODES_PER_BATCH,
    )


def _phrase_options(options: dict[str, Any]) -> dict[str, Any]:
    """`vlm` may be a backend spec ("local:DIR" or "http:URL", see `vlm_backends.backend_config`)."""
    if isinstance(options.get("vlm"), str):
        return {**options, "vlm": backend_config(options["vlm"])}
    return options


RUNTIME_KEYS = frozenset({"device", "batch_size", "max_boxes_per_pass", "concurrency", "requests_per_second",
                          "poll_interval_s", "retry", "api_token_block"})
"""Options that change how fast a run goes, not what it decides: a resumed run may change them."""


def recipe_digest(recipe: dict[str, Any]) -> str:
    """A short hash of the recipe (which never holds a secret)."""
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


def decisions_digest(recipe: dict[str, Any]) -> str:
    """A short hash of what decides the labels: the recipe without its `RUNTIME_KEYS`."""
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in RUNTIME_KEYS}
        return [strip(v) for v in value] if isinstance(value, list) else value

    return recipe_digest(strip(recipe))


def uses_hosted(recipe: dict[str, Any]) -> bool:
    return any(d.get("kind") == "hosted" for d in recipe.get("detectors", []))
