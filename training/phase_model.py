"""`PhaseModel`: the module DeepSpeed wraps. The VLA model (plus step 1's Choice Policies head), with exactly the
parameters its phase trains left trainable, and a forward that returns that phase's losses.

| phase | trainable | robot loss | VL next-token loss |
|---|---|---|---|
| step1_choice | VLM + Choice Policies head (DiT frozen, unused) | winner-takes-all L1 + score MSE | yes |
| step2_dit | DiT only (VLM frozen, in eval mode) | flow matching, causal mask | no (VLM frozen) |
| posttrain_sync | VLM + DiT | flow matching, causal mask | yes |
| posttrain_async | VLM + DiT | flow matching with clean prefixes, Λ mask, error weights | yes |
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from vlaforge.training.model import choice_policies
from vlaforge.training.model.choice_policies import ChoicePoliciesConfig, ChoicePoliciesHead
from vlaforge.training.model.phase import Phase
from vlaforge.training.model.vla import RobotBatch, VLAModel

# Keys of the loss dict `PhaseModel.forward` returns.
LOSS = "loss"
FLOW_MATCHING = "flow_matching"
CHOICE = "choice"
NEXT_TOKEN = "next_token"


class PhaseModel(nn.Module):
    """`model` (and `choice` in step 1) set up for one phase; `forward` gives {"loss": total, <part>: value}."""

    def __init__(self, model: VLAModel, phase: Phase, choice: ChoicePoliciesConfig | None = None,
                 vl_loss_weight: float = 1.0) -> None:
        super().__init__()
        self.model = model
        self.phase = Phase(phase)
        self.vl_loss_weight = vl_loss_weight
        self.choice: ChoicePoliciesHead | None = None
        if self.phase is Phase.STEP1_CHOICE:
            self.choice = ChoicePoliciesHead(choice or ChoicePoliciesConfig(), model.vlm.geometry.hidden_size)
        model.set_phase(self.phase)
        if self.phase is Phase.STEP1_CHOICE:
            model.dit.requires_grad_(False)  # step 1 trains the VLM to act by itself; the DiT comes in step 2

    @property
    def trains_vlm(self) -> bool:
        return any(p.requires_grad for p in self.model.vlm.parameters())

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def forward(self, robot: RobotBatch | None, vl_inputs: Mapping[str, torch.Tensor] | None = None,
                vl_labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Losses of one micro batch; either part may be absent. The total always reaches every trainable parameter
        (a zero term where a part is absent), so every rank reduces the same gradients whatever its batch held."""
        losses: dict[str, torch.Tensor] = {}
        total = self._anchor()
        if robot is not None:
            name, value = self._robot_loss(robot)
            losses[name] = value
            total = total + value
        if vl_inputs is not None and self.trains_vlm and self.vl_loss_weight > 0:
            losses[NEXT_TOKEN] = self.model.vlm.next_token_loss(vl_inputs, vl_labels)
            total = total + self.vl_loss_weight * losses[NEXT_TOKEN]
        losses[LOSS] = total
        return losses

    def _robot_loss(self, robot: RobotBatch) -> tuple[str, torch.Tensor]:
        if self.choice is None:
            return FLOW_MATCHING, self.model.flow_matching_loss(robot)[LOSS]
        state = robot.state.to(self.choice.action_out.weight.dtype)
        candidates, scores = self.choice(self.model.vlm, robot.require_vlm_inputs(), state)
        result = choice_policies.choice_loss(candidates.float(), scores.float(), robot.actions.float(),
                                             robot.element_mask(), self.choice.config.score_loss_weight)
        return CHOICE, result[LOSS]

    def _anchor(self) -> torch.Tensor:
        """0 · (one element of every trainable parameter): a zero gradient for parameters this batch leaves out."""
        terms = [p.view(-1)[0].float() for p in self.trainable_parameters()]
        return torch.stack(terms).sum() * 0.0
