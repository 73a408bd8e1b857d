"""`TrainerConfig`: one training run of the DeepSpeed ZeRO-2 trainer, and the DeepSpeed config generated from it.

The DeepSpeed JSON is never written by hand: `deepspeed_config(config)` derives it. It has no "optimizer" block,
because the trainer passes its optimizer to `deepspeed.initialize`: a `torch.optim.AdamW` (DeepSpeed's own "AdamW"
JIT-compiles FusedAdam first), or DeepSpeed's `DeepSpeedCPUAdam` when the optimizer state is offloaded to the CPU.
The config also round-trips through JSON (`to_dict` / `from_dict`), which is how the `vlaforge train` command hands
it to every process the launcher starts. Named configurations are in `recipes.py`.
"""

from __future__ import annotations

import dataclasses
import enum
import pathlib
import types
import typing
from collections.abc import Mapping
from typing import Any

from vlaforge.pipelines.corpus_manifest import ComponentKind
from vlaforge.training.data.corpus_loader import CorpusLoader
from vlaforge.training.model.choice_policies import ChoicePoliciesConfig
from vlaforge.training.model.masks import AttentionKind
from vlaforge.training.model.phase import Phase
from vlaforge.training.model.renamed_fields import current_names
from vlaforge.training.model.vla import VLAConfig
from vlaforge.training.phase_model import ParamGroup

FORMAT = "vlaforge.trainer-config/2"
READABLE_FORMATS = (FORMAT, "vlaforge.trainer-config/1")
"""Format 1 named the action chunk `chunk_length` (read as `chunk_len`); code that reads only format 1 refuses
format 2 rather than mistake a missing `chunk_length` for the default."""
_SECRET_S3_OPTIONS = frozenset({"key", "secret", "token", "password", "client_kwargs", "config_kwargs"})
"""s3fs options that can carry credentials (client_kwargs may hold aws_secret_access_key)."""


class LrDecay(str, enum.Enum):
    """What the learning rate does after warm-up, until `max_steps` (DeepSpeed's schedulers)."""

    CONSTANT = "constant"  # WarmupLR: stays at lr
    LINEAR = "linear"  # WarmupDecayLR: linearly to 0 at max_steps
    COSINE = "cosine"  # WarmupCosineLR: along a half cosine to lr x min_lr_ratio at max_steps


class Precision(str, enum.Enum):
    """Parameter and activation precision (master weights and optimizer states stay fp32 under ZeRO)."""

    AUTO = "auto"  # bf16 where the device supports it (a CUDA GPU with bf16), else fp32 (the CPU)
    FP32 = "fp32"
    BF16 = "bf16"

    def resolve(self, bf16_supported: bool) -> "Precision":
        """The precision a run uses on a device that does (or does not) support bf16."""
        if self is Precision.AUTO:
            return Precision.BF16 if bf16_supported else Precision.FP32
        return self


@dataclasses.dataclass(frozen=True, kw_only=True)
class TrainerConfig:
    """Everything one run of `Trainer` needs."""

    phase: Phase
    """What trains, on which loss (see `Phase`)."""
    loader: CorpusLoader.Config
    """The corpus and how batches are made; `loader.batch.batch_size` is replaced by `micro_batch_size`."""
    output_dir: str
    """Checkpoints, the loss log and the exported policy go here."""
    vlm_dir: str | None = None
    """Qwen3-VL to start from (a local Hugging Face directory or hub id) with a fresh DiT: step 1, or step 2 from
    step 1's exported `policy/vlm`. Exactly one of `vlm_dir` and `init_policy` is set."""
    init_policy: str | None = None
    """A policy directory (`Policy.save_pretrained`) whose VLM and DiT to start from: post-training after step 2."""
    model: VLAConfig = dataclasses.field(default_factory=VLAConfig)
    """The DiT, flow-matching and prefix settings (ignored with `init_policy`, which carries its own)."""
    choice: ChoicePoliciesConfig = dataclasses.field(default_factory=ChoicePoliciesConfig)
    """Step 1's Choice Policies head (its chunk length and widths must match the loader's)."""
    lr: float = 1e-4
    """Peak AdamW learning rate."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay."""
    betas: tuple[float, float] = (0.9, 0.95)
    """AdamW betas."""
    warmup_steps: int = 0
    """Optimizer steps of linear warm-up from 0 to `lr`. 0: none (cosine decay warms up over one step)."""
    lr_decay: LrDecay = LrDecay.CONSTANT
    """The learning rate after warm-up: constant, or decayed (linearly or along a cosine) until `max_steps`."""
    min_lr_ratio: float = 0.0
    """Where cosine decay ends, as a fraction of `lr`."""
    max_steps: int = 1000
    """Optimizer steps to train in all (a resumed run continues up to this count)."""
    micro_batch_size: int = 32
    """Samples per rank per forward/backward (DeepSpeed's train_micro_batch_size_per_gpu)."""
    gradient_accumulation: int = 1
    """Micro batches per optimizer step; the global batch is micro_batch_size x this x ranks."""
    global_batch_size: int | None = None
    """Samples per optimizer step over all ranks (the report: 32,768 in pre-training, 2,048 in post-training). Set,
    it decides the accumulation for the ranks a launch has (`accumulation`), and `gradient_accumulation` stays 1."""
    grad_clip: float = 1.0
    """Global gradient-norm clipping (0: none)."""
    precision: Precision = Precision.AUTO
    """auto (bf16 on a GPU that supports it, fp32 on the CPU), fp32 or bf16. The VLM loads in this dtype and every
    parameter must share it (a model that mixes dtypes is refused)."""
    zero_stage: int = 2
    """DeepSpeed ZeRO stage: 2 (the recipe: optimizer state and gradients partitioned), 1, or 0 (plain data
    parallel; on one rank it skips ZeRO's flat-buffer copies)."""
    overlap_comm: bool = False
    """Overlap ZeRO's gradient reduction with the backward pass (DeepSpeed's `overlap_comm`)."""
    offload_optimizer: bool = False
    """Keep the optimizer state (and its step) on the CPU (ZeRO-Offload, stage >= 1), with DeepSpeed's CPU Adam:
    what lets the 4.7B model's post-training fit one GPU's memory."""
    activation_checkpointing: bool = False
    """Recompute activations in the backward pass: every DiT block, the VLM's vision tower, and the VLM's language
    layers where no KV cache is read (`VLMBackbone.set_activation_checkpointing`)."""
    vl_loss_weight: float = 1.0
    """Weight of the VL next-token loss, in phases whose VLM trains."""
    vl_co_training: bool | None = None
    """Read VL samples and co-train the VLM on them. None: the phase's default (step 1: yes; step 2: no, its VLM
    is frozen; post-training: no, the paper post-trains on the robot's own data). The loader selects by kind in
    the stream, so a robot-only run never reads or decodes a VL sample; `loader.kinds` is set from this."""
    attention: AttentionKind | None = None
    """The DiT mask to train with; None: the phase's (causal; Λ for posttrain_async). `causal` with posttrain_async
    is the paper's "training RTC" ablation; `lambda_strict` bounds the prefix's reach through every layer."""
    freeze: tuple[str, ...] = ()
    """fnmatch patterns of parameter names to freeze on top of the phase (e.g. the release freezes the VLM's token
    embeddings: "model.vlm.model.model.language_model.embed_tokens.*"); each must match a parameter."""
    param_groups: tuple[ParamGroup, ...] = ()
    """Per-module learning rates: the first group whose pattern a trainable parameter's name matches sets its lr as
    a multiple of `lr`; the rest train at `lr`."""
    save_every: int = 500
    """Optimizer steps between checkpoints (the last step is always saved)."""
    eval_every: int = 0
    """Optimizer steps between validation passes (0: none). A pass reads the corpus's validation split once over all
    ranks (`CorpusLoader` one-pass mode), forward only, and appends the mean losses to `eval_log.jsonl`."""
    eval_max_batches: int | None = None
    """At most this many batches per rank in a validation pass (None: the whole split)."""
    resume: bool = True
    """Continue from the latest checkpoint in `output_dir` when there is one."""
    seed: int = 0
    """Seeds the fresh weights, and with the step and rank every step's noise, τ and prefix draws (so a resumed
    run repeats the uninterrupted one exactly)."""
    log_sample_keys: bool = False
    """Also write every rank's sample keys per step (`samples/rank<r>.jsonl`): data lineage, and a check that ranks
    read disjoint data."""
    export: bool = True
    """Write `policy/` (loadable by `Policy.from_pretrained`) at the end."""
    policy_eval_every: int = 0
    """Optimizer steps between policy evaluations (0: none): rank 0 exports the policy of that step to
    `policy_evals/step<N>/policy/` and hands it to the trainer's policy callback, whose metrics go to
    `policy_eval_log.jsonl`."""
    policy_eval_command: tuple[str, ...] = ()
    """The policy callback as a command (`policy_eval_command.py`: `{policy}` and `{output}` placeholders), for runs
    whose ranks torchrun starts; empty: a callback must be passed to the trainer in-process."""
    tensorboard: bool = True
    """Also write every logged number to TensorBoard event files under `output_dir/tensorboard` (rank 0)."""
    progress: bool = True
    """A progress bar on rank 0 when its stderr is a terminal."""
    peak_tflops: float | None = None
    """One device's peak dense TFLOP/s in the run's precision, for the MFU estimate; None: looked up from the GPU's
    name (`flops.py`), and no MFU where unknown (the CPU)."""

    def __post_init__(self) -> None:
        for name, kind in (("phase", Phase), ("precision", Precision), ("lr_decay", LrDecay)):
            object.__setattr__(self, name, kind(getattr(self, name)))
        if self.attention is not None:
            object.__setattr__(self, "attention", AttentionKind(self.attention))
        object.__setattr__(self, "freeze", tuple(self.freeze))
        object.__setattr__(self, "param_groups", tuple(
            g if isinstance(g, ParamGroup) else ParamGroup(**g) for g in self.param_groups))
        self._check_ranges()
        if (self.vlm_dir is None) == (self.init_policy is None):
            raise ValueError(f"TrainerConfig: set exactly one of vlm_dir and init_policy, got vlm_dir={self.vlm_dir!r}"
                             f" and init_policy={self.init_policy!r}")
        if self.loader.processor is None:
            raise ValueError("TrainerConfig.loader.processor must name the Qwen3-VL processor: the model reads robot "
                             "samples' frames and instruction as tokens")
        self._check_widths()
        batch = dataclasses.replace(self.loader.batch, batch_size=self.micro_batch_size)
        object.__setattr__(self, "loader", dataclasses.replace(self.loader, batch=batch, kinds=self.kinds))

    def accumulation(self, world_size: int) -> int:
        """Micro batches per optimizer step on `world_size` ranks: `gradient_accumulation`, or what
        `global_batch_size` needs, which must be a whole multiple of micro_batch_size x world_size."""
        if self.global_batch_size is None:
            return self.gradient_accumulation
        per_step = self.micro_batch_size * world_size
        if self.global_batch_size % per_step:
            raise ValueError(f"TrainerConfig.global_batch_size={self.global_batch_size} is not a multiple of "
                             f"micro_batch_size x ranks = {self.micro_batch_size} x {world_size}; change "
                             "micro_batch_size, the number of ranks, or global_batch_size")
        return self.global_batch_size // per_step

    @property
    def reads_vl(self) -> bool:
        """Whether the run reads VL samples (`vl_co_training`, or the phase's default)."""
        if self.vl_co_training is None:
            return self.phase is Phase.STEP1_CHOICE
        return self.vl_co_training

    @property
    def kinds(self) -> tuple[str, ...]:
        """The component kinds the loader's stream draws from."""
        robot, vl = ComponentKind.ROBOT.value, ComponentKind.VL.value
        return (robot, vl) if self.reads_vl else (robot,)

    def _check_ranges(self) -> None:
        for name in ("max_steps", "micro_batch_size", "gradient_accumulation", "save_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"TrainerConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.policy_eval_every < 0:
            raise ValueError(f"TrainerConfig.policy_eval_every must be >= 0, got {self.policy_eval_every}")
        if self.eval_every < 0 or (self.eval_max_batches is not None and self.eval_max_batches < 1):
            raise ValueError(f"TrainerConfig needs eval_every >= 0 and eval_max_batches >= 1 (or None), got "
                             f"{self.eval_every} and {self.eval_max_batches}")
        for name in ("lr", "weight_decay", "warmup_steps", "grad_clip", "vl_loss_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainerConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"TrainerConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"TrainerConfig.betas must be two numbers in [0, 1), got {self.betas}")
        if self.global_batch_size is not None and (self.global_batch_size < 1 or self.gradient_accumulation != 1):
            raise ValueError(f"TrainerConfig.global_batch_size={self.global_batch_size} must be >= 1 and decides the "
                             f"accumulation itself; leave gradient_accumulation at 1 (got {self.gradient_accumulation})")
        if self.zero_stage not in (0, 1, 2):
            raise ValueError(f"TrainerConfig.zero_stage must be 0, 1 or 2, got {self.zero_stage}")
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("TrainerConfig.offload_optimizer needs zero_stage 1 or 2 (ZeRO-Offload), got 0")
        if self.phase.freezes_vlm and self.vl_co_training:
            raise ValueError(f"TrainerConfig.vl_co_training is True but {self.phase.value} freezes the VLM, which VL "
                             "samples train: leave it unset (None) or False")
        if self.peak_tflops is not None and self.peak_tflops <= 0:
            raise ValueError(f"TrainerConfig.peak_tflops must be > 0 (or None), got {self.peak_tflops}")

    def _check_widths(self) -> None:
        """The head that reads the loader's chunks must have their length and width."""
        if self.phase is not Phase.STEP1_CHOICE and self.init_policy is not None:
            return  # the policy's own DiT sizes are checked against the loader when it is loaded
        owner, sizes = ("choice", self.choice) if self.phase is Phase.STEP1_CHOICE else ("model.dit", self.model.dit)
        robot = self.loader.robot
        for name, source in (("chunk_len", "chunk_len"), ("state_dim", "width"), ("action_dim", "width")):
            if getattr(sizes, name) != getattr(robot, source):
                raise ValueError(f"TrainerConfig.{owner}.{name} is {getattr(sizes, name)} but "
                                 f"loader.robot.{source} is {getattr(robot, source)}: make them equal")

    @property
    def checkpoint_dir(self) -> pathlib.Path:
        return pathlib.Path(self.output_dir) / "checkpoints"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (enums as values, tuples as lists), tagged with the format. Refuses S3 credentials in the
        loader's options: this dict is written to disk and handed to every process on its command line."""
        secrets = _SECRET_S3_OPTIONS & set(self.loader.stream.opener.s3_options)
        if secrets:
            raise ValueError(f"TrainerConfig.loader.stream.opener.s3_options holds {sorted(secrets)}: credentials are "
                             f"never written into a config; set AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / "
                             f"AWS_SESSION_TOKEN in the environment, where s3fs reads them")
        return {"format": FORMAT, **_encode(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainerConfig":
        if data.get("format") not in READABLE_FORMATS:
            raise ValueError(f"trainer config format {data.get('format')!r}; this code reads {READABLE_FORMATS}")
        return _decode(cls, {k: v for k, v in data.items() if k != "format"})


def deepspeed_config(config: TrainerConfig, *, precision: Precision | None = None,
                     group_lrs: list[float] | None = None, world_size: int = 1) -> dict[str, Any]:
    """The DeepSpeed config dict: the ZeRO stage and its options, batch sizes, clipping, precision, the
    learning-rate schedule (no "optimizer" block).

    `precision`: the resolved one (`Precision.resolve`; default the config's, auto counting as fp32). `group_lrs`:
    the peak lr of each optimizer parameter group, when there are several (`TrainerConfig.param_groups`).
    `world_size`: the ranks of the launch, which decide the accumulation under `global_batch_size`.
    """
    precision = precision or config.precision.resolve(bf16_supported=False)
    zero: dict[str, Any] = {"stage": config.zero_stage, "contiguous_gradients": config.zero_stage > 0,
                            "overlap_comm": config.overlap_comm}
    if config.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": True}
    ds: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": config.micro_batch_size,
        "gradient_accumulation_steps": config.accumulation(world_size),
        "gradient_clipping": config.grad_clip,
        "zero_optimization": zero,
        "bf16": {"enabled": precision is Precision.BF16},
        "steps_per_print": 2**31 - 1,  # the trainer logs its own steps (rank 0, JSONL and TensorBoard)
        "wall_clock_breakdown": False,
    }
    warmup = {"warmup_num_steps": config.warmup_steps, "warmup_type": "linear"}
    peak = {"warmup_min_lr": 0.0, "warmup_max_lr": group_lrs if group_lrs and len(group_lrs) > 1 else config.lr}
    if config.lr_decay is LrDecay.LINEAR:
        ds["scheduler"] = {"type": "WarmupDecayLR", "params": {"total_num_steps": config.max_steps, **peak, **warmup}}
    elif config.lr_decay is LrDecay.COSINE:  # its ratios are of each group's own lr
        ds["scheduler"] = {"type": "WarmupCosineLR", "params": {
            "total_num_steps": config.max_steps, "warmup_min_ratio": 0.0, "cos_min_ratio": config.min_lr_ratio,
            **warmup, "warmup_num_steps": max(1, config.warmup_steps)}}
    elif config.warmup_steps:
        ds["scheduler"] = {"type": "WarmupLR", "params": {**peak, **warmup}}
    return ds


def _encode(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, (tuple, list)):
        return [_encode(item) for item in value]
    if isinstance(value, Mapping):
        return {str(key): _encode(item) for key, item in value.items()}
    return value


def _decode(hint: Any, value: Any) -> Any:
    """`value` (parsed JSON) as an instance of the type hint: dataclasses field by field (old field names read as
    their new ones, `renamed_fields.py`), enums, tuples, unions."""
    if dataclasses.is_dataclass(hint):
        hints, value = typing.get_type_hints(hint), current_names(value)
        return hint(**{f.name: _decode(hints[f.name], value[f.name]) for f in dataclasses.fields(hint)
                       if f.init and f.name in value})
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        return _decode(next(arg for arg in args if arg is not type(None)), value)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], item) for item in value)
        return tuple(_decode(arg, item) for arg, item in zip(args, value, strict=True))
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(value)
    return value
