"""How a corpus's counts scale to a training run: draws and epochs per component for `steps` x `batch_size` samples.

The draw share of a component is its kind's share of the VL:robot ratio times its weight within the kind; over a
run it is drawn `share x steps x batch_size` times, which is that many samples over its size in epochs. The recipe's
pre-training is 40k steps at batch 32,768 (RECIPE.md), the defaults here.
"""

from __future__ import annotations

import dataclasses

from vlaforge.pipelines.corpus_manifest import CorpusManifest

RECIPE_STEPS = 40_000
RECIPE_BATCH = 32_768


@dataclasses.dataclass(frozen=True)
class PlanRow:
    component: str
    kind: str
    shards: int
    samples: int
    weight: float
    """Share of its kind's draws."""
    draw_share: float
    """Share of all draws."""
    draws: int
    """Samples drawn from it over the run."""
    epochs: float
    """Times each of its samples is seen over the run."""


def scale_plan(manifest: CorpusManifest, *, split: str = "train", steps: int = RECIPE_STEPS,
               batch_size: int = RECIPE_BATCH) -> list[PlanRow]:
    """One row per component with samples in `split`, in manifest order."""
    if steps < 1 or batch_size < 1:
        raise ValueError(f"scale_plan needs steps >= 1 and batch_size >= 1, got {steps} and {batch_size}")
    present = [c for c in manifest.components if c.samples_of(split) > 0]
    kinds = {c.kind.value for c in present}
    ratio_total = sum(v for k, v in manifest.ratio.items() if k in kinds)
    kind_weight = {k: sum(c.weight for c in present if c.kind.value == k) for k in kinds}
    rows = []
    for component in present:
        kind = component.kind.value
        share = manifest.ratio[kind] / ratio_total * component.weight / kind_weight[kind]
        samples = component.samples_of(split)
        draws = round(share * steps * batch_size)
        rows.append(PlanRow(component=component.name, kind=kind, shards=len(component.shards_of(split)),
                            samples=samples, weight=component.weight, draw_share=share, draws=draws,
                            epochs=draws / samples))
    return rows
