"""PhaseModel: what each phase leaves trainable, and a loss that reaches every trainable parameter whatever the
micro batch holds (ZeRO-2 ranks must reduce the same gradients)."""

from __future__ import annotations

import pytest
import torch

from vlaforge.training.model.choice_policies import ChoicePoliciesConfig
from vlaforge.training.model.phase import Phase
from vlaforge.training.model.vla import RobotBatch
from vlaforge.training.phase_model import (
    CHOICE,
    CHOICE_ACTION,
    CHOICE_SCORE,
    FLOW_MATCHING,
    LOSS,
    LOSS_WEIGHT,
    NEXT_TOKEN,
    ParamGroup,
    PhaseModel,
)

TRAINABLE = {
    Phase.STEP1_CHOICE: {"model.vlm", "choice"},
    Phase.STEP2_DIT: {"model.dit"},
    Phase.POSTTRAIN_SYNC: {"model.vlm", "model.dit"},
    Phase.POSTTRAIN_ASYNC: {"model.vlm", "model.dit"},
}


def owners(names) -> set[str]:
    return {".".join(name.split(".")[:2]) if name.startswith("model.") else name.split(".")[0] for name in names}


def robot_batch(make_inputs, size: int = 2, chunk: int = 8) -> RobotBatch:
    inputs = make_inputs([("astronaut", "pick up the cup"), ("coffee", "wipe the table")][:size])
    generator = torch.Generator().manual_seed(0)
    mask = torch.arange(32) < 7
    return RobotBatch(vlm_inputs=inputs, state=torch.randn(size, 32, generator=generator) * mask,
                      actions=torch.randn(size, chunk, 32, generator=generator) * mask,
                      action_mask=mask.expand(size, -1), valid_len=torch.tensor([chunk, chunk - 3][:size]))


@pytest.mark.parametrize("phase", list(Phase))
def test_each_phase_leaves_exactly_its_parts_trainable(build_model, phase):
    module = PhaseModel(build_model(live=False), phase, ChoicePoliciesConfig(chunk_len=8, num_candidates=3))
    trainable = {name for name, p in module.named_parameters() if p.requires_grad}
    frozen = {name for name, p in module.named_parameters() if not p.requires_grad}
    assert owners(trainable) == TRAINABLE[phase]
    assert not owners(frozen) & TRAINABLE[phase]
    assert (module.choice is not None) == (phase is Phase.STEP1_CHOICE)


def test_the_robot_loss_follows_the_phase_and_vl_trains_only_a_trainable_vlm(build_model, make_inputs):
    batch = robot_batch(make_inputs)
    vl = make_inputs([("chelsea", "what animal is this?")])
    labels = vl["input_ids"].clone()
    step1 = PhaseModel(build_model(), Phase.STEP1_CHOICE, ChoicePoliciesConfig(chunk_len=8, num_candidates=3))
    parts = step1(batch, vl, labels)
    assert set(parts) == {LOSS, CHOICE, CHOICE_ACTION, CHOICE_SCORE, NEXT_TOKEN}
    assert parts[CHOICE].item() == pytest.approx(parts[CHOICE_ACTION].item() + parts[CHOICE_SCORE].item(), rel=1e-5)
    step2 = PhaseModel(build_model(), Phase.STEP2_DIT)
    assert set(step2(batch, vl, labels)) == {LOSS, FLOW_MATCHING, LOSS_WEIGHT}
    losses = PhaseModel(build_model(), Phase.POSTTRAIN_ASYNC)(batch, vl, labels)
    assert losses[LOSS].item() == pytest.approx(losses[FLOW_MATCHING].item() + losses[NEXT_TOKEN].item())


def test_a_batch_without_robot_samples_still_gives_every_trainable_parameter_a_zero_gradient(build_model, make_inputs):
    module = PhaseModel(build_model(), Phase.STEP2_DIT)
    vl = make_inputs([("chelsea", "what animal is this?")])
    losses = module(None, vl, vl["input_ids"].clone())
    losses[LOSS].backward()
    assert losses[LOSS].item() == 0.0
    assert all(p.grad is not None and not p.grad.any() for p in module.trainable_parameters())


def test_freeze_patterns_and_parameter_groups_select_by_name(build_model):
    module = PhaseModel(build_model(live=False), Phase.POSTTRAIN_SYNC,
                        freeze=["model.vlm.model.model.language_model.embed_tokens.*"])
    frozen = {name for name, p in module.named_parameters() if not p.requires_grad}
    assert frozen == {"model.vlm.model.model.language_model.embed_tokens.weight"}
    groups = module.parameter_groups([ParamGroup(pattern="model.dit.*", lr_scale=3.0),
                                      ParamGroup(pattern="model.vlm.model.model.visual.*", lr_scale=0.1)], 1e-4, 0.01)
    assert [g["lr"] for g in groups] == [pytest.approx(3e-4), pytest.approx(1e-5), 1e-4]
    dit = {id(p) for p in module.model.dit.parameters()}
    assert {id(p) for p in groups[0]["params"]} == dit
    assert sum(len(g["params"]) for g in groups) == len(module.trainable_parameters())
    with pytest.raises(ValueError, match="freeze pattern 'model.vln.*' matches no parameter"):
        PhaseModel(build_model(live=False), Phase.POSTTRAIN_SYNC, freeze=["model.vln.*"])
