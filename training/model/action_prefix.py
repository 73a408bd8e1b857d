"""Asynchronous post-training: a clean action prefix of Δtc committed steps, and the error-based loss weights.

Defaults follow the public release's `xr0` code (see docs/training.md, "What the release does"): half the samples
get a prefix, of a length uniform in 1..6; prefix actions but the last 2 are hidden from the noisy tokens with
probability 0.5; the loss is weighted per element by the error of a full sampling pass without gradient. The
paper's text instead draws Δtc uniformly from {0, ..., 6} (`async_probability=1.0`,
`prefix_lengths=(0, 1, 2, 3, 4, 5, 6)`) and speaks of weighting samples (`weight_per="sample"`).
"""

from __future__ import annotations

import dataclasses
import enum

import torch


class WeightMode(str, enum.Enum):
    """Where the "online prediction" whose error weights the loss comes from."""

    SAMPLED = "sampled"
    """A full `num_steps` Euler sampling pass from the sample's noise, without gradient (the release)."""
    ONE_STEP = "one_step"
    """The one-step estimate x_τ + (1 − τ)·v of the training forward pass. Its error is (1 − τ)|v − u|, so the
    weight mostly follows τ rather than the execution error; kept for comparison."""
    NONE = "none"
    """No re-weighting: every loss element weighs 1."""


class WeightGranularity(str, enum.Enum):
    """What one weight covers."""

    ELEMENT = "element"  # each (timestep, dimension) of the chunk: the release
    SAMPLE = "sample"  # the sample's mean error: the paper's text


@dataclasses.dataclass(frozen=True, kw_only=True)
class ActionPrefixConfig:
    """How often and how long a training sample's clean prefix is, how much of it the noisy tokens see, and how its
    loss is re-weighted."""

    async_probability: float = 0.5
    """Probability that a sample is trained for asynchronous execution (gets a prefix draw); the others get Δtc = 0.
    The release: 0.5; the paper's text: every sample draws (1.0, with 0 among `prefix_lengths`)."""
    prefix_lengths: tuple[int, ...] = (1, 2, 3, 4, 5, 6)
    """The Δtc an asynchronous sample draws from, uniformly (the release: 1..6; the paper's text: {0, ..., 6})."""
    mask_probability: float = 0.5
    """Probability that each prefix action (but the last `mask_keep_last`) is hidden from the noisy tokens in a
    training sample (the release: 0.5; 0 turns it off)."""
    mask_keep_last: int = 2
    """The last prefix actions that are never hidden (the release: 2)."""
    weight_mode: WeightMode = WeightMode.SAMPLED
    """Where the online prediction of the loss re-weighting comes from (see `WeightMode`)."""
    weight_per: WeightGranularity = WeightGranularity.ELEMENT
    """One weight per chunk element (the release) or per sample (the paper's text)."""
    weight_min: float = 0.5
    """Lower clamp of the error-based loss weight (the release: 0.5)."""
    weight_max: float = 5.0
    """Upper clamp of the error-based loss weight (the release: 5)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "weight_mode", WeightMode(self.weight_mode))
        object.__setattr__(self, "weight_per", WeightGranularity(self.weight_per))
        object.__setattr__(self, "prefix_lengths", tuple(int(n) for n in self.prefix_lengths))
        for name in ("async_probability", "mask_probability"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"ActionPrefixConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        if not self.prefix_lengths or min(self.prefix_lengths) < 0:
            raise ValueError(f"ActionPrefixConfig.prefix_lengths must be non-empty and >= 0, got {self.prefix_lengths}")
        if self.mask_keep_last < 0:
            raise ValueError(f"ActionPrefixConfig.mask_keep_last must be >= 0, got {self.mask_keep_last}")
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
    """Loss weights [B, T, A] from the L1 error of the online prediction `predicted` [B, T, A] (detached).

    For samples with Δtc > 0 the weight is |predicted − actions| (per element, or its mean over the sample's loss
    elements with `weight_per="sample"`) divided by its mean over those samples' loss elements in the batch,
    clamped to [weight_min, weight_max]: what the model gets most wrong counts most. Samples with Δtc = 0 keep
    weight 1, as in synchronous training.
    """
    error = (predicted.detach() - actions).abs()
    with_prefix = (prefix_lengths > 0)[:, None, None] & loss_mask.bool()
    if not with_prefix.any():
        return torch.ones_like(error)
    if config.weight_per is WeightGranularity.SAMPLE:
        counts = loss_mask.sum(dim=(1, 2), keepdim=True).clamp_min(1)
        error = ((error * loss_mask).sum(dim=(1, 2), keepdim=True) / counts).expand_as(error)
    normalized = error / error[with_prefix].mean().clamp_min(1e-8)
    weights = normalized.clamp(config.weight_min, config.weight_max)
    return torch.where(with_prefix, weights, torch.ones_like(weights))
