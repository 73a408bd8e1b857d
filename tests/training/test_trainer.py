"""The DeepSpeed ZeRO-2 trainer for real: DeepSpeed's CPU accelerator over gloo, the tiny random-weight Qwen3-VL + DiT,
and `CorpusLoader` over the `small_corpus` fixture (two robot datasets and a VL one).

Each phase runs in this process as a 1-rank job (`train_main.run(single_process=True)`, a gloo group over a file
store); `tests/flows/test_train_cli.py` runs 2 ranks through torchrun. The first DeepSpeed start on a machine
JIT-builds a communication op (about 30 s, cached under TORCH_EXTENSIONS_DIR).
"""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch
from safetensors.torch import load_file

from vlaforge.training import train_main
from vlaforge.training.data.collate import Batcher
from vlaforge.training.data.corpus_loader import CorpusLoader
from vlaforge.training.data.robot_transform import RobotSampleTransform
from vlaforge.training.model import presets
from vlaforge.training.model.choice_policies import ChoicePoliciesConfig
from vlaforge.training.model.phase import Phase
from vlaforge.training.model.vla import VLAModel
from vlaforge.training.policy.policy import Policy
from vlaforge.training.trainer import CHOICE_WEIGHTS, POLICY_DIR, RUN_FILE, TIMING_FIELDS, TRAIN_LOG
from vlaforge.training.trainer_config import TrainerConfig

pytestmark = pytest.mark.slow

CHUNK = 4  # the small_corpus fixture stores 4-step chunks
MODEL = dataclasses.replace(presets.vla_tiny(), dit=dataclasses.replace(presets.dit_tiny(), chunk_len=CHUNK))


def tiny_config(corpus, vlm_dir, output, **changes) -> TrainerConfig:
    loader = CorpusLoader.Config(
        corpus_url=str(corpus), processor=str(vlm_dir), num_workers=1,
        robot=RobotSampleTransform.Config(cameras=("exterior_1",), image_size=(32, 32), chunk_len=CHUNK),
        batch=Batcher.Config(batch_size=2))
    defaults = dict(phase=Phase.POSTTRAIN_SYNC, loader=loader, output_dir=str(output), vlm_dir=str(vlm_dir),
                    model=MODEL, choice=ChoicePoliciesConfig(num_candidates=4, chunk_len=CHUNK),
                    lr=1e-3, max_steps=2, micro_batch_size=2, save_every=100, seed=11)
    return TrainerConfig(**{**defaults, **changes})


def train(config: TrainerConfig) -> list[dict]:
    """Train in this process as a 1-rank DeepSpeed job (what `vlaforge train --nproc 1` does); the log's lines."""
    train_main.run(config, single_process=True)
    with open(os.path.join(config.output_dir, TRAIN_LOG)) as file:
        return [json.loads(line) for line in file]


def changed(before: torch.nn.Module, after: torch.nn.Module) -> bool:
    """Whether any parameter of `after` differs from the same-named one of `before`."""
    reference = dict(before.named_parameters())
    return any(not torch.equal(reference[name], value) for name, value in after.named_parameters())


def fresh_dit(vlm_dir, seed: int) -> torch.nn.Module:
    """The DiT a trainer seeded with `seed` starts from (its weights are drawn right after seeding)."""
    torch.manual_seed(seed)
    return VLAModel.from_vlm_pretrained(str(vlm_dir), MODEL).dit


def test_each_phase_trains_exactly_its_parameters_along_the_recipe(small_corpus, tiny_vlm_dir, tmp_path):
    """Step 1 from the tiny Qwen3-VL, step 2 from step 1's VLM, then sync and async post-training, each from the
    previous phase's exported policy: one process each, 2 optimizer steps, no weight decay (so only gradients move
    weights)."""
    base = tiny_config(small_corpus, tiny_vlm_dir, tmp_path / "step1", phase=Phase.STEP1_CHOICE, weight_decay=0.0,
                       micro_batch_size=3, seed=5)
    step1_log = train(base)
    step1 = Policy.from_pretrained(tmp_path / "step1" / POLICY_DIR)
    assert json.loads((tmp_path / "step1" / RUN_FILE).read_text())["precision"] == "fp32"  # auto, on the CPU
    first = step1_log[0]
    assert first["choice"] == pytest.approx(first["choice_action"] + first["choice_score"], rel=1e-4)
    assert 0 <= first["data_wait_share"] < 1 and first["samples_per_s"] > 0 and first["tokens_per_s"] > 0
    assert first["tflops"] > 0 and first["mfu"] is None  # no known peak for a CPU
    assert_tensorboard_has(tmp_path / "step1", [r["loss"] for r in step1_log])
    assert step1.normalize == CorpusLoader(base.loader).normalize  # the policy inverts what the loader normalized
    assert any(r["choice"] is not None for r in step1_log) and any(r["next_token"] is not None for r in step1_log)
    assert changed(initial_vlm(tiny_vlm_dir), step1.model.vlm)
    assert not changed(fresh_dit(tiny_vlm_dir, 5), step1.model.dit)
    head = load_file(tmp_path / "step1" / POLICY_DIR / CHOICE_WEIGHTS)
    assert {"action_tokens", "score_token", "action_out.weight"} <= set(head)

    step1_vlm = tmp_path / "step1" / POLICY_DIR / "vlm"
    step2_log = train(dataclasses.replace(base, phase=Phase.STEP2_DIT, vlm_dir=str(step1_vlm),
                                          output_dir=str(tmp_path / "step2")))
    step2 = Policy.from_pretrained(tmp_path / "step2" / POLICY_DIR)
    # Step 2 trains on robot data only: the loader reads no VL sample, and the frozen VLM does not move.
    assert all(r["vl_samples"] == 0 and r["next_token"] is None for r in step2_log)
    assert not changed(step1.model.vlm, step2.model.vlm)
    assert changed(fresh_dit(step1_vlm, 5), step2.model.dit)

    previous, previous_dir = step2, tmp_path / "step2"
    for phase in (Phase.POSTTRAIN_SYNC, Phase.POSTTRAIN_ASYNC):
        output = tmp_path / phase.value
        train(dataclasses.replace(base, phase=phase, vlm_dir=None, init_policy=str(previous_dir / POLICY_DIR),
                                  output_dir=str(output)))
        policy = Policy.from_pretrained(output / POLICY_DIR)
        assert changed(previous.model.vlm, policy.model.vlm) and changed(previous.model.dit, policy.model.dit)
        previous, previous_dir = policy, output
    assert previous.model.config.attention.value == "lambda"  # the async policy samples with the Λ mask


def assert_tensorboard_has(output, losses) -> None:
    """The run's TensorBoard event files hold each step's loss and the data wait."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(output / "tensorboard"))
    events.Reload()
    assert {"train/loss", "train/data_wait", "train/samples_per_s", "train/lr"} <= set(events.Tags()["scalars"])
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(losses, rel=1e-6)


def initial_vlm(vlm_dir) -> torch.nn.Module:
    """The tiny Qwen3-VL as saved."""
    return VLAModel.from_vlm_pretrained(str(vlm_dir), MODEL).vlm


def test_step_2_checkpoints_leave_the_frozen_vlm_out_and_resume_exactly(small_corpus, tiny_vlm_dir, tmp_path):
    """The VLM is most of the model and never changes in step 2: its checkpoints hold the DiT (and its optimizer
    state) only, and a run resumed from one repeats the uninterrupted run's steps bit for bit."""
    from vlaforge.training.checkpoint_engine import SafeCheckpointEngine

    config = tiny_config(small_corpus, tiny_vlm_dir, tmp_path / "whole", phase=Phase.STEP2_DIT, max_steps=3,
                         save_every=2)
    whole = train(config)
    files = sorted((tmp_path / "whole" / "checkpoints" / "step00000002").glob("*model_states.pt"))
    saved = SafeCheckpointEngine(None).load(str(files[0]))["module"]
    # DeepSpeed drops frozen parameters by their deduplicated names, so the output embedding, tied to the frozen
    # input embedding, stays: one matrix of the VLM instead of all of it.
    assert {name for name in saved if not name.startswith("model.dit.")} == {"model.vlm.model.lm_head.weight"}
    assert any(name.startswith("model.dit.") for name in saved)

    cut = tmp_path / "cut"
    train(dataclasses.replace(config, output_dir=str(cut), max_steps=2))
    resumed = train(dataclasses.replace(config, output_dir=str(cut)))
    assert [r["step"] for r in resumed] == [1, 2, 3]
    drop = TIMING_FIELDS
    assert [{k: v for k, v in r.items() if k not in drop} for r in resumed] == [
        {k: v for k, v in r.items() if k not in drop} for r in whole]


def test_validation_passes_read_the_held_out_split_and_log_comparable_losses(droid_shards, tiny_vlm_dir, tmp_path):
    """With eval_every, each pass reads the corpus's validation split (DROID's held-out episodes and the VL samples
    held out), forward only: the weights do not move for it, and an untrained model gives the same losses twice."""
    from vlaforge.flows.sample_data.vl_dataset import write_vl_dataset
    from vlaforge.pipelines.corpus_manifest import ComponentKind, CorpusConfig, CorpusInput, build_corpus, write_corpus
    from vlaforge.training.trainer import EVAL_LOG

    vl = write_vl_dataset(tmp_path / "vl", n_samples=24, image_size=(32, 32), shard_samples=8,
                          validation_fraction=0.5)
    corpus = tmp_path / "corpus.json"
    write_corpus(build_corpus([CorpusInput(path=droid_shards[0], kind=ComponentKind.ROBOT, name="droid"),
                               CorpusInput(path=vl, kind=ComponentKind.VL, name="captions")], corpus,
                              CorpusConfig(seed=2)), corpus)
    config = tiny_config(corpus, tiny_vlm_dir, tmp_path / "run", phase=Phase.POSTTRAIN_SYNC, lr=0.0,
                         weight_decay=0.0, max_steps=2, eval_every=1, micro_batch_size=8, vl_co_training=True)
    train(config)
    passes = [json.loads(line) for line in (tmp_path / "run" / EVAL_LOG).read_text().splitlines()]
    assert [p["step"] for p in passes] == [1, 2]
    assert all(p["robot_samples"] > 0 and p["vl_samples"] > 0 for p in passes)
    assert all(p["flow_matching"] is not None and p["next_token"] is not None for p in passes)
    assert passes[0]["loss"] == passes[1]["loss"]  # lr 0: same weights, same batches, same seeded noise


def test_zero_2_with_the_optimizer_offloaded_and_overlapped_reduction_trains_as_plain_zero_2(
        small_corpus, tiny_vlm_dir, tmp_path):
    """ZeRO-Offload (the fp32 master weights and Adam states on the CPU, stepped by DeepSpeed's CPU Adam, whose op
    is JIT-built on first use: about 2 minutes, cached under TORCH_EXTENSIONS_DIR) and `overlap_comm` change where
    the optimizer runs and when gradients are reduced, not what the model learns: 3 steps give plain ZeRO-2's
    losses."""
    base = tiny_config(small_corpus, tiny_vlm_dir, tmp_path / "plain", phase=Phase.STEP2_DIT, max_steps=3,
                       export=False)
    plain = train(base)
    offloaded = train(dataclasses.replace(base, output_dir=str(tmp_path / "offload"), offload_optimizer=True,
                                          overlap_comm=True))
    run = json.loads((tmp_path / "offload" / RUN_FILE).read_text())
    assert run["optimizer"] == "DeepSpeedCPUAdam" and run["zero_optimization"]["stage"] == 2
    assert run["zero_optimization"]["offload_optimizer"]["device"] == "cpu" and run["zero_optimization"]["overlap_comm"]
    assert json.loads((tmp_path / "plain" / RUN_FILE).read_text())["optimizer"] == "AdamW"
    assert [r["loss"] for r in offloaded] == pytest.approx([r["loss"] for r in plain], rel=1e-4)
    assert plain[2]["loss"] != plain[0]["loss"]  # the steps did move the weights
