"""Pre-training step 1: the VLM itself predicts actions with Choice Policies (winner takes all).

Robot samples append `s_t, [A_1..A_T], [S]` to the VLM's input `o_t, l`: the state through an MLP into the VLM's
embedding space, T learnable action tokens and one score token. Each action token's output becomes N candidate
actions for its timestep, the score token's output N scores. Only the candidate chunk closest to the ground truth
(L1) gets the action loss; the scores learn to predict every candidate's L1 distance, and inference returns the
candidate with the best (lowest) predicted distance.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from vlaforge.training.model.vlm import VLMBackbone


@dataclasses.dataclass(frozen=True, kw_only=True)
class ChoicePoliciesConfig:
    """Sizes and loss weights of the Choice Policies head."""

    num_candidates: int = 8
    """N candidate chunks per sample (the report does not give N; 8 is our default)."""
    chunk_len: int = 30
    """T, the number of learnable action tokens."""
    state_dim: int = 32
    """Zero-padded state width."""
    action_dim: int = 32
    """Zero-padded action width."""
    score_loss_weight: float = 1.0
    """Weight of the score regression against the winner-takes-all action loss."""

    def __post_init__(self) -> None:
        for name in ("num_candidates", "chunk_len", "state_dim", "action_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"ChoicePoliciesConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.score_loss_weight < 0:
            raise ValueError(f"ChoicePoliciesConfig.score_loss_weight must be >= 0, got {self.score_loss_weight}")


class ChoicePoliciesHead(nn.Module):
    """The extra tokens and output maps that turn the VLM into an N-candidate action predictor."""

    def __init__(self, config: ChoicePoliciesConfig, vlm_hidden_size: int) -> None:
        super().__init__()
        self.config = config
        width = vlm_hidden_size
        self.state_encoder = nn.Sequential(nn.Linear(config.state_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.action_tokens = nn.Parameter(torch.randn(config.chunk_len, width) * 0.02)
        self.score_token = nn.Parameter(torch.randn(1, width) * 0.02)
        # Output row n * A + a belongs to candidate n, so each candidate owns a disjoint block of rows.
        self.action_out = nn.Linear(width, config.num_candidates * config.action_dim)
        self.score_out = nn.Linear(width, config.num_candidates)

    def forward(
        self, vlm: VLMBackbone, vlm_inputs: Mapping[str, torch.Tensor], state: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Candidates [B, N, T, A] and scores [B, N] for state [B, D_s]."""
        batch = state.shape[0]
        appended = torch.cat(
            (
                self.state_encoder(state)[:, None],
                self.action_tokens.expand(batch, -1, -1),
                self.score_token.expand(batch, -1, -1),
            ),
            dim=1,
        )
        hidden = vlm.hidden_of_appended(vlm_inputs, appended).to(self.action_out.weight.dtype)
        length, count = self.config.chunk_len, self.config.num_candidates
        candidates = self.action_out(hidden[:, 1 : 1 + length]).view(batch, length, count, -1).transpose(1, 2)
        return candidates, self.score_out(hidden[:, -1])


def candidate_distances(candidates: torch.Tensor, actions: torch.Tensor, element_mask: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance [B, N] of each candidate [B, N, T, A] to the chunk [B, T, A], over real elements only."""
    mask = element_mask.to(candidates.dtype)[:, None]
    total = ((candidates - actions[:, None]).abs() * mask).sum(dim=(2, 3))
    return total / mask.sum(dim=(2, 3)).clamp_min(1.0)


def choice_loss(
    candidates: torch.Tensor,
    scores: torch.Tensor,
    actions: torch.Tensor,
    element_mask: torch.Tensor,
    score_loss_weight: float = 1.0,
) -> dict[str, torch.Tensor]:
    """Winner-takes-all L1 on the closest candidate plus MSE of the scores [B, N] to all candidates' distances."""
    distances = candidate_distances(candidates, actions, element_mask)
    winner = distances.detach().argmin(dim=-1)
    action_loss = distances.gather(1, winner[:, None]).mean()
    score_target = distances.detach()
    score_loss = F.mse_loss(scores, score_target)
    return {
        "loss": action_loss + score_loss_weight * score_loss,
        "action_loss": action_loss,
        "score_loss": score_loss,
        "score_target": score_target,
        "winner": winner,
    }


def select_best(candidates: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    """The candidate chunk [B, T, A] whose predicted distance is lowest."""
    best = scores.argmin(dim=-1)
    return candidates[torch.arange(candidates.shape[0], device=candidates.device), best]
