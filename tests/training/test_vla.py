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


def async_model(build_model, **prefix):
    """The tiny model in asynchronous post-training with every draw prefixed, and `prefix` changes."""
    config = presets.vla_tiny()
    settings = dict(async_probability=1.0, prefix_lengths=(1, 2, 3), mask_probability=0.0, **prefix)
    config = dataclasses.replace(config, prefix=dataclasses.replace(config.prefix, **settings),
                                 flow=dataclasses.replace(config.flow, training_repeat=100))
    model = build_model(config)
    model.set_phase(Phase.POSTTRAIN_ASYNC)
    return model


def weight_by_tau(model, batch) -> tuple[float, float]:
    """Mean loss weight of the noisiest draws (τ < 0.3) and of the cleanest (τ > 0.7)."""
    torch.manual_seed(5)
    with torch.no_grad():
        result = model.flow_matching_loss(batch)
    tau, weights = result["tau"], result["weights"]
    return weights[tau < 0.3].mean().item(), weights[tau > 0.7].mean().item()


def test_sampled_loss_weights_follow_the_execution_error_not_tau(build_model, batch):
    """A DiT that always predicts velocity 0 makes the same error at every τ: the release's sampled prediction (a
    full sampling pass) weights it evenly, while the one-step estimate x_τ + (1 − τ)·v, whose error is
    (1 − τ)|v − u|, weights noisy draws up and clean ones down."""
    sampled = async_model(build_model)
    one_step = async_model(build_model, weight_mode="one_step")
    for model in (sampled, one_step):
        torch.nn.init.zeros_(model.dit.action_decoder[-1].weight)
        torch.nn.init.zeros_(model.dit.action_decoder[-1].bias)
    noisy, clean = weight_by_tau(one_step, batch)
    assert noisy > 1.5 * clean
    noisy, clean = weight_by_tau(sampled, batch)
    assert 0.85 < noisy / clean < 1.15


def test_training_repeat_draws_several_noises_per_vlm_forward(build_model, batch):
    model = build_model(dataclasses.replace(presets.vla_tiny(), flow=dataclasses.replace(
        presets.vla_tiny().flow, training_repeat=4)))
    model.set_phase(Phase.POSTTRAIN_SYNC)
    calls = []
    model.vlm.register_forward_pre_hook(lambda module, args: calls.append(1))
    original = model.vlm.encode
    model.vlm.encode = lambda inputs: calls.append("encode") or original(inputs)
    result = model.flow_matching_loss(batch)
    assert calls.count("encode") == 1 and len(result["tau"]) == 4 * len(batch)
    result["loss"].backward()
    assert model.dit.sink.grad is not None


def test_training_rtc_keeps_the_prefix_under_a_causal_mask(build_model, batch):
    """The paper's "training RTC" ablation: asynchronous post-training (clean prefixes, error weights) with the
    causal mask instead of Λ."""
    model = build_model()
    model.set_phase(Phase.POSTTRAIN_ASYNC, attention=AttentionKind.CAUSAL)
    assert model.config.attention is AttentionKind.CAUSAL and model.phase.clean_prefixes
    torch.manual_seed(1)
    assert torch.cat([model.flow_matching_loss(batch)["prefix_lengths"] for _ in range(5)]).max() > 0


def test_activation_checkpointing_recomputes_blocks_and_gives_the_same_gradients(build_model, batch):
    def gradients(model):
        torch.manual_seed(2)
        model.zero_grad()
        model.flow_matching_loss(batch)["loss"].backward()
        return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}

    model = build_model()
    model.set_phase(Phase.POSTTRAIN_SYNC)
    model.train()
    plain = gradients(model)
    runs = []
    # Pre-hooks: the recomputation stops as soon as it has what the backward pass needs, before a forward hook.
    model.dit.blocks[0].register_forward_pre_hook(lambda *args: runs.append("dit"))
    model.vlm.model.model.visual.blocks[0].attn.register_forward_pre_hook(lambda *args: runs.append("vision"))
    model.dit.activation_checkpointing = True
    model.vlm.set_activation_checkpointing(True)
    recomputed = gradients(model)
    assert runs.count("dit") == 2 and runs.count("vision") == 2  # forward, then again in the backward pass
    assert plain.keys() == recomputed.keys()
    assert all(torch.allclose(plain[k], recomputed[k], atol=1e-6, rtol=1e-4) for k in plain)
