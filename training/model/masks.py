"""Attention masks of the DiT, as small pure functions. True means "may attend".

The DiT sequence is `[SINK], s_t, a_t, ..., a_{t+T-1}` (see `rope.py`). Every DiT token also sees the VLM's
cached keys and values of its valid (non-padding) tokens; these functions build the DiT-to-DiT part and join the
two.
"""

from __future__ import annotations

import enum

import torch

from vlaforge.training.model.rope import NUM_CONTEXT_TOKENS


class AttentionKind(str, enum.Enum):
    """Which DiT-to-DiT mask a model trains and samples with."""

    CAUSAL = "causal"  # pre-training step 2 and synchronous post-training
    LAMBDA = "lambda"  # asynchronous post-training (report figure 4)


def causal_mask(chunk_len: int) -> torch.Tensor:
    """[S, S] with S = 2 + T: every token sees itself and the tokens before it."""
    size = NUM_CONTEXT_TOKENS + chunk_len
    return torch.ones(size, size, dtype=torch.bool).tril()


def lambda_mask(chunk_len: int, window: int) -> torch.Tensor:
    """[S, S] Λ-shaped mask: an action token sees the sink, the state, and the actions of the last `window` steps.

    Action timestep k attends to timesteps k - window .. k (itself included), so the tokens right after a clean
    prefix see it, and later ones do not and must look at the VLM's vision and language instead. The sink and
    state rows stay causal (they come before every action).
    """
    if window < 0:
        raise ValueError(f"window must be >= 0, got {window}")
    mask = causal_mask(chunk_len)
    steps = torch.arange(chunk_len)
    too_old = steps[None, :] < steps[:, None] - window
    mask[NUM_CONTEXT_TOKENS:, NUM_CONTEXT_TOKENS:] &= ~too_old
    return mask


def dit_mask(kind: AttentionKind, chunk_len: int, window: int) -> torch.Tensor:
    """The DiT-to-DiT mask [S, S] of the given kind."""
    if AttentionKind(kind) is AttentionKind.LAMBDA:
        return lambda_mask(chunk_len, window)
    return causal_mask(chunk_len)


def joint_mask(vlm_valid: torch.Tensor, dit_to_dit: torch.Tensor) -> torch.Tensor:
    """[B, 1, S, S_vlm + S]: every DiT token sees the valid VLM tokens [B, S_vlm], then `dit_to_dit` [S, S].

    Padding in the VLM's batch is hidden from the DiT, so changing a padding token cannot change an action.
    """
    batch, size = vlm_valid.shape[0], dit_to_dit.shape[0]
    cache = vlm_valid.bool()[:, None, None, :].expand(batch, 1, size, vlm_valid.shape[1])
    own = dit_to_dit.to(vlm_valid.device)[None, None].expand(batch, 1, size, size)
    return torch.cat((cache, own), dim=-1)


def prefix_reach(prefix_length: int, window: int, num_layers: int) -> int:
    """The last action timestep whose output can depend on a prefix of `prefix_length` actions under the Λ mask.

    One layer lets timestep k see k - window; stacking layers chains those hops, so after `num_layers` layers the
    prefix (timesteps < prefix_length) reaches timestep prefix_length - 1 + window * num_layers. Outputs past it
    are exactly independent of the prefix.
    """
    return prefix_length - 1 + window * num_layers
