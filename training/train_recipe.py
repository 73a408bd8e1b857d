"""Build a training run from plain options (what `vlaforge train` parses, and what benchmarks pass in).

The twin of `pipelines/ingest_recipe.py` for training: the model preset and its chunk length, a corpus loader whose
robot transform slices that chunk, and every other `TrainerConfig` field passed through as given.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

from vlaforge.datasets.configurable import lookup
from vlaforge.pipelines.shards.urls import ShardOpener
from vlaforge.training.data.bad_samples import BadSampleBudget, BadSamplePolicy
from vlaforge.training.data.collate import Batcher
from vlaforge.training.data.corpus_loader import CorpusLoader
from vlaforge.training.data.corpus_stream import CorpusStream
from vlaforge.training.data.robot_transform import RobotSampleTransform
from vlaforge.training.model import presets
from vlaforge.training.model.choice_policies import ChoicePoliciesConfig
from vlaforge.training.trainer_config import TrainerConfig

MODEL_PRESETS = {"tiny": presets.vla_tiny, "report": presets.report_scale}
"""Model presets by name: `tiny` (tests, the demo, benchmarks) and `report` (the report's 16-layer DiT)."""


def build_trainer_config(*, phase: str, corpus: str, output: str | pathlib.Path, vlm: str | None = None,
                         init_policy: str | None = None, processor: str | None = None, model: str = "report",
                         chunk_len: int | None = None, image_size: tuple[int, int] = (224, 224),
                         cameras: tuple[str, ...] | None = None, workers: int = 2, micro_batch_size: int = 32,
                         s3_endpoint_url: str | None = None, on_bad_sample: str = "raise",
                         max_bad_fraction: float = 0.01, **trainer: Any) -> TrainerConfig:
    """The `TrainerConfig` of one run.

    `model` names the DiT preset; `chunk_len` (default: the preset's) is the action chunk T, used by the model, the
    Choice Policies head and the loader alike. The processor defaults to the VLM's directory (or the policy's
    `vlm/`). `on_bad_sample` ("raise" or "skip") and `max_bad_fraction` are the loader's bad-sample policy and
    budget (`training/data/bad_samples.py`). `trainer` holds further `TrainerConfig` fields (`lr`, `max_steps`,
    `precision`, ...).
    """
    vla = lookup(MODEL_PRESETS, model, what="model preset")()
    if chunk_len:
        vla = dataclasses.replace(vla, dit=dataclasses.replace(vla.dit, chunk_len=chunk_len))
    chunk = vla.dit.chunk_len
    robot = RobotSampleTransform.Config(image_size=tuple(image_size), chunk_len=chunk,
                                        **({"cameras": tuple(cameras)} if cameras else {}))
    if processor is None and vlm is None and init_policy is None:
        raise ValueError("give vlm (a Qwen3-VL to start from) or init_policy (a policy directory to start from)")
    s3 = {"endpoint_url": s3_endpoint_url} if s3_endpoint_url else {}
    loader = CorpusLoader.Config(
        corpus_url=corpus, processor=processor or vlm or str(pathlib.Path(init_policy) / "vlm"), robot=robot,
        num_workers=workers, batch=Batcher.Config(batch_size=micro_batch_size),
        stream=CorpusStream.Config(opener=ShardOpener.Config(s3_options=s3)),
        bad_samples=BadSamplePolicy(on_bad_sample), bad_sample_budget=BadSampleBudget(max_fraction=max_bad_fraction))
    return TrainerConfig(phase=phase, loader=loader, output_dir=str(output), vlm_dir=vlm, init_policy=init_policy,
                         model=vla, choice=ChoicePoliciesConfig(chunk_len=chunk), micro_batch_size=micro_batch_size,
                         **trainer)
