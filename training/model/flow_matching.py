"""Flow matching for action chunks: τ = 0 is pure noise, τ = 1 is the clean chunk (the report's convention).

`x_τ = τ·a + (1 − τ)·ε` and the velocity target is `u = a − ε`; sampling integrates dx/dτ = v from 0 to 1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch


@dataclasses.dataclass(frozen=True, kw_only=True)
class FlowMatchingConfig:
    """How τ is drawn in training and how many Euler steps sampling takes."""

    noise_beta_alpha: float = 1.5
    """α of the Beta distribution of the noise level 1 − τ. With (1.5, 1) the density of 1 − τ grows toward 1, so
    training sees noisy inputs more often (pi0's choice, which the release reportedly uses)."""
    noise_beta_beta: float = 1.0
    """β of the Beta distribution of the noise level 1 − τ."""
    tau_max: float = 0.999
    """τ is clamped to [0, tau_max]: the report trains on τ ∈ [0, 0.999], never on a fully clean input."""
    num_steps: int = 5
    """Euler steps from τ = 0 to τ = 1 at inference (5 in the report), and in the sampling pass that weights the
    asynchronous loss."""
    training_repeat: int = 1
    """Noise draws per sample that share one VLM forward pass in training (the release: 4): the VLM context is
    computed once and the DiT trains on `training_repeat` (ε, τ, prefix) draws of each sample."""

    def __post_init__(self) -> None:
        for name in ("noise_beta_alpha", "noise_beta_beta"):
            if getattr(self, name) <= 0:
                raise ValueError(f"FlowMatchingConfig.{name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.tau_max <= 1:
            raise ValueError(f"FlowMatchingConfig.tau_max must be in (0, 1], got {self.tau_max}")
        for name in ("num_steps", "training_repeat"):
            if getattr(self, name) < 1:
                raise ValueError(f"FlowMatchingConfig.{name} must be >= 1, got {getattr(self, name)}")


def sample_tau(batch_size: int, config: FlowMatchingConfig, device: torch.device | str = "cpu") -> torch.Tensor:
    """τ [B] for training, weighted toward noise (small τ), in [0, tau_max]. Uses torch's global RNG."""
    beta = torch.distributions.Beta(torch.tensor(config.noise_beta_alpha), torch.tensor(config.noise_beta_beta))
    noise_level = beta.sample((batch_size,)).to(device)
    return (1.0 - noise_level).clamp(0.0, config.tau_max)


def interpolate(actions: torch.Tensor, noise: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """x_τ = τ·a + (1 − τ)·ε for actions and noise [B, T, A] and τ [B]."""
    tau = tau[:, None, None]
    return tau * actions + (1.0 - tau) * noise


def velocity_target(actions: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """u = a − ε, [B, T, A]."""
    return actions - noise


def one_step_actions(x_tau: torch.Tensor, velocity: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """The clean chunk one Euler step to τ = 1 predicts: x_τ + (1 − τ)·v, [B, T, A]."""
    return x_tau + (1.0 - tau[:, None, None]) * velocity


def masked_mse(
    prediction: torch.Tensor, target: torch.Tensor, element_mask: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean of weight·(prediction − target)² over the elements where `element_mask` [B, T, A] is true.

    The mask carries the chunk's valid length, the embodiment's action dimensions, and (in async training) which
    timesteps are noisy; padded elements contribute nothing and do not dilute the mean.
    """
    mask = element_mask.to(prediction.dtype)
    squared = (prediction - target).square() * mask
    if weight is not None:
        squared = squared * weight
    return squared.sum() / mask.sum().clamp_min(1.0)


VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def euler_sample(
    velocity_fn: VelocityFn,
    noise: torch.Tensor,
    num_steps: int,
    prefix: torch.Tensor | None = None,
    prefix_lengths: torch.Tensor | None = None,
) -> torch.Tensor:
    """Integrate from τ = 0 (noise [B, T, A]) to τ = 1 in `num_steps` Euler steps.

    `velocity_fn(x [B, T, A], τ [B])` gives v. With `prefix` [B, T, A] and `prefix_lengths` [B], the first
    prefix_lengths[b] timesteps of sample b hold the committed clean actions at every step and in the result.
    """
    keep = _prefix_timesteps(noise, prefix_lengths)
    x = noise if prefix is None else torch.where(keep, prefix, noise)
    for step in range(num_steps):
        tau = torch.full((noise.shape[0],), step / num_steps, device=noise.device, dtype=noise.dtype)
        x = x + velocity_fn(x, tau) / num_steps
        if prefix is not None:
            x = torch.where(keep, prefix, x)
    return x


def _prefix_timesteps(like: torch.Tensor, prefix_lengths: torch.Tensor | None) -> torch.Tensor:
    """[B, T, 1] true at the clean-prefix timesteps."""
    if prefix_lengths is None:
        return torch.zeros(like.shape[0], like.shape[1], 1, dtype=torch.bool, device=like.device)
    steps = torch.arange(like.shape[1], device=like.device)
    return (steps[None, :] < prefix_lengths.to(like.device)[:, None])[..., None]
