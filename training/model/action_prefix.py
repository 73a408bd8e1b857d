"""Asynchronous post-training: a clean action prefix of Δtc committed steps, and the error-based loss weights."""

from __future__ import annotations

import dataclasses

import torch


@dataclasses.dataclass(frozen=True, kw_only=True)
class ActionPrefixConfig:
    """How often and how long a training sample's clean prefix is, and how its loss is re-weighted."""

    async_probability: float = 0.5
    """Probability that a sample is trained for asynchronous execution (gets a prefix draw); the others get Δtc = 0."""
    prefix_lengths: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6)
    """The Δtc an asynchronous sample draws from, uniformly ({0, ..., 6} in the report)."""
    weight_min: float = 0.5
    """Lower clamp of the error-based loss weight (the release's reported 0.5)."""
    weight_max: float = 5.0
    """Upper clamp of the error-based loss weight (the release's reported 5)."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.async_probability <= 1.0:
            raise ValueError(f"ActionPrefixConfig.async_probability must be in [0, 1], got {self.async_probability}")
        if not self.prefix_lengths or min(self.prefix_lengths) < 0:
            raise ValueError(f"ActionPrefixConfig.prefix_lengths must be non-empty and >= 0, got {self.prefix_lengths}")
        if not 0 < self.weight_min <= self.weight_max:
            raise ValueError(
                f"ActionPrefixConfig needs 0 < weight_min <= weight_max, got {self.weight_min}, {self.weight_max}"
            )


def sample_prefix_lengths(batch_size: int, chunk_len: int, config: ActionPrefixConfig) -> torch.Tensor:
    """Δtc per sample, [B] long: 0 for synchronous samples, a uniform draw for asynchronous ones (global RNG)."""
    if max(config.prefix_lengths) >= chunk_len:
        raise ValueError(
            f"prefix lengths up to {max(config.prefix_lengths)} leave no noisy action in a chunk of {chunk_len}"
        )
    choices = torch.tensor(config.prefix_lengths, dtype=torch.long)
    drawn = choices[torch.randint(len(choices), (batch_size,))]
    is_async = torch.rand(batch_size) < config.async_probability
    return torch.where(is_async, drawn, torch.zeros_like(drawn))


def noisy_timesteps(prefix_lengths: torch.Tensor, chunk_len: int) -> torch.Tensor:
    """[B, T] true where the timestep is noisy (at or after the sample's prefix)."""
    steps = torch.arange(chunk_len, device=prefix_lengths.device)
    return steps[None, :] >= prefix_lengths[:, None]


def error_weights(
    predicted: torch.Tensor,
    actions: torch.Tensor,
    loss_mask: torch.Tensor,
    prefix_lengths: torch.Tensor,
    config: ActionPrefixConfig,
) -> torch.Tensor:
    """Per-element loss weights [B, T, A] from the L1 error of the online prediction (detached).

    For samples with Δtc > 0 the weight is |predicted − actions| divided by its mean over those samples' loss
    elements in the batch, clamped to [weight_min, weight_max]: elements the model gets most wrong count most.
    Samples with Δtc = 0 keep weight 1, as in synchronous training.
    """
    error = (predicted.detach() - actions).abs()
    with_prefix = (prefix_lengths > 0)[:, None, None] & loss_mask.bool()
    if not with_prefix.any():
        return torch.ones_like(error)
    normalized = error / error[with_prefix].mean().clamp_min(1e-8)
    weights = normalized.clamp(config.weight_min, config.weight_max)
    return torch.where(with_prefix, weights, torch.ones_like(weights))
