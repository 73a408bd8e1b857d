"""The whole model: Qwen3-VL + DiT, set up for a training phase, the flow-matching loss and the sampler."""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from transformers import Qwen3VLConfig

from vlaforge.training.model import action_prefix, flow_matching, masks
from vlaforge.training.model.action_prefix import ActionPrefixConfig
from vlaforge.training.model.dit import DiT, DiTConfig
from vlaforge.training.model.flow_matching import FlowMatchingConfig
from vlaforge.training.model.masks import AttentionKind
from vlaforge.training.model.phase import Phase
from vlaforge.training.model.renamed_fields import current_names
from vlaforge.training.model.vlm import VLMBackbone, VLMContext


@dataclasses.dataclass(frozen=True, kw_only=True)
class VLAConfig:
    """Everything about the model that is not the VLM's own Hugging Face config."""

    dit: DiTConfig = dataclasses.field(default_factory=DiTConfig)
    """The DiT's sizes; `dit.num_layers` is also how many of the VLM's last layers it reads."""
    flow: FlowMatchingConfig = dataclasses.field(default_factory=FlowMatchingConfig)
    """τ distribution and the number of sampling steps."""
    prefix: ActionPrefixConfig = dataclasses.field(default_factory=ActionPrefixConfig)
    """Clean-prefix draws and loss weights of asynchronous post-training."""
    attention: AttentionKind = AttentionKind.CAUSAL
    """DiT-to-DiT mask used for training and sampling; asynchronous post-training switches it to Λ."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "attention", AttentionKind(self.attention))
        if max(self.prefix.prefix_lengths) >= self.dit.chunk_len:
            raise ValueError(
                f"VLAConfig.prefix.prefix_lengths reach {max(self.prefix.prefix_lengths)}, "
                f"which leaves no noisy action in a chunk of {self.dit.chunk_len}"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (enums as their values, tuples as lists)."""
        data = dataclasses.asdict(self)
        data["attention"] = self.attention.value
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "VLAConfig":
        """The inverse of `to_dict`; also reads the field names of files written before a rename
        (`renamed_fields.py`)."""
        prefix = dict(data["prefix"], prefix_lengths=tuple(data["prefix"]["prefix_lengths"]))
        return cls(
            dit=DiTConfig(**current_names(data["dit"])),
            flow=FlowMatchingConfig(**data["flow"]),
            prefix=ActionPrefixConfig(**prefix),
            attention=AttentionKind(data["attention"]),
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class RobotBatch:
    """A batch of robot timesteps, normalized and padded to the model's widths: what the loader's collate makes
    (`training/data/collate.py`) and the model trains on.

    The model reads `vlm_inputs`, `state`, `actions`, `action_mask` and `valid_len`. The loader also fills the frames,
    the state mask and each sample's lineage; a batch built by hand may leave them out.
    """

    vlm_inputs: Mapping[str, torch.Tensor] | None
    """The processor's output for images + instruction (input_ids, attention_mask, pixel_values, ...); None when the
    loader collated without a processor, and then the model cannot read the batch (`require_vlm_inputs`)."""
    state: torch.Tensor
    """[B, D_s] normalized, zero-padded state."""
    actions: torch.Tensor
    """[B, T, A] normalized, zero-padded action chunk."""
    action_mask: torch.Tensor
    """[B, A] true on the embodiment's real action dimensions."""
    valid_len: torch.Tensor
    """[B] int64: how many leading timesteps of the chunk are real (the rest is padding past the episode end)."""
    state_mask: torch.Tensor | None = None
    """[B, D_s] true on the embodiment's real state dimensions."""
    images: torch.Tensor | None = None
    """[B, N_cam, H, W, 3] uint8 frames in the loader's camera slots (black where a slot is empty)."""
    image_mask: torch.Tensor | None = None
    """[B, N_cam] true on the slots that hold a real frame."""
    keys: list[str] = dataclasses.field(default_factory=list)
    """Each sample's shard key."""
    components: list[str] = dataclasses.field(default_factory=list)
    """Each sample's corpus component."""
    epochs: list[int] = dataclasses.field(default_factory=list)
    """The component epoch each sample was drawn in."""
    embodiments: list[str] = dataclasses.field(default_factory=list)
    """Each sample's embodiment (the key of its normalization)."""
    instructions: list[str] = dataclasses.field(default_factory=list)
    """Each sample's language instruction."""

    def __len__(self) -> int:
        return self.state.shape[0]

    def require_vlm_inputs(self) -> Mapping[str, torch.Tensor]:
        """`vlm_inputs`, which the model needs: it reads each sample's frames and instruction as tokens."""
        if self.vlm_inputs is None:
            raise ValueError("this robot batch was collated without a processor; set CorpusLoader.Config.processor")
        return self.vlm_inputs

    def element_mask(self) -> torch.Tensor:
        """[B, T, A] true where both the timestep and the dimension are real."""
        steps = torch.arange(self.actions.shape[1], device=self.actions.device)
        valid_steps = steps[None, :] < self.valid_len[:, None]
        return valid_steps[:, :, None] & self.action_mask.bool()[:, None, :]


class VLAModel(nn.Module):
    """Qwen3-VL and the DiT that reads its last `config.dit.num_layers` layers' KV cache."""

    def __init__(self, vlm: VLMBackbone, config: VLAConfig) -> None:
        super().__init__()
        if vlm.num_kv_layers != config.dit.num_layers:
            raise ValueError(f"the VLM exposes {vlm.num_kv_layers} KV layers but the DiT has {config.dit.num_layers}")
        self.vlm = vlm
        self.dit = DiT(config.dit, vlm.geometry)
        self.config = config
        self.phase = Phase.POSTTRAIN_SYNC if config.attention is AttentionKind.CAUSAL else Phase.POSTTRAIN_ASYNC

    @classmethod
    def from_vlm_config(cls, vlm_config: Qwen3VLConfig, config: VLAConfig) -> "VLAModel":
        """Random weights everywhere (tests, benchmarks, and parameter counts on the meta device)."""
        return cls(VLMBackbone.from_config(vlm_config, num_kv_layers=config.dit.num_layers), config)

    @classmethod
    def from_vlm_pretrained(cls, name_or_path: str, config: VLAConfig, **vlm_options: Any) -> "VLAModel":
        """A pretrained Qwen3-VL (local directory or hub id) and a fresh DiT: the start of pre-training step 2."""
        vlm = VLMBackbone.from_pretrained(name_or_path, num_kv_layers=config.dit.num_layers, **vlm_options)
        return cls(vlm, config)

    def set_phase(self, phase: Phase) -> None:
        """Freeze or unfreeze the VLM and pick the DiT mask that `phase` trains with."""
        self.phase = Phase(phase)
        frozen = self.phase.freezes_vlm
        self.vlm.requires_grad_(not frozen)
        # A frozen conditioner also stays in eval mode, so no dropout or norm statistics move under it.
        self.vlm.train(self.training and not frozen)
        self.config = dataclasses.replace(self.config, attention=self.phase.attention)

    def train(self, mode: bool = True) -> "VLAModel":
        super().train(mode)
        if self.phase.freezes_vlm:
            self.vlm.eval()
        return self

    def encode(self, vlm_inputs: Mapping[str, torch.Tensor]) -> VLMContext:
        """The VLM's KV context; no autograd graph is kept through a frozen VLM."""
        frozen = not any(p.requires_grad for p in self.vlm.parameters())
        with torch.no_grad() if frozen else contextlib.nullcontext():
            return self.vlm.encode(vlm_inputs)

    def velocity(self, x, tau, state, context, prefix_lengths, action_mask) -> torch.Tensor:
        """The DiT's velocity [B, T, A] for chunk x [B, T, A]; padded action dimensions are zeroed on the way in."""
        mask = masks.dit_mask(self.config.attention, self.config.dit.chunk_len, self.config.dit.attention_window)
        dtype = self.dit.sink.dtype
        x = (x * action_mask[:, None, :].to(x.dtype)).to(dtype)
        return self.dit(x, tau.to(dtype), state.to(dtype), context, prefix_lengths, mask).float()

    def flow_matching_loss(self, batch: RobotBatch) -> dict[str, torch.Tensor]:
        """The current phase's loss: masked ‖v − (a − ε)‖², error-weighted on async samples with a prefix."""
        actions = batch.actions.float()
        size, length = actions.shape[:2]
        context = self.encode(batch.require_vlm_inputs())
        noise = torch.randn_like(actions)
        tau = flow_matching.sample_tau(size, self.config.flow, actions.device)
        prefix_lengths = self._training_prefix_lengths(size, length).to(actions.device)
        x_tau = flow_matching.interpolate(actions, noise, tau)
        is_prefix = ~action_prefix.noisy_timesteps(prefix_lengths, length)
        x_in = torch.where(is_prefix[..., None], actions, x_tau)
        velocity = self.velocity(x_in, tau, batch.state, context, prefix_lengths, batch.action_mask)
        loss_mask = batch.element_mask() & ~is_prefix[..., None]
        weights = None
        if self.phase.clean_prefixes:
            predicted = flow_matching.one_step_actions(x_tau, velocity, tau)
            weights = action_prefix.error_weights(predicted, actions, loss_mask, prefix_lengths, self.config.prefix)
        target = flow_matching.velocity_target(actions, noise)
        loss = flow_matching.masked_mse(velocity, target, loss_mask, weights)
        return {"loss": loss, "tau": tau, "prefix_lengths": prefix_lengths}

    def _training_prefix_lengths(self, size: int, length: int) -> torch.Tensor:
        if self.phase.clean_prefixes:
            return action_prefix.sample_prefix_lengths(size, length, self.config.prefix)
        return torch.zeros(size, dtype=torch.long)

    @torch.no_grad()
    def sample_actions(
        self,
        vlm_inputs: Mapping[str, torch.Tensor],
        state: torch.Tensor,
        action_mask: torch.Tensor,
        noise: torch.Tensor,
        prefix: torch.Tensor | None = None,
        prefix_lengths: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """A chunk [B, T, A] from noise [B, T, A] in `config.flow.num_steps` Euler steps, keeping a clean prefix."""
        context = self.vlm.encode(vlm_inputs)
        lengths = torch.zeros(noise.shape[0], dtype=torch.long, device=noise.device)
        lengths = lengths if prefix_lengths is None else prefix_lengths.to(noise.device)

        def velocity_fn(x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
            return self.velocity(x, tau, state, context, lengths, action_mask)

        return flow_matching.euler_sample(velocity_fn, noise.float(), self.config.flow.num_steps, prefix, lengths)
