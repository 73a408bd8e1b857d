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
from vlaforge.training.model.action_prefix import ActionPrefixConfig, WeightMode
from vlaforge.training.model.dit import DiT, DiTConfig
from vlaforge.training.model.flow_matching import FlowMatchingConfig
from vlaforge.training.model.masks import AttentionKind
from vlaforge.training.model.phase import Phase
from vlaforge.training.model.renamed_fields import current_names
from vlaforge.training.model.vlm import IMAGE_GRID_THW, PIXEL_VALUES, VLMBackbone, VLMContext


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
        if IMAGE_GRID_THW in self.vlm_inputs and PIXEL_VALUES not in self.vlm_inputs:
            raise ValueError("this robot batch's pixel values are made on the training device: pass it through "
                             "CorpusLoader.to_device(batch, device) first")
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

    def set_phase(self, phase: Phase, attention: AttentionKind | None = None) -> None:
        """Freeze or unfreeze the VLM and pick the DiT mask `phase` trains with (or `attention`, for an ablation such
        as "training RTC": asynchronous post-training with the causal mask)."""
        self.phase = Phase(phase)
        frozen = self.phase.freezes_vlm
        self.vlm.requires_grad_(not frozen)
        # A frozen conditioner also stays in eval mode, so no dropout or norm statistics move under it.
        self.vlm.train(self.training and not frozen)
        kind = self.phase.attention if attention is None else AttentionKind(attention)
        self.config = dataclasses.replace(self.config, attention=kind)

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

    def dit_mask(self, prefix_lengths: torch.Tensor) -> torch.Tensor:
        """The DiT-to-DiT mask the model samples with, for these prefix lengths [B]: [S, S] or [B, S, S]."""
        dit = self.config.dit
        return masks.dit_mask(self.config.attention, dit.chunk_len, dit.attention_window, prefix_lengths)

    def velocity(self, x, tau, state, context, prefix_lengths, action_mask, dit_to_dit=None) -> torch.Tensor:
        """The DiT's velocity [B, T, A] for chunk x [B, T, A]; padded action dimensions are zeroed on the way in.
        `dit_to_dit`: the mask (default: `dit_mask(prefix_lengths)`)."""
        mask = self.dit_mask(prefix_lengths) if dit_to_dit is None else dit_to_dit
        dtype = self.dit.sink.dtype
        x = (x * action_mask[:, None, :].to(x.dtype)).to(dtype)
        return self.dit(x, tau.to(dtype), state.to(dtype), context, prefix_lengths, mask).float()

    def flow_matching_loss(self, batch: RobotBatch) -> dict[str, torch.Tensor]:
        """The current phase's loss: masked ‖v − (a − ε)‖², error-weighted on asynchronous samples with a
        prefix.

        The VLM runs once per sample; the DiT trains on `flow.training_repeat` draws of (ε, τ, Δtc) per sample.
        Returns the loss and, per draw [B·repeat], τ, the prefix lengths and the mean loss weight.
        """
        repeat = self.config.flow.training_repeat
        context = self.encode(batch.require_vlm_inputs()).repeat(repeat)
        actions = batch.actions.float().repeat_interleave(repeat, dim=0)
        state = batch.state.repeat_interleave(repeat, dim=0)
        action_mask = batch.action_mask.repeat_interleave(repeat, dim=0)
        element_mask = batch.element_mask().repeat_interleave(repeat, dim=0)
        size, length = actions.shape[:2]
        noise = torch.randn_like(actions)
        tau = flow_matching.sample_tau(size, self.config.flow, actions.device)
        prefix_lengths = self._training_prefix_lengths(size, length).to(actions.device)
        mask = self._training_mask(prefix_lengths)
        x_tau = flow_matching.interpolate(actions, noise, tau)
        is_prefix = ~action_prefix.noisy_timesteps(prefix_lengths, length)
        x_in = torch.where(is_prefix[..., None], actions, x_tau)
        velocity = self.velocity(x_in, tau, state, context, prefix_lengths, action_mask, mask)
        loss_mask = element_mask & ~is_prefix[..., None]
        weights = None
        if self.phase.clean_prefixes and self.config.prefix.weight_mode is not WeightMode.NONE:
            predicted = self._online_prediction(x_tau, velocity, tau, noise, actions, state, context, prefix_lengths,
                                                action_mask, mask)
            weights = action_prefix.error_weights(predicted, actions, loss_mask, prefix_lengths, self.config.prefix)
        target = flow_matching.velocity_target(actions, noise)
        loss = flow_matching.masked_mse(velocity, target, loss_mask, weights)
        mean_weight = torch.ones(size, device=actions.device) if weights is None else (
            (weights * loss_mask).sum(dim=(1, 2)) / loss_mask.sum(dim=(1, 2)).clamp_min(1))
        return {"loss": loss, "tau": tau, "prefix_lengths": prefix_lengths, "weights": mean_weight.detach()}

    def _training_prefix_lengths(self, size: int, length: int) -> torch.Tensor:
        if self.phase.clean_prefixes:
            return action_prefix.sample_prefix_lengths(size, length, self.config.prefix)
        return torch.zeros(size, dtype=torch.long)

    def _training_mask(self, prefix_lengths: torch.Tensor) -> torch.Tensor:
        """The DiT mask for a training draw: the model's, with random prefix actions hidden from the noisy tokens
        (`prefix.mask_probability`) when the phase trains with prefixes."""
        mask = self.dit_mask(prefix_lengths)
        prefix = self.config.prefix
        if self.phase.clean_prefixes and prefix.mask_probability > 0 and bool((prefix_lengths > 0).any()):
            mask = masks.drop_prefix_keys(mask, prefix_lengths, prefix.mask_probability, prefix.mask_keep_last)
        return mask

    def _online_prediction(self, x_tau, velocity, tau, noise, actions, state, context, prefix_lengths, action_mask,
                           mask) -> torch.Tensor:
        """The chunk [B, T, A] whose error against the ground truth weights the loss (`prefix.weight_mode`).

        Sampled (the release): a full `flow.num_steps` Euler pass from the draw's own noise, holding the clean
        prefix, under the training mask, without gradient; only the draws with a prefix run it (the others keep
        weight 1 anyway). One step: x_τ + (1 − τ)·v of this forward pass.
        """
        if self.config.prefix.weight_mode is WeightMode.ONE_STEP:
            return flow_matching.one_step_actions(x_tau, velocity.detach(), tau)
        predicted = actions.clone()
        rows = torch.nonzero(prefix_lengths > 0).flatten()
        if len(rows) == 0:
            return predicted
        sub_mask = mask[rows] if mask.dim() == 3 else mask
        sub_context, sub_lengths = context.select(rows), prefix_lengths[rows]

        def velocity_fn(x: torch.Tensor, step_tau: torch.Tensor) -> torch.Tensor:
            return self.velocity(x, step_tau, state[rows], sub_context, sub_lengths, action_mask[rows], sub_mask)

        with torch.no_grad():
            predicted[rows] = flow_matching.euler_sample(velocity_fn, noise[rows], self.config.flow.num_steps,
                                                         actions[rows], sub_lengths)
        return predicted

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
        mask = self.dit_mask(lengths)

        def velocity_fn(x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
            return self.velocity(x, tau, state, context, lengths, action_mask, mask)

        return flow_matching.euler_sample(velocity_fn, noise.float(), self.config.flow.num_steps, prefix, lengths)
