"""Rotary positions of the DiT tokens, in the VLM's rotary geometry.

The DiT attends to keys the VLM already rotated with its multimodal RoPE. For text tokens Qwen3-VL gives the
temporal, height and width components the same index, and its interleaved M-RoPE then reduces exactly to plain 1-D
RoPE with the same inverse frequencies. So the DiT rotates its queries and keys with 1-D RoPE at positions that
continue the VLM's sequence: a DiT token at position p sees a cached key at position q with offset p - q, exactly as
a next text token of the VLM would.
"""

from __future__ import annotations

import torch

# Token layout of the DiT sequence: [SINK], s_t, then one token per action timestep.
SINK_INDEX = 0
STATE_INDEX = 1
NUM_CONTEXT_TOKENS = 2


def inverse_frequencies(head_dim: int, theta: float) -> torch.Tensor:
    """The RoPE inverse frequencies, [head_dim / 2], as Qwen3-VL's text rotary embedding computes them."""
    return 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))


def dit_positions(
    next_vlm_position: torch.Tensor, prefix_lengths: torch.Tensor, chunk_len: int, noisy_offset: int
) -> torch.Tensor:
    """RoPE positions of the DiT tokens, [B, 2 + T], as in the report's figure 4.

    `[SINK]` sits at `next_vlm_position` (the first position after the VLM's last valid token, [B]), the state
    after it, and action timestep k at `next + 2 + k`. Noisy action tokens (k >= the sample's prefix length,
    `prefix_lengths` [B]) get `noisy_offset` more, so the model can tell them from the clean prefix.
    """
    local = torch.arange(NUM_CONTEXT_TOKENS + chunk_len, device=next_vlm_position.device)
    timestep = local - NUM_CONTEXT_TOKENS
    noisy = (timestep[None, :] >= prefix_lengths[:, None]) & (timestep[None, :] >= 0)
    return next_vlm_position[:, None] + local[None, :] + noisy.long() * noisy_offset


def rotary_cos_sin(positions: torch.Tensor, inv_freq: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables, each [B, S, head_dim], for integer positions [B, S] (computed in float32)."""
    angles = positions.to(torch.float32)[..., None] * inv_freq.to(positions.device)
    angles = torch.cat((angles, angles), dim=-1)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate x [B, H, S, head_dim] by the tables [B, S, head_dim] (the rotate-half convention of Qwen)."""
    cos, sin = cos[:, None].to(x.dtype), sin[:, None].to(x.dtype)
    first, second = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-second, first), dim=-1) * sin
