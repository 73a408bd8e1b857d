"""`Trainer`: the VLA model on DeepSpeed ZeRO, fed by `CorpusLoader`, one phase of the recipe per run.

    trainer = Trainer(config, rank=rank, world_size=world_size)   # inside torch.distributed (train_main.py)
    trainer.setup()                                               # model, engine, loader; resumes if it can
    trainer.train()                                               # up to config.max_steps optimizer steps
    trainer.export()                                              # rank 0: output_dir/policy/

One optimizer step is `accumulation(world_size)` micro batches of `micro_batch_size` samples per rank. Every micro
batch reseeds torch from (seed, rank, step, micro batch), so the flow-matching noise, τ and prefix draws of a step do
not depend on what ran before it: a resumed run repeats the uninterrupted one exactly.

Devices. The model, every batch tensor and every collective's tensor live on the engine's device (`engine.device`:
a CUDA GPU under NCCL, the CPU under gloo): NCCL reduces only CUDA tensors. The run's precision is resolved once
(`Precision.resolve`: bf16 on a GPU that has it, fp32 on the CPU); the VLM loads in it, the DiT and the Choice
Policies head are cast to it, and a model whose parameters still mix dtypes is refused before DeepSpeed sees it.

What `output_dir` holds:
- `checkpoints/<tag>/`: DeepSpeed's files (model states of the trainable parameters from rank 0, each rank's ZeRO
  optimizer partition), `client_state={"step": n}`, and `loader_rank<r>.json`, each rank's
  `CorpusLoader.state_dict()`. The loader states are files of their own because only data-parallel rank 0 writes
  DeepSpeed's model-states file, which carries the client state: another rank's would be lost.
  `checkpoints/latest` names the newest tag (DeepSpeed writes it last). Read back with `weights_only=True`.
- `train_log.jsonl` (rank 0): one line per optimizer step: every loss component averaged over micro batches and
  ranks, samples of each kind, tokens, lr, grad norm, step seconds, seconds waiting for data (mean rank) and its
  share of the step, samples/s, tokens/s, model TFLOP/s and the MFU estimate (`flops.py`; None where the device's
  peak is unknown), and rank 0's peak memory. The same numbers go to TensorBoard (`tensorboard/`, `metrics_log.py`).
- `eval_log.jsonl` (rank 0, with `eval_every`): one line per validation pass, its mean losses over all ranks.
- `run.json` (rank 0): the resolved precision, world size, device and parameter counts of this launch.
- `samples/rank<r>.jsonl` (with `log_sample_keys`): the sample keys each rank trained on, per step.
- `policy/` (`export()`): a directory `Policy.from_pretrained` loads; after step 1 also the Choice Policies head.
- `policy_evals/step<N>/policy/` and `policy_eval_log.jsonl` (rank 0, with `policy_eval_every`): the policy of every
  K-th step, handed to the policy callback (for example a closed-loop simulation run), and the metrics it returned.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import shutil
import sys
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import save_file
from tqdm import tqdm

from vlaforge.pipelines.object_mirror import mirror_of
from vlaforge.training import flops
from vlaforge.training.checkpoint_engine import SafeCheckpointEngine
from vlaforge.training.data.collate import CorpusBatch
from vlaforge.training.data.corpus_loader import CorpusLoader
from vlaforge.training.metrics_log import EVAL_LOG, TRAIN_LOG, MetricsLog, append_line, truncate_after
from vlaforge.training.model.phase import Phase
from vlaforge.training.model.vla import RobotBatch, VLAModel
from vlaforge.training.model.vlm import ATTENTION_MASK, PIXEL_VALUES
from vlaforge.training.phase_model import (
    CHOICE,
    CHOICE_ACTION,
    CHOICE_SCORE,
    FLOW_MATCHING,
    LOSS,
    LOSS_WEIGHT,
    NEXT_TOKEN,
    PhaseModel,
)
from vlaforge.training.policy.policy import Policy
from vlaforge.training.policy_eval_command import PolicyCallback, PolicyEvalCommand
from vlaforge.training.step_tally import StepTally
from vlaforge.training.trainer_config import Precision, TrainerConfig, deepspeed_config

__all__ = ["EVAL_LOG", "POLICY_EVAL_LOG", "TIMING_FIELDS", "TRAIN_LOG", "Trainer", "checkpoint_tag",
           "loader_state_file"]

log = logging.getLogger(__name__)

POLICY_EVAL_LOG = "policy_eval_log.jsonl"
POLICY_EVALS_DIR = "policy_evals"
_EVAL_STREAM = 2**31 - 1
"""Seeds validation batches apart from the training micro batches' (seed, rank, step, micro batch) draws."""
SAMPLES_DIR = "samples"
POLICY_DIR = "policy"
RUN_FILE = "run.json"
LATEST = "latest"
CHOICE_WEIGHTS = "choice_policies.safetensors"
CHOICE_CONFIG = "choice_policies.json"
LOGGED_LOSSES = (LOSS, FLOW_MATCHING, CHOICE, CHOICE_ACTION, CHOICE_SCORE, NEXT_TOKEN, LOSS_WEIGHT)
DTYPES = {Precision.FP32: torch.float32, Precision.BF16: torch.bfloat16}
SWITCH_INTERVAL_S = 0.0005
"""The interpreter's GIL switch interval while the trainer trains (Python's default: 5 ms). The loader's receiver
thread (`training/data/batch_receiver.py`) holds the GIL for the 2-3 ms it takes to receive a batch from a worker;
a training loop that asks for a ready batch meanwhile would wait out the receiver's whole 5 ms slice, as data wait
(measured on step 2 of the tiny model: median wait 3.0 ms at 5 ms, 0.2 ms at 0.5 ms)."""

TIMING_FIELDS = ("seconds", "data_wait", "data_wait_share", "samples_per_s", "tokens_per_s", "tflops", "mfu",
                 "peak_memory_gb")
"""Fields of a `train_log.jsonl` line measured by the clock or the allocator: a resumed run repeats every other field
exactly."""


def checkpoint_tag(step: int) -> str:
    return f"step{step:08d}"


def loader_state_file(directory: pathlib.Path, rank: int) -> pathlib.Path:
    return directory / f"loader_rank{rank}.json"


class Trainer:
    """One phase of training on DeepSpeed ZeRO (see the module docstring)."""

    def __init__(self, config: TrainerConfig, *, rank: int = 0, world_size: int = 1,
                 policy_callback: PolicyCallback | None = None) -> None:
        if policy_callback is None and config.policy_eval_command:
            policy_callback = PolicyEvalCommand(config.policy_eval_command)
        if config.policy_eval_every and policy_callback is None:
            raise ValueError(f"TrainerConfig.policy_eval_every={config.policy_eval_every} needs a policy callback: set "
                             "policy_eval_command, or pass policy_callback to the Trainer")
        self.policy_callback = policy_callback
        self.config = config
        self.rank = rank
        self.world_size = world_size
        self.output = pathlib.Path(config.output_dir)
        self.step = 0
        self.engine: Any = None
        self.loader: CorpusLoader | None = None
        self.precision = config.precision.resolve(bf16_supported=_bf16_supported())
        self.metrics: MetricsLog | None = None
        self.param_counts: flops.ParamCounts | None = None
        self.peak_tflops: float | None = None
        self.mirror = mirror_of(self.output)

    @property
    def module(self) -> PhaseModel:
        return self.engine.module

    def setup(self) -> None:
        """Build the model for the phase, wrap it in DeepSpeed, open the loader, resume from the latest checkpoint."""
        import deepspeed

        config = self.config
        torch.manual_seed(config.seed)  # the fresh DiT / Choice Policies weights
        module = self._phase_model()
        groups = module.parameter_groups(config.param_groups, config.lr, config.weight_decay)
        ds_config = deepspeed_config(config, precision=self.precision, group_lrs=[g["lr"] for g in groups],
                                     world_size=self.world_size)
        self.engine, _, _, _ = deepspeed.initialize(model=module, optimizer=self._optimizer(groups),
                                                    config=ds_config)
        # DeepSpeed's default engine unpickles checkpoints in full; ours reads them with weights_only=True.
        self.engine.checkpoint_engine = SafeCheckpointEngine(self.engine._config)
        self.loader = CorpusLoader(config.loader, rank=self.rank, world_size=self.world_size)
        if config.resume:
            self._resume()
        if config.log_sample_keys:
            truncate_after(self._samples_file(), self.step)
        self.param_counts = flops.ParamCounts.of(module, module.model.dit, module.model.vlm.model.model.language_model,
                                                 module.model.vlm.model.model.visual, module.choice)
        self.peak_tflops = config.peak_tflops or flops.peak_tflops(_device_name(self.engine.device),
                                                                   self.precision is Precision.BF16)
        if self.rank == 0:
            self.metrics = MetricsLog(self.output, resumed_at=self.step, tensorboard=config.tensorboard)
            truncate_after(self.output / POLICY_EVAL_LOG, self.step)  # evaluations past the checkpoint
            self._write_run_file(module)

    def _phase_model(self) -> PhaseModel:
        """The phase's module in the run's dtype, activation checkpointing set, checked to hold one dtype."""
        config, dtype = self.config, DTYPES[self.precision]
        module = PhaseModel(self._base_model(dtype), config.phase, config.choice, config.vl_loss_weight,
                            attention=config.attention, freeze=config.freeze)
        module.model.dit.to(dtype)
        if module.choice is not None:
            module.choice.to(dtype)
        module.model.dit.activation_checkpointing = config.activation_checkpointing
        module.model.vlm.set_activation_checkpointing(config.activation_checkpointing)
        check_one_dtype(module, dtype, self.precision)
        return module

    def _base_model(self, dtype: torch.dtype) -> VLAModel:
        if self.config.vlm_dir is not None:
            return VLAModel.from_vlm_pretrained(self.config.vlm_dir, self.config.model, dtype=dtype)
        model = Policy.from_pretrained(self.config.init_policy, dtype=dtype).model
        model.config = training_settings(model.config, self.config.model, self.config.init_policy)
        robot, dit = self.config.loader.robot, model.config.dit
        if (dit.chunk_len, dit.state_dim, dit.action_dim) != (robot.chunk_len, robot.width, robot.width):
            raise ValueError(f"{self.config.init_policy}: the policy's DiT reads chunks of {dit.chunk_len} x "
                             f"{dit.action_dim} (state {dit.state_dim}); the loader gives {robot.chunk_len} x "
                             f"{robot.width}: set loader.robot.chunk_len / width to match")
        return model

    def _optimizer(self, groups: list[dict]) -> torch.optim.Optimizer:
        """AdamW over the parameter groups; DeepSpeed's CPU Adam (AdamW mode) when the state is offloaded."""
        config = self.config
        if config.offload_optimizer:
            from deepspeed.ops.adam import DeepSpeedCPUAdam

            return DeepSpeedCPUAdam(groups, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay,
                                    adamw_mode=True)
        return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay, betas=config.betas)

    def _write_run_file(self, module: PhaseModel) -> None:
        trainable = sum(p.numel() for p in module.trainable_parameters())
        document = {"precision": self.precision.value, "world_size": self.world_size,
                    "device": _device_name(self.engine.device) or str(self.engine.device),
                    "parameters": sum(p.numel() for p in module.parameters()), "trainable_parameters": trainable,
                    "peak_tflops_per_device": self.peak_tflops, "resumed_at": self.step,
                    "optimizer": type(self.engine.basic_optimizer).__name__,
                    "zero_optimization": self.engine.config["zero_optimization"]}
        self.output.mkdir(parents=True, exist_ok=True)
        (self.output / RUN_FILE).write_text(json.dumps(document, indent=1))
        log.info("run: %s", document)

    def _resume(self) -> None:
        latest = self.config.checkpoint_dir / LATEST
        if not latest.exists():
            return
        tag = latest.read_text().strip()
        # Not strict: the checkpoint holds the trainable parameters only (see `save`).
        path, client_state = self.engine.load_checkpoint(str(self.config.checkpoint_dir), tag=tag,
                                                         load_module_strict=False)
        if path is None:
            raise RuntimeError(f"{self.config.checkpoint_dir / tag}: DeepSpeed could not load this checkpoint")
        self.step = int(client_state["step"])
        state_file = loader_state_file(self.config.checkpoint_dir / tag, self.rank)
        self.loader.load_state_dict(json.loads(state_file.read_text()))
        log.info("rank %d resumed from %s at step %d", self.rank, self.config.checkpoint_dir / tag, self.step)

    def _samples_file(self) -> pathlib.Path:
        return self.output / SAMPLES_DIR / f"rank{self.rank}.jsonl"

    def train(self) -> list[dict[str, Any]]:
        """Optimizer steps up to `max_steps`, checkpointing every `save_every` and at the end; this run's log lines."""
        records = []
        self.engine.train()
        bar = tqdm(total=self.config.max_steps, initial=self.step, desc=f"{self.config.phase.value}", unit="step",
                   disable=None if self.config.progress and self.rank == 0 else True)
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(min(switch_interval, SWITCH_INTERVAL_S))
        try:
            self._train_steps(records, bar)
        finally:
            sys.setswitchinterval(switch_interval)
        if self.metrics is not None:
            self.metrics.close()
        self.push()
        return records

    def _train_steps(self, records: list[dict[str, Any]], bar: tqdm) -> None:
        with self.loader, bar:
            batches = iter(self.loader)
            while self.step < self.config.max_steps:
                self.step += 1
                started = time.perf_counter()
                tally, keys = StepTally(LOGGED_LOSSES), []
                for micro in range(self.config.accumulation(self.world_size)):
                    waited = time.perf_counter()
                    batch = next(batches)
                    self._micro_step(batch, micro, tally, time.perf_counter() - waited)
                    keys += batch.keys
                records.append(self._log_step(tally, keys, time.perf_counter() - started))
                bar.update(1)
                bar.set_postfix(loss=f"{records[-1][LOSS]:.4f}")
                if self.config.eval_every and self.step % self.config.eval_every == 0:
                    self.evaluate()
                if self.config.policy_eval_every and self.step % self.config.policy_eval_every == 0:
                    self.evaluate_policy()
                if self.step % self.config.save_every == 0 or self.step == self.config.max_steps:
                    self.save()

    def evaluate(self) -> dict[str, Any]:
        """One pass over the validation split (every sample once over all ranks), forward only, with the noise of each
        batch seeded by its index so passes are comparable; every rank must call it. Rank 0 appends the mean losses
        to `eval_log.jsonl`. No collective runs inside the pass (ZeRO-2 keeps whole parameters on every rank), so
        ranks may hold different numbers of batches."""
        config = dataclasses.replace(self.config.loader, split="validation", one_pass=True)
        tally = StepTally(LOGGED_LOSSES)
        self.engine.eval()
        with torch.no_grad(), CorpusLoader(config, rank=self.rank, world_size=self.world_size) as loader:
            for index, batch in enumerate(loader):
                if self.config.eval_max_batches is not None and index >= self.config.eval_max_batches:
                    break
                seed = np.random.SeedSequence([self.config.seed, self.rank, index, _EVAL_STREAM]).generate_state(1)
                torch.manual_seed(int(seed[0]))
                losses = self.engine(*self._inputs(batch))
                tally.add({k: float(v) for k, v in losses.items()}, robot_samples=len(batch.robot or ()),
                          vl_samples=len(batch.vl or ()))
        self.engine.train()
        reduced = tally.reduce(self.engine.device, self.world_size)
        record = {"step": self.step, **{k: reduced[k] for k in (*LOGGED_LOSSES, "robot_samples", "vl_samples")}}
        if self.metrics is not None:
            self.metrics.eval(record)
            log.info("validation at step %d: %s", self.step, record)
        return record

    def evaluate_policy(self) -> dict[str, Any] | None:
        """Export this step's policy to `policy_evals/step<N>/policy` and (rank 0) hand it to the policy callback;
        its metrics are appended to `policy_eval_log.jsonl` and returned. Every rank must call it; the others wait
        for the callback."""
        directory = self.output / POLICY_EVALS_DIR / checkpoint_tag(self.step) / POLICY_DIR
        self.export(directory)
        record = None
        if self.rank == 0:
            record = {"step": self.step, **self.policy_callback(self.step, directory)}
            append_line(self.output / POLICY_EVAL_LOG, record)
            log.info("policy evaluation at step %d: %s", self.step, record)
        if self.world_size > 1:
            dist.barrier()
        return record

    def _micro_step(self, batch: CorpusBatch, micro: int, tally: StepTally, data_wait: float) -> None:
        seed = np.random.SeedSequence([self.config.seed, self.rank, self.step, micro]).generate_state(1)[0]
        torch.manual_seed(int(seed))
        inputs = self._inputs(batch)
        losses = self.engine(*inputs)
        self.engine.backward(losses[LOSS])
        self.engine.step()
        tally.add({k: float(v.detach()) for k, v in losses.items()}, robot_samples=len(batch.robot or ()),
                  vl_samples=len(batch.vl or ()), tokens=self._tokens(inputs), flops=self._flops(inputs),
                  data_wait=data_wait)

    def _inputs(self, batch: CorpusBatch) -> tuple[RobotBatch | None, dict[str, torch.Tensor] | None,
                                                  torch.Tensor | None]:
        """The model's inputs on the engine's device: the robot batch (its pixels made there from the uint8 frames),
        the VL inputs and labels (None where absent)."""
        batch = self.loader.to_device(batch, self.engine.device)
        robot = batch.robot
        if batch.vl is None:
            return robot, None, None
        return robot, dict(batch.vl.inputs), batch.vl.labels

    @staticmethod
    def _tokens(inputs: Sequence[Any]) -> int:
        """Tokens through the VLM's language model: every robot prompt and VL sample, padding excluded."""
        robot, vl_inputs, _ = inputs
        tokens = 0 if vl_inputs is None else int(vl_inputs[ATTENTION_MASK].sum())
        return tokens + (0 if robot is None else int(robot.require_vlm_inputs()[ATTENTION_MASK].sum()))

    def _flops(self, inputs: Sequence[Any]) -> float:
        robot, vl_inputs, _ = inputs
        patches = sum(len(part[PIXEL_VALUES]) for part in (vl_inputs, robot and robot.vlm_inputs)
                      if part is not None and PIXEL_VALUES in part)
        dit, vlm_tokens = 0, self._tokens(inputs)
        if robot is not None:
            model = self.module.model.config
            if self.config.phase is Phase.STEP1_CHOICE:
                vlm_tokens += len(robot) * (self.config.choice.chunk_len + 2)  # state, action tokens, score token
            else:
                dit = len(robot) * model.flow.training_repeat * (model.dit.chunk_len + 2)
        work = flops.StepWork(vlm_tokens=vlm_tokens, vision_patches=patches, dit_tokens=dit)
        return flops.step_flops(self.param_counts, work, trains_vlm=self.module.trains_vlm,
                                trains_dit=self.config.phase is not Phase.STEP1_CHOICE)

    def _log_step(self, tally: StepTally, keys: list[str], seconds: float) -> dict[str, Any]:
        """Reduce the step's numbers over ranks; rank 0 writes the line (JSONL and TensorBoard)."""
        reduced = tally.reduce(self.engine.device, self.world_size)
        samples = reduced["robot_samples"] + reduced["vl_samples"]
        tflops = reduced.pop("flops") / seconds / 1e12
        record = {"step": self.step, **reduced, "lr": self.engine.get_lr()[0],
                  "grad_norm": _number(self.engine.get_global_grad_norm()), "seconds": round(seconds, 4),
                  "data_wait_share": reduced["data_wait"] / seconds, "samples_per_s": samples / seconds,
                  "tokens_per_s": reduced["tokens"] / seconds, "tflops": tflops,
                  "mfu": tflops / (self.peak_tflops * self.world_size) if self.peak_tflops else None,
                  "peak_memory_gb": _peak_memory_gb(self.engine.device)}
        if self.metrics is not None:
            self.metrics.train(record)
            log.info("step %d: %s", self.step, {k: v for k, v in record.items() if k != "step"})
        if self.config.log_sample_keys:
            append_line(self._samples_file(), {"step": self.step, "keys": keys})
        return record

    def save(self) -> pathlib.Path:
        """Checkpoint this step on every rank (all ranks must call it): DeepSpeed's files plus each loader state."""
        tag = checkpoint_tag(self.step)
        directory = self.config.checkpoint_dir / tag
        directory.mkdir(parents=True, exist_ok=True)
        _write_atomic(loader_state_file(directory, self.rank), json.dumps(self.loader.state_dict()))
        # save_checkpoint starts with a barrier, so every loader state is on disk before `latest` names this tag.
        # Frozen parameters (step 2's VLM: most of the model) are left out: they never change, and a resume rebuilds
        # them from the same vlm_dir / init_policy the config names. (DeepSpeed matches them by deduplicated name, so
        # an output embedding tied to a frozen input embedding is still saved.)
        self.engine.save_checkpoint(str(self.config.checkpoint_dir), tag=tag, client_state={"step": self.step},
                                    exclude_frozen_parameters=True)
        self.push()
        return directory

    def export(self, target: pathlib.Path | None = None) -> pathlib.Path | None:
        """Rank 0 writes `output_dir/policy/` (or `target`), complete or not at all; every rank must call it."""
        target = target or self.output / POLICY_DIR
        if self.rank == 0:
            staging = target.with_name(f"{target.name}.partial")
            shutil.rmtree(staging, ignore_errors=True)
            policy = Policy(self.module.model, self.loader.processor, self.loader.normalize)
            policy.save_pretrained(staging)
            if self.module.choice is not None:
                self._export_choice(staging)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(staging, target)
            self.module.train()  # Policy() switched the shared model to eval mode
        if self.world_size > 1:
            dist.barrier()
        self.push()
        return target

    def push(self) -> None:
        """An output mirrored from object storage (`pipelines/object_mirror.py`; `vlaforge train --output s3://...`):
        once every rank has written its files, rank 0 uploads what changed, checkpoint files before `latest`. Every
        rank must call it. (The ranks' files must be on rank 0's disk: one node, or a shared file system.)"""
        if self.mirror is None:
            return
        if self.world_size > 1:
            dist.barrier()
        if self.rank == 0:
            self.mirror.push()

    def _export_choice(self, directory: pathlib.Path) -> None:
        head = self.module.choice
        weights = {name: tensor.detach().contiguous().cpu() for name, tensor in head.state_dict().items()}
        save_file(weights, directory / CHOICE_WEIGHTS, metadata={"format": "vlaforge-choice-policies"})
        (directory / CHOICE_CONFIG).write_text(json.dumps(vars(head.config), indent=1))


def training_settings(policy_config, recipe_config, init_policy: str):
    """A loaded policy's `VLAConfig` with the run's training settings: its flow matching (τ distribution, sampling
    steps, training repeat), prefix draws and loss weights, and the Λ window, from the run's `model`. Everything
    else describes the policy's weights and must agree with the run's `model`: the recipe's model is the one it
    post-trains."""
    policy_dit = dataclasses.replace(policy_config.dit, attention_window=recipe_config.dit.attention_window)
    different = [f.name for f in dataclasses.fields(policy_dit)
                 if getattr(policy_dit, f.name) != getattr(recipe_config.dit, f.name)]
    if different:
        shown = ", ".join(f"{name}={getattr(policy_dit, name)} (the run's model.dit.{name}="
                          f"{getattr(recipe_config.dit, name)})" for name in different)
        raise ValueError(f"{init_policy}: the policy's DiT has {shown}: use the recipe of the policy's model size "
                         "or --set model.dit.<field> to the policy's values")
    return dataclasses.replace(policy_config, dit=policy_dit, flow=recipe_config.flow, prefix=recipe_config.prefix)


def check_one_dtype(module: torch.nn.Module, dtype: torch.dtype, precision: Precision) -> None:
    """Refuse a model whose parameters do not all have `dtype` (a bf16 checkpoint beside an fp32 DiT, say): ZeRO
    would flatten them into one buffer of mixed widths. The message names the precision and some parameters."""
    stray: dict[torch.dtype, list[str]] = {}
    for name, parameter in module.named_parameters():
        if parameter.dtype != dtype:
            stray.setdefault(parameter.dtype, []).append(name)
    if stray:
        found = "; ".join(f"{len(names)} in {str(kind).removeprefix('torch.')} (e.g. {', '.join(names[:3])})"
                          for kind, names in stray.items())
        raise ValueError(f"the model mixes dtypes: precision {precision.value} needs every parameter in "
                         f"{str(dtype).removeprefix('torch.')}, but {found}; load every part in that dtype "
                         f"(Trainer does for the VLM, DiT and head) or choose the precision the checkpoint has")


def _peak_memory_gb(device: torch.device) -> float:
    """This rank's peak memory so far: the CUDA caching allocator's on a GPU, the process's resident high-water mark
    on the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kilobytes on Linux


def _bf16_supported() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def _device_name(device: torch.device) -> str | None:
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else None


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _write_atomic(path: pathlib.Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)
