"""The DeepSpeed ZeRO-2 trainer for real: DeepSpeed's CPU accelerator over gloo, `torchrun` processes, the tiny
random-weight Qwen3-VL + DiT, and `CorpusLoader` over the `small_corpus` fixture (two robot datasets and a VL one).

The first DeepSpeed launch on a machine JIT-builds a communication op (about 30 s, cached under
TORCH_EXTENSIONS_DIR); later launches take a few seconds each.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from vlaforge.training.collate import Batcher
from vlaforge.training.corpus_loader import CorpusLoader
from vlaforge.training.model import presets
from vlaforge.training.model.vla import VLAModel
from vlaforge.training.policy.policy import Policy
from vlaforge.training.robot_batches import RobotSampleTransform
from vlaforge.training.trainer import CHOICE_WEIGHTS, POLICY_DIR, TRAIN_LOG, checkpoint_tag
from vlaforge.training.trainer_config import Phase, TrainerConfig

pytestmark = pytest.mark.slow

CHUNK = 4  # the small_corpus fixture stores 4-step chunks
MODEL = dataclasses.replace(presets.vla_tiny(), dit=dataclasses.replace(presets.dit_tiny(), chunk_length=CHUNK))


def tiny_config(corpus, vlm_dir, output, **changes) -> TrainerConfig:
    loader = CorpusLoader.Config(
        corpus_url=str(corpus), processor=str(vlm_dir), num_workers=1,
        robot=RobotSampleTransform.Config(cameras=("exterior_1",), image_size=(32, 32), chunk_length=CHUNK),
        batch=Batcher.Config(batch_size=2))
    defaults = dict(phase=Phase.POSTTRAIN_SYNC, loader=loader, output_dir=str(output), vlm_dir=str(vlm_dir),
                    model=MODEL, choice=dataclasses.replace(presets_choice(), chunk_length=CHUNK),
                    lr=1e-3, max_steps=2, micro_batch_size=2, save_every=100, seed=11)
    return TrainerConfig(**{**defaults, **changes})


def presets_choice():
    from vlaforge.training.model.choice_policies import ChoicePoliciesConfig

    return ChoicePoliciesConfig(num_candidates=4)


def launch(config: TrainerConfig, nproc: int) -> list[dict]:
    """Train in `nproc` fresh processes (torchrun); the run's train_log.jsonl lines."""
    path = os.path.join(config.output_dir, "trainer_config.json")
    os.makedirs(config.output_dir, exist_ok=True)
    with open(path, "w") as file:
        json.dump(config.to_dict(), file)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr",
               "127.0.0.1", "--master_port", str(port), "-m", "vlaforge.training.train_main", "--config", path]
    env = dict(os.environ, DS_ACCELERATOR="cpu", OMP_NUM_THREADS="1")
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-8000:]
    return read_log(config.output_dir)


def read_log(output) -> list[dict]:
    with open(os.path.join(output, TRAIN_LOG)) as file:
        return [json.loads(line) for line in file]


def test_two_ranks_train_save_and_resume_to_the_same_losses(small_corpus, tiny_vlm_dir, tmp_path):
    full = tiny_config(small_corpus, tiny_vlm_dir, tmp_path / "full", phase=Phase.POSTTRAIN_ASYNC, max_steps=4,
                       save_every=2, gradient_accumulation=2, log_sample_keys=True)
    losses = launch(full, nproc=2)
    assert [r["step"] for r in losses] == [1, 2, 3, 4]
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["flow_matching"]) for r in losses)
    assert sum(r["robot_samples"] + r["vl_samples"] for r in losses) == 4 * 2 * 2 * 2  # steps x accum x batch x ranks
    ranks = [[json.loads(line) for line in open(tmp_path / "full" / "samples" / f"rank{r}.jsonl")] for r in (0, 1)]
    keys = [{key for line in lines for key in line["keys"]} for lines in ranks]
    assert len(keys[0]) == len(keys[1]) == 16 and not keys[0] & keys[1]

    # The checkpoint of step 2, alone in a fresh output directory, resumed by a fresh launch.
    resumed = tmp_path / "resumed"
    tag = checkpoint_tag(2)
    shutil.copytree(tmp_path / "full" / "checkpoints" / tag, resumed / "checkpoints" / tag)
    (resumed / "checkpoints" / "latest").write_text(tag)
    again = launch(dataclasses.replace(full, output_dir=str(resumed)), nproc=2)
    assert [r["step"] for r in again] == [3, 4]
    timeless = [[{k: v for k, v in r.items() if k != "seconds"} for r in run] for run in (losses[2:], again)]
    assert timeless[0] == timeless[1]  # bit for bit: losses, grad norms, sample counts

    exported = Policy.from_pretrained(tmp_path / "full" / POLICY_DIR)
    initial = VLAModel.from_vlm_pretrained(str(tiny_vlm_dir), MODEL)
    assert changed(initial.vlm, exported.model.vlm) and set(exported.stats) == {"arm_a", "arm_b"}


def changed(before: torch.nn.Module, after: torch.nn.Module) -> bool:
    """Whether any parameter of `after` differs from the same-named one of `before`."""
    reference = dict(before.named_parameters())
    return any(not torch.equal(reference[name], value) for name, value in after.named_parameters())
