"""`Trainer`: the VLA model on DeepSpeed ZeRO-2, fed by `CorpusLoader`, one phase of the recipe per run.

    trainer = Trainer(config, rank=rank, world_size=world_size)   # inside torch.distributed (train_main.py)
    trainer.setup()                                               # model, engine, loader; resumes if it can
    trainer.train()                                               # up to config.max_steps optimizer steps
    trainer.export()                                              # rank 0: output_dir/policy/

One optimizer step is `gradient_accumulation` micro batches of `micro_batch_size` samples per rank. Every micro
batch reseeds torch from (seed, rank, step, micro batch), so the flow-matching noise, τ and prefix draws of a step do
not depend on what ran before it: a resumed run repeats the uninterrupted one exactly.

What `output_dir` holds:
- `checkpoints/<tag>/`: DeepSpeed's files (model states of the trainable parameters from rank 0, each rank's ZeRO-2
  optimizer partition),
  `client_state={"step": n}`, and `loader_rank<r>.json`, each rank's `CorpusLoader.state_dict()`. The loader states
  are files of their own because only data-parallel rank 0 writes DeepSpeed's model-states file, which carries the
  client state: another rank's would be lost. `checkpoints/latest` names the newest tag (DeepSpeed writes it last).
  Checkpoints are read back with `weights_only=True` (`checkpoint_engine.py`).
- `train_log.jsonl` (rank 0): one line per optimizer step, the losses averaged over micro batches and ranks.
- `eval_log.jsonl` (rank 0, with `eval_every`): one line per validation pass, its mean losses over all ranks.
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
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import save_file

from vlaforge.training.checkpoint_engine import SafeCheckpointEngine
from vlaforge.training.data.collate import CorpusBatch
from vlaforge.training.data.corpus_loader import CorpusLoader
from vlaforge.training.model.vla import RobotBatch, VLAModel
from vlaforge.training.phase_model import CHOICE, FLOW_MATCHING, LOSS, NEXT_TOKEN, PhaseModel
from vlaforge.training.policy.policy import Policy
from vlaforge.training.policy_eval_command import PolicyCallback, PolicyEvalCommand
from vlaforge.training.trainer_config import TrainerConfig, deepspeed_config

log = logging.getLogger(__name__)

TRAIN_LOG = "train_log.jsonl"
EVAL_LOG = "eval_log.jsonl"
POLICY_EVAL_LOG = "policy_eval_log.jsonl"
POLICY_EVALS_DIR = "policy_evals"
_EVAL_STREAM = 2**31 - 1
"""Seeds validation batches apart from the training micro batches' (seed, rank, step, micro batch) draws."""
SAMPLES_DIR = "samples"
POLICY_DIR = "policy"
LATEST = "latest"
CHOICE_WEIGHTS = "choice_policies.safetensors"
CHOICE_CONFIG = "choice_policies.json"
LOGGED_LOSSES = (LOSS, FLOW_MATCHING, CHOICE, NEXT_TOKEN)


def checkpoint_tag(step: int) -> str:
    return f"step{step:08d}"


def loader_state_file(directory: pathlib.Path, rank: int) -> pathlib.Path:
    return directory / f"loader_rank{rank}.json"


class Trainer:
    """One phase of training on DeepSpeed ZeRO-2 (see the module docstring)."""

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

    @property
    def module(self) -> PhaseModel:
        return self.engine.module

    def setup(self) -> None:
        """Build the model for the phase, wrap it in DeepSpeed, open the loader, resume from the latest checkpoint."""
        import deepspeed

        torch.manual_seed(self.config.seed)  # the fresh DiT / Choice Policies weights
        module = PhaseModel(self._base_model(), self.config.phase, self.config.choice, self.config.vl_loss_weight)
        optimizer = torch.optim.AdamW(module.trainable_parameters(), lr=self.config.lr,
                                      weight_decay=self.config.weight_decay, betas=self.config.betas)
        self.engine, _, _, _ = deepspeed.initialize(model=module, optimizer=optimizer,
                                                    config=deepspeed_config(self.config))
        # DeepSpeed's default engine unpickles checkpoints in full; ours reads them with weights_only=True.
        self.engine.checkpoint_engine = SafeCheckpointEngine(self.engine._config)
        self.loader = CorpusLoader(self.config.loader, rank=self.rank, world_size=self.world_size)
        if self.config.resume:
            self._resume()
        self._truncate_logs()

    def _base_model(self) -> VLAModel:
        if self.config.vlm_dir is not None:
            return VLAModel.from_vlm_pretrained(self.config.vlm_dir, self.config.model)
        model = Policy.from_pretrained(self.config.init_policy).model
        robot, dit = self.config.loader.robot, model.config.dit
        if (dit.chunk_len, dit.state_dim, dit.action_dim) != (robot.chunk_len, robot.width, robot.width):
            raise ValueError(f"{self.config.init_policy}: the policy's DiT reads chunks of {dit.chunk_len} x "
                             f"{dit.action_dim} (state {dit.state_dim}); the loader gives {robot.chunk_len} x "
                             f"{robot.width}: set loader.robot.chunk_len / width to match")
        return model

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

    def _truncate_logs(self) -> None:
        """Drop log lines past the resumed step (written after the checkpoint, before a crash): no step twice."""
        files = [self._samples_file()] if self.config.log_sample_keys else []
        if self.rank == 0:
            files += [self.output / TRAIN_LOG, self.output / EVAL_LOG, self.output / POLICY_EVAL_LOG]
        for path in files:
            if path.exists():
                kept = [line for line in path.read_text().splitlines() if json.loads(line)["step"] <= self.step]
                path.write_text("".join(line + "\n" for line in kept))

    def _samples_file(self) -> pathlib.Path:
        return self.output / SAMPLES_DIR / f"rank{self.rank}.jsonl"

    def train(self) -> list[dict[str, Any]]:
        """Optimizer steps up to `max_steps`, checkpointing every `save_every` and at the end; this run's log lines."""
        records = []
        self.engine.train()
        with self.loader:
            batches = iter(self.loader)
            while self.step < self.config.max_steps:
                self.step += 1
                started = time.perf_counter()
                parts = [self._micro_step(next(batches), micro) for micro in range(self.config.gradient_accumulation)]
                records.append(self._log_step(parts, time.perf_counter() - started))
                if self.config.eval_every and self.step % self.config.eval_every == 0:
                    self.evaluate()
                if self.config.policy_eval_every and self.step % self.config.policy_eval_every == 0:
                    self.evaluate_policy()
                if self.step % self.config.save_every == 0 or self.step == self.config.max_steps:
                    self.save()
        return records

    def evaluate(self) -> dict[str, Any]:
        """One pass over the validation split (every sample once over all ranks), forward only, with the noise of each
        batch seeded by its index so passes are comparable; every rank must call it. Rank 0 appends the mean losses
        to `eval_log.jsonl`. No collective runs inside the pass (ZeRO-2 keeps whole parameters on every rank), so
        ranks may hold different numbers of batches."""
        config = dataclasses.replace(self.config.loader, split="validation", one_pass=True)
        sums = _loss_sums()
        self.engine.eval()
        with torch.no_grad(), CorpusLoader(config, rank=self.rank, world_size=self.world_size) as loader:
            for index, batch in enumerate(loader):
                if self.config.eval_max_batches is not None and index >= self.config.eval_max_batches:
                    break
                seed = np.random.SeedSequence([self.config.seed, self.rank, index, _EVAL_STREAM]).generate_state(1)
                torch.manual_seed(int(seed[0]))
                losses = self.engine(*self._inputs(batch))
                _add_losses(sums, {k: float(v) for k, v in losses.items()}, len(batch.robot or ()),
                            len(batch.vl or ()))
        self.engine.train()
        record = self._mean_record(sums)
        if self.rank == 0:
            _append_line(self.output / EVAL_LOG, record)
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
            _append_line(self.output / POLICY_EVAL_LOG, record)
            log.info("policy evaluation at step %d: %s", self.step, record)
        if self.world_size > 1:
            dist.barrier()
        return record

    def _micro_step(self, batch: CorpusBatch, micro: int) -> dict[str, Any]:
        seed = np.random.SeedSequence([self.config.seed, self.rank, self.step, micro]).generate_state(1)[0]
        torch.manual_seed(int(seed))
        losses = self.engine(*self._inputs(batch))
        self.engine.backward(losses[LOSS])
        self.engine.step()
        return {"losses": {k: float(v.detach()) for k, v in losses.items()}, "keys": batch.keys,
                "robot": len(batch.robot or ()), "vl": len(batch.vl or ())}

    def _inputs(self, batch: CorpusBatch) -> tuple[RobotBatch | None, dict[str, torch.Tensor] | None,
                                                  torch.Tensor | None]:
        """The model's inputs on the engine's device: the robot batch, the VL inputs and labels (None where absent)."""
        robot = None if batch.robot is None else _to_device(batch.robot, self.engine.device)
        if batch.vl is None:
            return robot, None, None
        vl_inputs = {k: v.to(self.engine.device) for k, v in batch.vl.inputs.items()}
        return robot, vl_inputs, batch.vl.labels.to(self.engine.device)

    def _log_step(self, parts: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
        """Average each loss over the micro batches and ranks that had it; rank 0 appends the line to the log."""
        sums = _loss_sums()
        for part in parts:
            _add_losses(sums, part["losses"], part["robot"], part["vl"])
        record = self._mean_record(sums)
        record.update(lr=self.engine.get_lr()[0], grad_norm=_number(self.engine.get_global_grad_norm()),
                      seconds=round(seconds, 3))
        if self.rank == 0:
            _append_line(self.output / TRAIN_LOG, record)
            log.info("step %d: %s", self.step, {k: v for k, v in record.items() if k != "step"})
        if self.config.log_sample_keys:
            _append_line(self._samples_file(), {"step": self.step, "keys": [k for p in parts for k in p["keys"]]})
        return record

    def _mean_record(self, sums: torch.Tensor) -> dict[str, Any]:
        """{"step", each logged loss's mean over the batches of all ranks that had it (None if none did), the
        samples of each kind}, from this rank's `_loss_sums`; every rank must call it."""
        if self.world_size > 1:
            dist.all_reduce(sums)
        record: dict[str, Any] = {"step": self.step}
        for slot, name in enumerate(LOGGED_LOSSES):
            count = sums[2 * slot + 1].item()
            record[name] = sums[2 * slot].item() / count if count else None
        record.update(robot_samples=int(sums[-2]), vl_samples=int(sums[-1]))
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
        return target

    def _export_choice(self, directory: pathlib.Path) -> None:
        head = self.module.choice
        weights = {name: tensor.detach().contiguous().cpu() for name, tensor in head.state_dict().items()}
        save_file(weights, directory / CHOICE_WEIGHTS, metadata={"format": "vlaforge-choice-policies"})
        (directory / CHOICE_CONFIG).write_text(json.dumps(vars(head.config), indent=1))


def _loss_sums() -> torch.Tensor:
    """Per logged loss its sum and count, then the robot and VL sample counts: [2 * len(LOGGED_LOSSES) + 2]."""
    return torch.zeros(2 * len(LOGGED_LOSSES) + 2, dtype=torch.float64)


def _add_losses(sums: torch.Tensor, losses: Mapping[str, float], robot: int, vl: int) -> None:
    for slot, name in enumerate(LOGGED_LOSSES):
        if name in losses:
            sums[2 * slot] += losses[name]
            sums[2 * slot + 1] += 1
    sums[-2] += robot
    sums[-1] += vl


def _to_device(batch: RobotBatch, device: torch.device) -> RobotBatch:
    """What the model reads, on `device`; the frames and lineage stay on the host (the model reads the frames as the
    processor's `vlm_inputs`)."""
    return dataclasses.replace(batch, vlm_inputs={k: v.to(device) for k, v in batch.require_vlm_inputs().items()},
                               state=batch.state.to(device), actions=batch.actions.to(device),
                               action_mask=batch.action_mask.to(device), valid_len=batch.valid_len.to(device))


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def _append_line(path: pathlib.Path, record: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as file:
        file.write(json.dumps(record) + "\n")


def _write_atomic(path: pathlib.Path, text: str) -> None:
    partial = path.with_name(path.name + ".partial")
    partial.write_text(text)
    os.replace(partial, path)
