"""Training phases of the whole model: what is frozen, which mask, which loss."""

import dataclasses

import pytest
import torch

from vlaforge.training.model import presets
from vlaforge.training.model.masks import AttentionKind
from vlaforge.training.model.phase import Phase
from vlaforge.training.model.vla import RobotBatch, VLAConfig


@pytest.fixture(scope="module")
def batch(make_inputs):
    inputs = make_inputs([("astronaut", "pick up the red block"), ("coffee", "fold the towel")])
    generator = torch.Generator().manual_seed(0)
    action_mask = torch.zeros(2, 32, dtype=torch.bool)
    action_mask[:, :7] = True
    return RobotBatch(vlm_inputs=inputs, state=torch.randn(2, 32, generator=generator),
                      actions=torch.randn(2, 8, 32, generator=generator), action_mask=action_mask,
                      valid_len=torch.tensor([8, 5]))


def one_step(model, batch):
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    loss = model.flow_matching_loss(batch)["loss"]
    loss.backward()
    optimizer.step()
    return loss


def test_pretraining_step_2_freezes_the_vlm(build_model, batch):
    model = build_model(live=False)
    model.set_phase(Phase.STEP2_DIT)
    vlm_before = {k: v.clone() for k, v in model.vlm.state_dict().items()}
    dit_before = {k: v.clone() for k, v in model.dit.state_dict().items()}
    one_step(model, batch)
    assert all(p.grad is None for p in model.vlm.parameters())
    assert all(torch.equal(v, model.vlm.state_dict()[k]) for k, v in vlm_before.items())
    assert not model.vlm.training  # a frozen conditioner also stays in eval mode
    changed = [k for k, v in dit_before.items() if not torch.equal(v, model.dit.state_dict()[k])]
    assert "sink" in changed and any("modulation" in k for k in changed)


def test_synchronous_post_training_trains_the_vlm_too(build_model, batch):
    model = build_model(live=False)
    model.set_phase(Phase.POSTTRAIN_SYNC)
    before = model.vlm.model.model.language_model.layers[-1].self_attn.k_proj.weight.clone()
    one_step(model, batch)
    after = model.vlm.model.model.language_model.layers[-1].self_attn.k_proj.weight
    assert model.config.attention is AttentionKind.CAUSAL
    assert not torch.equal(before, after)


def test_asynchronous_post_training_uses_lambda_mask_and_prefixes(build_model, batch):
    model = build_model()
    model.set_phase(Phase.POSTTRAIN_ASYNC)
    assert model.config.attention is AttentionKind.LAMBDA
    torch.manual_seed(3)
    draws = [model.flow_matching_loss(batch)["prefix_lengths"] for _ in range(20)]
    assert torch.cat(draws).max() > 0 and torch.cat(draws).min() == 0


def test_loss_ignores_padded_timesteps_dimensions_and_the_prefix(build_model, batch):
    model = build_model()
    model.set_phase(Phase.POSTTRAIN_SYNC)
    altered_actions = batch.actions.clone()
    altered_actions[1, 5:] += 100.0  # past sample 1's valid length
    altered_actions[:, :, 7:] += 100.0  # dimensions the 7-DoF robot does not have
    altered = dataclasses.replace(batch, actions=altered_actions)
    torch.manual_seed(9)
    reference = model.flow_matching_loss(batch)["loss"]
    torch.manual_seed(9)
    assert model.flow_matching_loss(altered)["loss"].item() == pytest.approx(reference.item(), rel=1e-5)


def test_prefix_actions_are_held_bit_exactly_by_the_sampler(build_model, batch):
    model = build_model(dataclasses.replace(presets.vla_tiny(), attention=AttentionKind.LAMBDA))
    noise = torch.randn(2, 8, 32, generator=torch.Generator().manual_seed(4))
    lengths = torch.tensor([3, 1])
    chunk = model.sample_actions(batch.vlm_inputs, batch.state, batch.action_mask, noise, batch.actions, lengths)
    free = model.sample_actions(batch.vlm_inputs, batch.state, batch.action_mask, noise)
    assert torch.equal(chunk[0, :3], batch.actions[0, :3]) and torch.equal(chunk[1, :1], batch.actions[1, :1])
    assert not torch.allclose(chunk[0, 3:5], free[0, 3:5])  # the tokens after the prefix do condition on it


def test_config_round_trips_through_a_dict_and_checks_prefix_against_chunk():
    config = presets.report_scale_async()
    assert VLAConfig.from_dict(config.to_dict()) == config
    with pytest.raises(ValueError, match="leaves no noisy action in a chunk of 4"):
        VLAConfig(dit=dataclasses.replace(presets.dit_report(), chunk_len=4))
