"""Attention masks of the DiT, as small pure functions. True means "may attend".

The DiT sequence is `[SINK], s_t, a_t, ..., a_{t+T-1}` (see `rope.py`). Every DiT token also sees the VLM's
cached keys and values of its valid (non-padding) tokens; these functions build the DiT-to-DiT part and join the
two. A DiT-to-DiT mask is [S, S] when every sample shares it, or [B, S, S] when it depends on the sample's prefix
(`LAMBDA_STRICT`, random prefix-key dropping in training).

How far a prefix reaches under the Λ mask. One layer lets action timestep k see k − w … k. Stacking L layers chains
those hops, so a prefix of Δtc actions reaches timestep Δtc − 1 + L·w (`prefix_reach`). With the report's model
(L = 16, w = 4, T = 30) that is past the end of every chunk: through the stack, every noisy output depends on the
prefix (tests/training/test_dit.py checks it by gradient), and Λ only shapes how directly. `LAMBDA_STRICT` cuts the
indirect paths: noisy tokens w or more steps after the prefix attend only to each other (within the window), so
they cannot depend on the prefix through any number of layers.
"""

from __future__ import annotations

import enum

import torch

from vlaforge.training.model.rope import NUM_CONTEXT_TOKENS


class AttentionKind(str, enum.Enum):
    """Which DiT-to-DiT mask a model trains and samples with."""

    CAUSAL = "causal"  # pre-training step 2 and synchronous post-training; with a prefix: "training RTC"
    LAMBDA = "lambda"  # asynchronous post-training (report figure 4): a window of w past actions per layer
    LAMBDA_STRICT = "lambda_strict"  # Λ, and noisy tokens w past the prefix never depend on it, through any layer


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


def strict_lambda_mask(chunk_len: int, window: int, prefix_lengths: torch.Tensor) -> torch.Tensor:
    """[B, S, S]: the Λ mask, and per sample with a prefix of P > 0 actions, the noisy timesteps k >= P + w ("far")
    attend to no action before P + w. The first w noisy timesteps see the prefix directly; the far ones see only
    each other (within the window), the sink and the state, none of which depends on the prefix, so no layer can
    carry the prefix to them. Samples without a prefix (P = 0) get the plain Λ mask."""
    base = lambda_mask(chunk_len, window).to(prefix_lengths.device)
    steps = torch.arange(chunk_len, device=prefix_lengths.device)
    boundary = (prefix_lengths + window)[:, None]
    far = (steps[None, :] >= boundary) & (prefix_lengths[:, None] > 0)  # [B, T]
    near = steps[None, :] < boundary  # [B, T]: prefix and the first w noisy timesteps
    mask = base.expand(len(prefix_lengths), -1, -1).clone()
    mask[:, NUM_CONTEXT_TOKENS:, NUM_CONTEXT_TOKENS:] &= ~(far[:, :, None] & near[:, None, :])
    return mask


def dit_mask(kind: AttentionKind, chunk_len: int, window: int,
             prefix_lengths: torch.Tensor | None = None) -> torch.Tensor:
    """The DiT-to-DiT mask of the given kind: [S, S], or [B, S, S] for `LAMBDA_STRICT` (which needs the prefix
    lengths [B]; without them it is the plain Λ mask)."""
    kind = AttentionKind(kind)
    if kind is AttentionKind.LAMBDA_STRICT and prefix_lengths is not None:
        return strict_lambda_mask(chunk_len, window, prefix_lengths)
    if kind is AttentionKind.CAUSAL:
        return causal_mask(chunk_len)
    return lambda_mask(chunk_len, window)


def drop_prefix_keys(dit_to_dit: torch.Tensor, prefix_lengths: torch.Tensor, probability: float,
                     keep_last: int) -> torch.Tensor:
    """[B, S, S]: `dit_to_dit` ([S, S] or [B, S, S]) with random prefix actions hidden from the noisy tokens.

    Per sample, each prefix action but the last `keep_last` is hidden from every noisy token with `probability`
    (the public release's training augmentation: 0.5, keeping the last 2), so the model does not lean on the whole
    committed prefix. Prefix rows, the sink and the state are untouched. Uses torch's global RNG.
    """
    batch = len(prefix_lengths)
    size = dit_to_dit.shape[-1]
    chunk_len = size - NUM_CONTEXT_TOKENS
    mask = dit_to_dit.expand(batch, size, size).clone() if dit_to_dit.dim() == 2 else dit_to_dit.clone()
    steps = torch.arange(chunk_len, device=prefix_lengths.device)
    lengths = prefix_lengths[:, None]
    droppable = steps[None, :] < lengths - keep_last  # [B, T] prefix columns that may be hidden
    hidden = droppable & (torch.rand(batch, chunk_len).to(prefix_lengths.device) < probability)
    noisy_rows = steps[None, :] >= lengths  # [B, T]
    action_block = mask[:, NUM_CONTEXT_TOKENS:, NUM_CONTEXT_TOKENS:]
    action_block &= ~(noisy_rows[:, :, None] & hidden.to(mask.device)[:, None, :])
    return mask


def joint_mask(vlm_valid: torch.Tensor, dit_to_dit: torch.Tensor) -> torch.Tensor:
    """[B, 1, S, S_vlm + S]: every DiT token sees the valid VLM tokens [B, S_vlm], then `dit_to_dit` ([S, S] or
    [B, S, S]).

    Padding in the VLM's batch is hidden from the DiT, so changing a padding token cannot change an action.
    """
    batch, size = vlm_valid.shape[0], dit_to_dit.shape[-1]
    cache = vlm_valid.bool()[:, None, None, :].expand(batch, 1, size, vlm_valid.shape[1])
    own = dit_to_dit.to(vlm_valid.device)
    own = own[None, None].expand(batch, 1, size, size) if own.dim() == 2 else own[:, None]
    return torch.cat((cache, own), dim=-1)


def prefix_reach(prefix_length: int, window: int, num_layers: int) -> int:
    """The last action timestep whose output can depend on a prefix of `prefix_length` actions under the Λ mask.

    One layer lets timestep k see k - window; stacking layers chains those hops, so after `num_layers` layers the
    prefix (timesteps < prefix_length) reaches timestep prefix_length - 1 + window * num_layers. Outputs past it
    are exactly independent of the prefix; with the report's 16 layers and w = 4 no timestep of a 30-step chunk is
    past it (see the module docstring, and `LAMBDA_STRICT` for a mask that bounds the reach to w).
    """
    return prefix_length - 1 + window * num_layers
