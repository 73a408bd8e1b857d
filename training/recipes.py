"""Named training recipes: each a function returning a frozen `TrainerConfig`, in one explicit registry.

    config = recipes.build("posttrain_async", RunLocation(corpus="s3://b/corpus.json", init_policy="/runs/step2/policy",
                                                          output="/runs/post"), {"max_steps": 80_000})

A recipe holds every knob of a phase (the model, flow matching, the prefix draws and loss weights, the Λ window, the
optimizer and schedule, the batch, the loader); `RunLocation` says where the run reads and writes; `--set key=value`
(`config_overrides.apply_overrides`) changes any field by its dotted path. The report-scale recipes carry the
report's batch sizes and step counts; the `_tiny` ones run on this CPU (tests, the demo, benchmarks). Numbers the
report and the release do not give are ours and say so.

- `step1_choice`: 40k steps at batch 32,768, AdamW, ZeRO-2, VL co-training (the 1:6 is the corpus's); ours: N = 8,
  lr 1e-4 with cosine decay after 1k warm-up steps.
- `step2_dit`: 40k steps at batch 32,768, τ from Beta(1.5, 1), 5 sampling steps, 4 noise draws per VLM pass;
  robot data only; ours: the lr schedule.
- `posttrain_sync`: 40k steps at batch 2,048 on robot data only, the token embeddings frozen (the release); ours:
  lr 5e-5 with cosine decay.
- `posttrain_async`: as sync, plus the Λ mask (w = 4), prefixes for half the samples of a length in 1..6, prefix
  keys hidden with probability 0.5 keeping the last 2, sampled loss weights per element in [0.5, 5] (the release).
- `posttrain_async_training_rtc`: the ablation "training RTC", prefixes under the causal mask.
- `posttrain_async_paper`: the paper's text, Δtc uniform over {0..6} and weights per sample.
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Callable, Mapping
from typing import Any

from vlaforge.datasets.configurable import lookup
from vlaforge.pipelines.shards.urls import ShardOpener
from vlaforge.training.config_overrides import apply_overrides
from vlaforge.training.data.collate import Batcher
from vlaforge.training.data.corpus_loader import CorpusLoader
from vlaforge.training.data.corpus_stream import CorpusStream
from vlaforge.training.data.robot_transform import RobotSampleTransform
from vlaforge.training.model import presets
from vlaforge.training.model.choice_policies import ChoicePoliciesConfig
from vlaforge.training.model.masks import AttentionKind
from vlaforge.training.model.phase import Phase
from vlaforge.training.model.vla import VLAConfig
from vlaforge.training.trainer_config import LrDecay, TrainerConfig

REPORT_STEPS = 40_000
PRETRAIN_BATCH = 32_768
POSTTRAIN_BATCH = 2_048
FROZEN_EMBEDDINGS = ("model.vlm.model.model.language_model.embed_tokens.*",)
"""The release's post-training keeps the VLM's token embeddings frozen."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunLocation:
    """Where one run reads and writes: not part of a recipe, given per run."""

    corpus: str
    """The corpus manifest: a path, file://, http(s):// or s3:// URL."""
    output: str
    """Checkpoints, logs and the exported policy."""
    vlm: str | None = None
    """A Qwen3-VL (local directory or hub id) to start from with a fresh DiT: step 1, or step 2 from step 1's
    `policy/vlm`."""
    init_policy: str | None = None
    """A policy directory to start from (post-training)."""
    processor: str | None = None
    """The Qwen3-VL processor (default: the VLM's directory, or the policy's `vlm/`)."""
    s3_endpoint_url: str | None = None
    """An S3-compatible endpoint for s3:// URLs (credentials come from the environment, never from here)."""

    def __post_init__(self) -> None:
        if (self.vlm is None) == (self.init_policy is None):
            raise ValueError(f"RunLocation needs exactly one of vlm (a Qwen3-VL to start from) and init_policy (a "
                             f"policy directory), got vlm={self.vlm!r}, init_policy={self.init_policy!r}")

    @property
    def processor_path(self) -> str:
        return self.processor or self.vlm or str(pathlib.Path(self.init_policy) / "vlm")


def _config(where: RunLocation, *, phase: Phase, model: VLAConfig, image_size: tuple[int, int], workers: int,
            choice: ChoicePoliciesConfig | None = None, **trainer: Any) -> TrainerConfig:
    """A `TrainerConfig` whose model, Choice Policies head and loader share the model's chunk length."""
    chunk = model.dit.chunk_len
    s3 = {"endpoint_url": where.s3_endpoint_url} if where.s3_endpoint_url else {}
    loader = CorpusLoader.Config(
        corpus_url=where.corpus, processor=where.processor_path, num_workers=workers,
        robot=RobotSampleTransform.Config(image_size=image_size, chunk_len=chunk),
        batch=Batcher.Config(batch_size=trainer.get("micro_batch_size", 32)),
        stream=CorpusStream.Config(opener=ShardOpener.Config(s3_options=s3)))
    choice = dataclasses.replace(choice or ChoicePoliciesConfig(), chunk_len=chunk)
    return TrainerConfig(phase=phase, loader=loader, output_dir=where.output, vlm_dir=where.vlm,
                         init_policy=where.init_policy, model=model, choice=choice, **trainer)


def _report_model(training_repeat: int = 4) -> VLAConfig:
    """The report's model (Qwen3-VL-4B + 16-layer DiT, T = 30) with the release's 4 noise draws per VLM pass."""
    model = presets.report_scale()
    return dataclasses.replace(model, flow=dataclasses.replace(model.flow, training_repeat=training_repeat))


def _report(where: RunLocation, phase: Phase, **trainer: Any) -> TrainerConfig:
    """What the report-scale recipes share (ours where the report is silent: 224x224 frames, 8 loader workers,
    cosine decay with 1k warm-up, activation checkpointing, 16 samples per GPU)."""
    settings = dict(model=_report_model(), image_size=(224, 224), workers=8, micro_batch_size=16,
                    max_steps=REPORT_STEPS, warmup_steps=1000, lr_decay=LrDecay.COSINE, min_lr_ratio=0.1,
                    activation_checkpointing=True, save_every=1000, eval_every=2000, eval_max_batches=50)
    return _config(where, phase=phase, **{**settings, **trainer})


def step1_choice(where: RunLocation) -> TrainerConfig:
    """Pre-training step 1: the VLM learns actions with Choice Policies (N = 8), co-trained on VL samples."""
    return _report(where, Phase.STEP1_CHOICE, global_batch_size=PRETRAIN_BATCH, lr=1e-4,
                   choice=ChoicePoliciesConfig(num_candidates=8))


def step2_dit(where: RunLocation) -> TrainerConfig:
    """Pre-training step 2: the DiT from scratch on the frozen VLM, robot data only."""
    return _report(where, Phase.STEP2_DIT, global_batch_size=PRETRAIN_BATCH, lr=1e-4, micro_batch_size=32,
                   activation_checkpointing=False)


def posttrain_sync(where: RunLocation) -> TrainerConfig:
    """Synchronous post-training on the robot's own data: everything trains but the token embeddings."""
    return _report(where, Phase.POSTTRAIN_SYNC, global_batch_size=POSTTRAIN_BATCH, lr=5e-5, warmup_steps=500,
                   freeze=FROZEN_EMBEDDINGS)


def posttrain_async(where: RunLocation) -> TrainerConfig:
    """Asynchronous post-training: clean action prefixes, the Λ mask (w = 4), error-weighted loss (the release's
    defaults, `model/action_prefix.py`)."""
    return _report(where, Phase.POSTTRAIN_ASYNC, global_batch_size=POSTTRAIN_BATCH, lr=5e-5, warmup_steps=500,
                   freeze=FROZEN_EMBEDDINGS, model=dataclasses.replace(_report_model(), attention=AttentionKind.LAMBDA))


def posttrain_async_training_rtc(where: RunLocation) -> TrainerConfig:
    """The paper's "training RTC" ablation: asynchronous post-training with the causal mask instead of Λ."""
    return dataclasses.replace(posttrain_async(where), attention=AttentionKind.CAUSAL)


def posttrain_async_paper(where: RunLocation) -> TrainerConfig:
    """Asynchronous post-training as the paper's text has it: Δtc uniform over {0, ..., 6} for every sample, the
    loss weighted per sample."""
    config = posttrain_async(where)
    prefix = dataclasses.replace(config.model.prefix, async_probability=1.0, prefix_lengths=tuple(range(7)),
                                 weight_per="sample")
    return dataclasses.replace(config, model=dataclasses.replace(config.model, prefix=prefix))


def _tiny(where: RunLocation, phase: Phase, **trainer: Any) -> TrainerConfig:
    """The tiny model (2-layer DiT, 8-action chunks) on 64x64 frames: a few steps on a CPU in seconds."""
    model = presets.vla_tiny()
    model = dataclasses.replace(model, flow=dataclasses.replace(model.flow, training_repeat=2))
    settings = dict(model=model, image_size=(64, 64), workers=1, micro_batch_size=4, max_steps=20, lr=1e-3,
                    save_every=10, choice=ChoicePoliciesConfig(num_candidates=4))
    return _config(where, phase=phase, **{**settings, **trainer})


def step1_choice_tiny(where: RunLocation) -> TrainerConfig:
    return _tiny(where, Phase.STEP1_CHOICE)


def step2_dit_tiny(where: RunLocation) -> TrainerConfig:
    return _tiny(where, Phase.STEP2_DIT)


def posttrain_sync_tiny(where: RunLocation) -> TrainerConfig:
    return _tiny(where, Phase.POSTTRAIN_SYNC, freeze=FROZEN_EMBEDDINGS)


def posttrain_async_tiny(where: RunLocation) -> TrainerConfig:
    return _tiny(where, Phase.POSTTRAIN_ASYNC, freeze=FROZEN_EMBEDDINGS)


Recipe = Callable[[RunLocation], TrainerConfig]

RECIPES: dict[str, Recipe] = {
    "step1_choice": step1_choice,
    "step2_dit": step2_dit,
    "posttrain_sync": posttrain_sync,
    "posttrain_async": posttrain_async,
    "posttrain_async_training_rtc": posttrain_async_training_rtc,
    "posttrain_async_paper": posttrain_async_paper,
    "step1_choice_tiny": step1_choice_tiny,
    "step2_dit_tiny": step2_dit_tiny,
    "posttrain_sync_tiny": posttrain_sync_tiny,
    "posttrain_async_tiny": posttrain_async_tiny,
}
"""Recipe name -> the function that builds it. Explicit: the list of runnable recipes is readable here."""


def build(name: str, where: RunLocation, overrides: Mapping[str, Any] | None = None) -> TrainerConfig:
    """The recipe `name` for this run, with `overrides` (dotted path -> value) applied; an unknown name is answered
    with the closest one."""
    config = lookup(RECIPES, name, what="recipe")(where)
    return apply_overrides(config, overrides) if overrides else config


def phase_of(name: str) -> Phase:
    """The phase recipe `name` trains (a recipe is built at a placeholder location: building reads no file)."""
    return lookup(RECIPES, name, what="recipe")(RunLocation(corpus="-", output="-", vlm="-")).phase
