"""`PhaseModel`: the module DeepSpeed wraps. The VLA model (plus step 1's Choice Policies head), with exactly the
parameters its phase trains left trainable, and a forward that returns that phase's losses.

| phase | trainable | robot loss | VL next-token loss |
|---|---|---|---|
| step1_choice | VLM + Choice Policies head (DiT frozen, unused) | winner-takes-all L1 + score MSE | yes |
| step2_dit | DiT only (VLM frozen, in eval mode) | flow matching, causal mask | no (VLM frozen) |
| posttrain_sync | VLM + DiT | flow matching, causal mask | when the loader gives VL samples |
| posttrain_async | VLM + DiT | flow matching with clean prefixes, Λ mask, error weights | likewise |

On top of the phase, parameters whose name matches a `freeze` pattern are frozen too (for example the VLM's token
embeddings, which the release freezes), and `param_groups` give modules their own learning rate.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from vlaforge.training.model import choice_policies
from vlaforge.training.model.choice_policies import ChoicePoliciesConfig, ChoicePoliciesHead
from vlaforge.training.model.masks import AttentionKind
from vlaforge.training.model.phase import Phase
from vlaforge.training.model.vla import RobotBatch, VLAModel

# Keys of the loss dict `PhaseModel.forward` returns.
LOSS = "loss"
FLOW_MATCHING = "flow_matching"
CHOICE = "choice"
CHOICE_ACTION = "choice_action"
CHOICE_SCORE = "choice_score"
NEXT_TOKEN = "next_token"
LOSS_WEIGHT = "loss_weight"
"""The mean error-based loss weight of the micro batch's flow-matching draws (1 where nothing is re-weighted)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class ParamGroup:
    """Parameters whose name matches `pattern` train with their own learning rate."""

    pattern: str
    """An fnmatch pattern over `PhaseModel` parameter names, e.g. "model.dit.*" or "model.vlm.model.model.visual.*"."""
    lr_scale: float
    """Their peak learning rate as a multiple of the run's `lr` (the schedule scales it like the others)."""

    def __post_init__(self) -> None:
        if not self.pattern:
            raise ValueError("ParamGroup.pattern must not be empty")
        if self.lr_scale < 0:
            raise ValueError(f"ParamGroup.lr_scale must be >= 0, got {self.lr_scale} for {self.pattern!r}")


class PhaseModel(nn.Module):
    """`model` (and `choice` in step 1) set up for one phase; `forward` gives {"loss": total, <part>: value}."""

    def __init__(self, model: VLAModel, phase: Phase, choice: ChoicePoliciesConfig | None = None,
                 vl_loss_weight: float = 1.0, *, attention: AttentionKind | None = None,
                 freeze: Sequence[str] = ()) -> None:
        super().__init__()
        self.model = model
        self.phase = Phase(phase)
        self.vl_loss_weight = vl_loss_weight
        self.choice: ChoicePoliciesHead | None = None
        if self.phase is Phase.STEP1_CHOICE:
            self.choice = ChoicePoliciesHead(choice or ChoicePoliciesConfig(), model.vlm.geometry.hidden_size)
        model.set_phase(self.phase, attention)
        if self.phase is Phase.STEP1_CHOICE:
            model.dit.requires_grad_(False)  # step 1 trains the VLM to act by itself; the DiT comes in step 2
        self._freeze(freeze)

    def _freeze(self, patterns: Sequence[str]) -> None:
        names = [name for name, _ in self.named_parameters()]
        for pattern in patterns:
            if not fnmatch.filter(names, pattern):
                raise ValueError(f"freeze pattern {pattern!r} matches no parameter; names look like {names[:3]} "
                                 f"... (fnmatch over PhaseModel.named_parameters())")
        for name, parameter in self.named_parameters():
            if any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns):
                parameter.requires_grad_(False)

    @property
    def trains_vlm(self) -> bool:
        return any(p.requires_grad for p in self.model.vlm.parameters())

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]

    def parameter_groups(self, groups: Sequence[ParamGroup], lr: float, weight_decay: float) -> list[dict]:
        """The optimizer's parameter groups: each trainable parameter in the first `groups` entry its name matches
        (lr = lr_scale x lr), the rest at `lr`; empty groups are left out."""
        buckets: list[list[nn.Parameter]] = [[] for _ in range(len(groups) + 1)]
        for name, parameter in self.named_parameters():
            if parameter.requires_grad:
                index = next((i for i, g in enumerate(groups) if fnmatch.fnmatchcase(name, g.pattern)), len(groups))
                buckets[index].append(parameter)
        scales = [g.lr_scale for g in groups] + [1.0]
        return [{"params": params, "lr": lr * scale, "weight_decay": weight_decay}
                for params, scale in zip(buckets, scales, strict=True) if params]

    def forward(self, robot: RobotBatch | None, vl_inputs: Mapping[str, torch.Tensor] | None = None,
                vl_labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Losses of one micro batch; either part may be absent. The total always reaches every trainable parameter
        (a zero term where a part is absent), so every rank reduces the same gradients whatever its batch held."""
        losses: dict[str, torch.Tensor] = {}
        total = self._anchor()
        if robot is not None:
            parts = self._robot_losses(robot)
            losses.update(parts)
            total = total + parts[CHOICE if self.choice is not None else FLOW_MATCHING]
        if vl_inputs is not None and self.trains_vlm and self.vl_loss_weight > 0:
            losses[NEXT_TOKEN] = self.model.vlm.next_token_loss(vl_inputs, vl_labels)
            total = total + self.vl_loss_weight * losses[NEXT_TOKEN]
        losses[LOSS] = total
        return losses

    def _robot_losses(self, robot: RobotBatch) -> dict[str, torch.Tensor]:
        if self.choice is None:
            result = self.model.flow_matching_loss(robot)
            return {FLOW_MATCHING: result[LOSS], LOSS_WEIGHT: result["weights"].mean()}
        state = robot.state.to(self.choice.action_out.weight.dtype)
        candidates, scores = self.choice(self.model.vlm, robot.require_vlm_inputs(), state)
        result = choice_policies.choice_loss(candidates.float(), scores.float(), robot.actions.float(),
                                             robot.element_mask(), self.choice.config.score_loss_weight)
        return {CHOICE: result[LOSS], CHOICE_ACTION: result["action_loss"], CHOICE_SCORE: result["score_loss"]}

    def _anchor(self) -> torch.Tensor:
        """0 · (one element of every trainable parameter): a zero gradient for parameters this batch leaves out."""
        terms = [p.view(-1)[0].float() for p in self.trainable_parameters()]
        return torch.stack(terms).sum() * 0.0
