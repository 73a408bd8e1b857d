"""The detector families a grounding recipe can ask for (`{"kind": ..., **options}` in its `detectors` list), by
kind. Adding a family is one module (a detector `Stage` with a nested `Config`) and one line here."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from vlaforge.annotators.grounding_dino import GroundingDinoDetector
from vlaforge.annotators.hosted_detector import HostedDetector
from vlaforge.annotators.owl_detector import OwlDetector
from vlaforge.datasets.configurable import lookup
from vlaforge.pipelines.stage import StageConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class DetectorFamily:
    """One registry entry: the detector's config class, and what a recipe gets without saying more."""

    config: type[StageConfig]
    """The detector stage's `Config`; a recipe entry's options are its fields."""
    preset: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    """Options set before the recipe entry's own (which override them): what makes this family of that class."""
    token_field: str | None = None
    """The `Config` field that takes the API token passed beside the recipe (never in it); None: needs no token."""

    def __post_init__(self) -> None:
        fields = {field.name for field in dataclasses.fields(self.config)}
        named = [*self.preset, *([self.token_field] if self.token_field else [])]
        unknown = [name for name in named if name not in fields]
        if unknown:
            raise ValueError(f"DetectorFamily({self.config.__qualname__}): preset or token_field names {unknown}, "
                             "which are not fields of that config")


DETECTORS: dict[str, DetectorFamily] = {
    "grounding_dino": DetectorFamily(config=GroundingDinoDetector.Config, preset={
        "name": "grounding_dino", "architecture": "grounding_dino", "model": "IDEA-Research/grounding-dino-base"}),
    "llmdet": DetectorFamily(config=GroundingDinoDetector.Config, preset={
        "name": "llmdet", "architecture": "mm_grounding_dino", "model": "iSEE-Laboratory/llmdet_large"}),
    "owlv2": DetectorFamily(config=OwlDetector.Config, preset={
        "name": "owlv2", "architecture": "owlv2", "model": "google/owlv2-base-patch16-ensemble"}),
    "owlvit": DetectorFamily(config=OwlDetector.Config, preset={
        "name": "owlvit", "architecture": "owlvit", "model": "google/owlvit-base-patch32"}),
    "hosted": DetectorFamily(config=HostedDetector.Config, token_field="api_token"),
}


def detector_family(kind: str) -> DetectorFamily:
    """The family registered under `kind`, or a ValueError suggesting the closest kind."""
    return lookup(DETECTORS, kind, what="detector kind")
