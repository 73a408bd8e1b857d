"""The grounding recipe: which detectors, SAM, frames, phrases and consensus thresholds, as one plain dict (what
the CLI builds and the `annotate` flow receives: JSON, so Prefect can record it) turned into a `Job`.

    {"detectors": [{"kind": "grounding_dino", "model": "..."}, {"kind": "llmdet", ...}, {"kind": "hosted", ...}],
     "sam": {"model": "..."} or None, "frames": {...}, "phrases": {...}, "consensus": {...}, "samples": {...},
     "source": {"shards_per_unit": 4, "split": "train"}, "shards": {"max_samples": 2000}}

Each section holds fields of one component's `Config` (`config_from_dict`: a misspelt field is answered with the
closest name); a detector entry's `kind` names its family in `detectors.py`. No secret ever goes in the recipe: the
hosted detector's token is passed separately (`hosted_token`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
from typing import Any

from vlaforge.annotators.consensus import ConsensusStage
from vlaforge.annotators.detection_table import DetectionTableSource, has_masks
from vlaforge.annotators.detectors import DETECTORS, detector_family
from vlaforge.annotators.frame_selection import FrameSelector
from vlaforge.annotators.grounding_samples import GroundingSampleBuilder
from vlaforge.annotators.phrases import PhraseStage
from vlaforge.annotators.sam_masks import SamMasker
from vlaforge.annotators.vlm_backends import backend_config
from vlaforge.datasets.configurable import config_from_dict
from vlaforge.datasets.schema import VlTask
from vlaforge.pipelines.job import Job
from vlaforge.pipelines.output_claim import RUNTIME_FIELDS
from vlaforge.pipelines.shards.robot_source import RobotShardSource
from vlaforge.pipelines.shards.writer import ShardConfig
from vlaforge.pipelines.vl_dataset import EPISODES_PER_BATCH, VlDatasetSink

SECTIONS = ("detectors", "sam", "frames", "phrases", "consensus", "samples", "source", "shards")
RECIPE_NAME = "annotate_recipe.json"


def default_recipe() -> dict[str, Any]:
    """The report's recipe: Grounded SAM (Grounding DINO + SAM), LLMDet and hosted Grounding DINO 1.5, 2 of 3."""
    return {
        "detectors": [{"kind": "grounding_dino"}, {"kind": "llmdet"}, {"kind": "hosted"}],
        "sam": {}, "frames": {}, "phrases": {}, "consensus": {}, "samples": {},
        "source": {"shards_per_unit": 4, "split": "train"}, "shards": {"max_samples": 2000},
    }


def _detector(options: dict[str, Any], hosted_token: str | None) -> Any:
    """One detector's config from its recipe entry: the family's preset, then the entry's options, then the token."""
    options = dict(options)
    kind = options.pop("kind", None)
    family = detector_family(kind)
    config = config_from_dict(family.config, {**family.preset, **options}, where=f"recipe detectors[{kind}]")
    if family.token_field and hosted_token:
        config = dataclasses.replace(config, **{family.token_field: hosted_token})
    return config


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
    samples = _section(recipe, "samples", GroundingSampleBuilder.Config, dataset=f"grounding-{name}",
                       detector_settings=settings)
    sam = recipe.get("sam")
    consensus_options = consensus_section(recipe, masks=sam is not None)
    stages = (
        _section(recipe, "frames", FrameSelector.Config, dataset=name),
        config_from_dict(PhraseStage.Config, _phrase_options(recipe.get("phrases", {})), where="recipe phrases"),
        *detectors,
        *([config_from_dict(SamMasker.Config, sam, where="recipe sam")] if sam is not None else []),
        config_from_dict(ConsensusStage.Config, consensus_options, where="recipe consensus"),
        samples,
    )
    sink = VlDatasetSink.Config(dataset=samples.dataset, task=VlTask.GROUNDING,
                                shards=_section(recipe, "shards", ShardConfig))
    return Job(
        source=_section(recipe, "source", RobotShardSource.Config, root=shards),
        stages=stages, sink=sink, output=output, items_per_batch=EPISODES_PER_BATCH,
    )


DETECTIONS_SECTIONS = ("sam", "consensus", "samples", "source", "shards")


def detections_job(recipe: dict[str, Any], detections: str, images: str, output: str) -> Job:
    """The job deciding over a table of precomputed detections (`detection_table.py`) into `output`: the same
    consensus, audit tables and grounding samples as a full run, without running a detector. `sam` (optional)
    masks the table's boxes; without it, masks are judged only when the table has them."""
    unknown = [key for key in recipe if key not in DETECTIONS_SECTIONS]
    if unknown:
        raise ValueError(f"recipe: sections {unknown} do not apply to precomputed detections; known: "
                         f"{list(DETECTIONS_SECTIONS)}")
    source = _section(recipe, "source", DetectionTableSource.Config, root=detections, images=images)
    name = detections_dataset(recipe, detections, images)
    sam = recipe.get("sam")
    samples = _section(recipe, "samples", GroundingSampleBuilder.Config, dataset=f"grounding-{name}")
    stages = (
        *([config_from_dict(SamMasker.Config, sam, where="recipe sam")] if sam is not None else []),
        config_from_dict(ConsensusStage.Config, consensus_section(recipe, masks=sam is not None or has_masks(
            detections)), where="recipe consensus"),
        samples,
    )
    sink = VlDatasetSink.Config(dataset=samples.dataset, task=VlTask.GROUNDING,
                                shards=_section(recipe, "shards", ShardConfig))
    return Job(source=source, stages=stages, sink=sink, output=output, items_per_batch=EPISODES_PER_BATCH)


def detections_dataset(recipe: dict[str, Any], detections: str, images: str) -> str:
    """The name a detections table's outputs go under (`<output>/<name>/`)."""
    return _section(recipe, "source", DetectionTableSource.Config, root=detections, images=images).build().dataset_name


def consensus_section(recipe: dict[str, Any], *, masks: bool) -> dict[str, Any]:
    """The consensus options; without masks (no SAM stage, no masks given) agreement is judged on boxes only, and a
    mask threshold asked for anyway is refused (it would send every agreed box to review as `missing_mask`)."""
    options = dict(recipe.get("consensus", {}))
    if masks:
        return options
    if options.get("mask_iou") is not None:
        raise ValueError(f"recipe consensus.mask_iou is {options['mask_iou']} but no masks exist (no SAM stage, no "
                         "mask column): masks cannot be judged; drop mask_iou for box-only consensus, or add SAM")
    return {**options, "mask_iou": None}


def _section(recipe: dict[str, Any], section: str, config_class: type, **defaults: Any) -> Any:
    """The config of one recipe section: `defaults`, overridden by the section's own options."""
    return config_from_dict(config_class, {**defaults, **recipe.get(section, {})}, where=f"recipe {section}")


def _phrase_options(options: dict[str, Any]) -> dict[str, Any]:
    """`vlm` may be a backend spec ("local:DIR" or "http:URL", see `vlm_backends.backend_config`)."""
    if isinstance(options.get("vlm"), str):
        return {**options, "vlm": backend_config(options["vlm"])}
    return options


RUNTIME_KEYS = RUNTIME_FIELDS
"""Options that change how fast a run goes, not what it decides: a resumed run may change them (the same set the
output's options record leaves out, `pipelines/output_claim.py`)."""


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
    """Whether a detector of the recipe takes the hosted API token (so the flow looks for one)."""
    return any(_takes_token(d.get("kind")) for d in recipe.get("detectors", []))


def _takes_token(kind: Any) -> bool:
    family = DETECTORS.get(kind) if isinstance(kind, str) else None  # an unknown kind is refused by annotate_job
    return family is not None and family.token_field is not None
