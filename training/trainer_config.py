"""`TrainerConfig`: one training run of the DeepSpeed ZeRO-2 trainer, and the DeepSpeed config generated from it.

The DeepSpeed JSON is never written by hand: `deepspeed_config(config)` derives it. It has no "optimizer" block,
because the trainer passes a `torch.optim.AdamW` to `deepspeed.initialize` (DeepSpeed's own "AdamW" JIT-compiles
FusedAdam first). The config also round-trips through JSON (`to_dict` / `from_dict`), which is how the `vlaforge
train` command hands it to every process `torchrun` starts.
"""

from __future__ import annotations

import dataclasses
import enum
import pathlib
import types
import typing
from collections.abc import Mapping
from typing import Any

from vlaforge.training.data.corpus_loader import CorpusLoader
from vlaforge.training.model.choice_policies import ChoicePoliciesConfig
from vlaforge.training.model.phase import Phase
from vlaforge.training.model.renamed_fields import current_names
from vlaforge.training.model.vla import VLAConfig

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

    FP32 = "fp32"
    BF16 = "bf16"


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
    grad_clip: float = 1.0
    """Global gradient-norm clipping (0: none)."""
    precision: Precision = Precision.FP32
    """fp32 or bf16 (bf16 on CPUs with avx512_bf16 and on Ampere or newer GPUs)."""
    vl_loss_weight: float = 1.0
    """Weight of the VL next-token loss, in phases whose VLM trains (VL samples are skipped while it is frozen)."""
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

    def __post_init__(self) -> None:
        for name, kind in (("phase", Phase), ("precision", Precision), ("lr_decay", LrDecay)):
            object.__setattr__(self, name, kind(getattr(self, name)))
        self._check_ranges()
        if (self.vlm_dir is None) == (self.init_policy is None):
            raise ValueError(f"TrainerConfig: set exactly one of vlm_dir and init_policy, got vlm_dir={self.vlm_dir!r}"
                             f" and init_policy={self.init_policy!r}")
        if self.loader.processor is None:
            raise ValueError("TrainerConfig.loader.processor must name the Qwen3-VL processor: the model reads robot "
                             "samples' frames and instruction as tokens")
        self._check_widths()
        batch = dataclasses.replace(self.loader.batch, batch_size=self.micro_batch_size)
        object.__setattr__(self, "loader", dataclasses.replace(self.loader, batch=batch))

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


def deepspeed_config(config: TrainerConfig) -> dict[str, Any]:
    """The DeepSpeed config dict: ZeRO stage 2, batch sizes, clipping, precision, the learning-rate schedule (no
    "optimizer" block)."""
    ds: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": config.micro_batch_size,
        "gradient_accumulation_steps": config.gradient_accumulation,
        "gradient_clipping": config.grad_clip,
        "zero_optimization": {"stage": 2, "contiguous_gradients": True, "overlap_comm": False},
        "bf16": {"enabled": config.precision is Precision.BF16},
        "steps_per_print": 2**31 - 1,  # the trainer logs its own steps (rank 0, JSONL)
        "wall_clock_breakdown": False,
    }
    warmup = {"warmup_num_steps": config.warmup_steps, "warmup_type": "linear"}
    peak = {"warmup_min_lr": 0.0, "warmup_max_lr": config.lr}
    if config.lr_decay is LrDecay.LINEAR:
        ds["scheduler"] = {"type": "WarmupDecayLR", "params": {"total_num_steps": config.max_steps, **peak, **warmup}}
    elif config.lr_decay is LrDecay.COSINE:  # its ratios are of the optimizer's lr, which is config.lr
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
