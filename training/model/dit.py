"""The action DiT: L layers that each attend to their own tokens plus the matching VLM layer's KV cache.

Together with the VLM it forms a mixture of transformers: DiT layer i has its own weights but the attention
geometry (KV heads, head width, RoPE) of VLM layer `num_layers - L + i`, and concatenates that layer's cached keys
and values in front of its own. Tokens are `[SINK], s_t, a_t, ..., a_{t+T-1}`; the flow timestep τ enters through
adaLN with zero-initialised modulation (every block is the identity at initialisation, as in DiT's adaLN-Zero).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from vlaforge.training.model import rope
from vlaforge.training.model.masks import joint_mask
from vlaforge.training.model.vlm import AttentionGeometry, VLMContext


@dataclasses.dataclass(frozen=True, kw_only=True)
class DiTConfig:
    """Sizes of the DiT. Its KV heads, head width and RoPE base come from the VLM it is built against."""

    num_layers: int = 16
    """DiT layers; layer i reads VLM layer (VLM layers − num_layers + i). The report uses 16."""
    hidden_size: int = 1024
    """Width of the DiT's residual stream."""
    num_heads: int = 8
    """Query heads; a multiple of the VLM's KV heads (grouped-query attention against the shared cache)."""
    intermediate_size: int = 4096
    """Width of the SwiGLU MLP."""
    state_dim: int = 32
    """Proprioceptive state width after zero-padding (32 in the release)."""
    action_dim: int = 32
    """Action width after zero-padding (32 in the release)."""
    chunk_len: int = 30
    """T, actions per chunk: 30 (1 s at 30 Hz) on the real robot, 10 for LIBERO/CALVIN, 4 for SimplerEnv."""
    noisy_position_offset: int = 10
    """Added to the RoPE positions of noisy action tokens so they differ from the clean prefix (figure 4: 10)."""
    attention_window: int = 4
    """w of the Λ mask: an action token sees the actions of the previous w timesteps (release default 4)."""
    time_embedding_dim: int = 256
    """Width of the sinusoidal τ features fed to the time MLP."""

    def __post_init__(self) -> None:
        for name in ("num_layers", "hidden_size", "num_heads", "intermediate_size", "state_dim", "action_dim",
                     "chunk_len", "time_embedding_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"DiTConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("noisy_position_offset", "attention_window"):
            if getattr(self, name) < 0:
                raise ValueError(f"DiTConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.time_embedding_dim % 2:
            raise ValueError(f"DiTConfig.time_embedding_dim must be even, got {self.time_embedding_dim}")

    def check_against(self, geometry: AttentionGeometry) -> None:
        """Raise if this DiT cannot share attention with a VLM of `geometry`."""
        if self.num_layers > geometry.num_layers:
            raise ValueError(f"DiTConfig.num_layers={self.num_layers} exceeds the VLM's {geometry.num_layers} layers")
        if self.num_heads % geometry.num_kv_heads:
            raise ValueError(
                f"DiTConfig.num_heads={self.num_heads} must be a multiple of the VLM's {geometry.num_kv_heads} KV heads"
            )


def _mlp(width_in: int, width_hidden: int, width_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(width_in, width_hidden), nn.SiLU(), nn.Linear(width_hidden, width_out))


def sinusoidal_features(tau: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """[..., dim] cos/sin features of τ scaled to [0, 1000], the usual diffusion-timestep range."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=tau.device) / half)
    angles = (tau.float() * 1000.0)[..., None] * freqs
    return torch.cat((angles.cos(), angles.sin()), dim=-1)


class DiTAttention(nn.Module):
    """Attention over [VLM cache of the matching layer ‖ DiT tokens], with Qwen3's per-head query/key RMSNorm."""

    def __init__(self, config: DiTConfig, geometry: AttentionGeometry) -> None:
        super().__init__()
        self.num_heads, self.head_dim = config.num_heads, geometry.head_dim
        self.q_proj = nn.Linear(config.hidden_size, config.num_heads * geometry.head_dim, bias=False)
        self.k_proj = nn.Linear(config.hidden_size, geometry.num_kv_heads * geometry.head_dim, bias=False)
        self.v_proj = nn.Linear(config.hidden_size, geometry.num_kv_heads * geometry.head_dim, bias=False)
        self.o_proj = nn.Linear(config.num_heads * geometry.head_dim, config.hidden_size, bias=False)
        # The cached VLM keys were RMS-normed per head; norming the DiT's queries and keys the same way keeps the
        # logits against the cache and against the DiT's own keys on one scale.
        self.q_norm = nn.RMSNorm(geometry.head_dim, eps=geometry.rms_norm_eps)
        self.k_norm = nn.RMSNorm(geometry.head_dim, eps=geometry.rms_norm_eps)

    def forward(self, x, cache_k, cache_v, cos, sin, mask) -> torch.Tensor:
        """x [B, S, D]; cache_k/v [B, H_kv, S_vlm, hd]; cos/sin [B, S, hd]; mask [B, 1, S, S_vlm + S] -> [B, S, D]."""
        batch, length, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(batch, length, -1, self.head_dim)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(batch, length, -1, self.head_dim)).transpose(1, 2)
        v = self.v_proj(x).view(batch, length, -1, self.head_dim).transpose(1, 2)
        q, k = rope.apply_rotary(q, cos, sin), rope.apply_rotary(k, cos, sin)
        k = torch.cat((cache_k.to(k.dtype), k), dim=2)
        v = torch.cat((cache_v.to(v.dtype), v), dim=2)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        return self.o_proj(out.transpose(1, 2).reshape(batch, length, -1))


class DiTBlock(nn.Module):
    """Pre-norm attention + SwiGLU MLP, each modulated (shift, scale, gate) by τ."""

    def __init__(self, config: DiTConfig, geometry: AttentionGeometry) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(config.hidden_size, elementwise_affine=False, eps=1e-6)
        self.attn = DiTAttention(config, geometry)
        self.mlp_norm = nn.LayerNorm(config.hidden_size, elementwise_affine=False, eps=1e-6)
        self.gate_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.up_proj = nn.Linear(config.hidden_size, config.intermediate_size, bias=False)
        self.down_proj = nn.Linear(config.intermediate_size, config.hidden_size, bias=False)
        # Per-layer offset added to the shared τ modulation (adaLN-single); zero so the block starts as identity.
        self.modulation = nn.Parameter(torch.zeros(6, config.hidden_size))

    def forward(self, x, shared_modulation, cache_k, cache_v, cos, sin, mask) -> torch.Tensor:
        """x [B, S, D], shared_modulation [B, S, 6, D] -> [B, S, D]."""
        shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = (shared_modulation + self.modulation).unbind(dim=2)
        h = self.attn_norm(x) * (1 + scale_a) + shift_a
        x = x + gate_a * self.attn(h, cache_k, cache_v, cos, sin, mask)
        h = self.mlp_norm(x) * (1 + scale_m) + shift_m
        return x + gate_m * self.down_proj(F.silu(self.gate_proj(h)) * self.up_proj(h))


class DiT(nn.Module):
    """Predicts the flow velocity of an action chunk from the VLM context, the state and τ."""

    def __init__(self, config: DiTConfig, geometry: AttentionGeometry) -> None:
        super().__init__()
        config.check_against(geometry)
        self.config, self.geometry = config, geometry
        width = config.hidden_size
        self.sink = nn.Parameter(torch.randn(width) * 0.02)
        self.state_encoder = _mlp(config.state_dim, width, width)
        self.action_encoder = _mlp(config.action_dim, width, width)
        self.time_mlp = _mlp(config.time_embedding_dim, width, width)
        self.time_modulation = nn.Linear(width, 6 * width)
        self.blocks = nn.ModuleList(DiTBlock(config, geometry) for _ in range(config.num_layers))
        self.final_norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.final_modulation = nn.Linear(width, 2 * width)
        self.action_decoder = _mlp(width, width, config.action_dim)
        for layer in (self.time_modulation, self.final_modulation):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)
        self.activation_checkpointing = False
        """Recompute each block's activations in the backward pass instead of keeping them (a training setting the
        trainer turns on; not part of the config, so a saved policy does not carry it)."""

    def token_taus(self, tau: torch.Tensor, prefix_lengths: torch.Tensor) -> torch.Tensor:
        """τ per token [B, S]: the sample's τ, except 1 (clean) on the committed prefix actions."""
        length = rope.NUM_CONTEXT_TOKENS + self.config.chunk_len
        timestep = torch.arange(length, device=tau.device) - rope.NUM_CONTEXT_TOKENS
        is_prefix = (timestep[None, :] >= 0) & (timestep[None, :] < prefix_lengths[:, None])
        return torch.where(is_prefix, torch.ones_like(tau)[:, None], tau[:, None].expand(-1, length))

    def forward(
        self,
        actions: torch.Tensor,
        tau: torch.Tensor,
        state: torch.Tensor,
        context: VLMContext,
        prefix_lengths: torch.Tensor,
        dit_to_dit: torch.Tensor,
    ) -> torch.Tensor:
        """Velocity [B, T, A] for the chunk `actions` [B, T, A] (clean on the prefix, x_τ after it).

        τ [B], state [B, D_s], prefix_lengths [B]; `dit_to_dit` [S, S] or [B, S, S] is the mask from `masks.py`.
        """
        batch = actions.shape[0]
        tokens = torch.cat(
            (
                self.sink.expand(batch, 1, -1),
                self.state_encoder(state)[:, None],
                self.action_encoder(actions),
            ),
            dim=1,
        )
        features = sinusoidal_features(self.token_taus(tau, prefix_lengths), self.config.time_embedding_dim)
        time = F.silu(self.time_mlp(features.to(self.sink.dtype)))
        shared = self.time_modulation(time).unflatten(-1, (6, -1))
        positions = rope.dit_positions(
            context.next_position, prefix_lengths, self.config.chunk_len, self.config.noisy_position_offset
        )
        # Built here in float32 rather than kept as a buffer, so casting the DiT to bf16 cannot round the frequencies.
        inv_freq = rope.inverse_frequencies(self.geometry.head_dim, self.geometry.rope_theta).to(positions.device)
        cos, sin = rope.rotary_cos_sin(positions, inv_freq)
        mask = joint_mask(context.valid, dit_to_dit)
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for block, cache_k, cache_v in zip(self.blocks, context.keys, context.values, strict=True):
            if recompute:
                tokens = checkpoint(block, tokens, shared, cache_k, cache_v, cos, sin, mask, use_reentrant=False)
            else:
                tokens = block(tokens, shared, cache_k, cache_v, cos, sin, mask)
        shift, scale = self.final_modulation(time).chunk(2, dim=-1)
        out = self.final_norm(tokens) * (1 + scale) + shift
        return self.action_decoder(out[:, rope.NUM_CONTEXT_TOKENS :])
