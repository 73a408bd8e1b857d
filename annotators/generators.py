"""The generators `vlaforge relabel --generator NAME` knows, by name. Adding one is one module (a `VlmGenerator`
with a nested `Config`) and one line here."""

from __future__ import annotations

from vlaforge.annotators.caption_generator import CaptionGenerator
from vlaforge.annotators.eqa_generator import EqaGenerator
from vlaforge.annotators.plan_generator import PlanGenerator
from vlaforge.annotators.trajectory_generator import TrajectoryGenerator
from vlaforge.annotators.vlm_generator import VlmGenerator
from vlaforge.annotators.vqa_generator import VqaGenerator
from vlaforge.datasets.configurable import lookup

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
    return lookup(GENERATORS, name, what="generator")
