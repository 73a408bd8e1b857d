"""Flow matching: τ draws, the interpolation and target, the masked loss, and the 5-step Euler sampler."""

import pytest
import torch

from vlaforge.training.model import flow_matching as fm
from vlaforge.training.model import masks
from vlaforge.training.model.dit import DiT, DiTConfig
from vlaforge.training.model.vlm import AttentionGeometry, VLMContext


def test_tau_stays_in_range_and_favours_noise():
    torch.manual_seed(0)
    tau = fm.sample_tau(20_000, fm.FlowMatchingConfig())
    assert tau.min() >= 0 and tau.max() <= 0.999
    # 1 − τ ~ Beta(1.5, 1): E[τ] = 0.4, P(τ < 0.5) = 1 − 0.5^1.5 ≈ 0.65.
    assert tau.mean().item() == pytest.approx(0.4, abs=0.01)
    assert (tau < 0.5).float().mean().item() == pytest.approx(1 - 0.5**1.5, abs=0.01)


def test_config_names_the_bad_field():
    with pytest.raises(ValueError, match="noise_beta_alpha must be > 0, got -1"):
        fm.FlowMatchingConfig(noise_beta_alpha=-1)


def test_interpolation_ends_and_one_step_recovery():
    actions, noise = torch.randn(3, 4, 2), torch.randn(3, 4, 2)
    assert torch.equal(fm.interpolate(actions, noise, torch.zeros(3)), noise)
    assert torch.allclose(fm.interpolate(actions, noise, torch.ones(3)), actions)
    tau = torch.tensor([0.1, 0.5, 0.9])
    x_tau = fm.interpolate(actions, noise, tau)
    exact = fm.one_step_actions(x_tau, fm.velocity_target(actions, noise), tau)
    torch.testing.assert_close(exact, actions)


def test_masked_loss_ignores_padding_timesteps_and_dimensions():
    target = torch.zeros(1, 3, 2)
    prediction = torch.tensor([[[1.0, 50.0], [2.0, 50.0], [50.0, 50.0]]])
    mask = torch.tensor([[[True, False], [True, False], [False, False]]])  # 2 valid steps, 1 real dimension
    assert fm.masked_mse(prediction, target, mask).item() == pytest.approx((1 + 4) / 2)
    weight = torch.full((1, 3, 2), 2.0)
    assert fm.masked_mse(prediction, target, mask, weight).item() == pytest.approx(5.0)


def test_euler_on_a_straight_path_lands_on_the_data_and_keeps_the_prefix_bit_exact():
    actions, noise = torch.randn(2, 6, 3), torch.randn(2, 6, 3)
    prefix = torch.randn(2, 6, 3)
    lengths = torch.tensor([0, 4])
    result = fm.euler_sample(lambda x, tau: actions - noise, noise, 5, prefix, lengths)
    torch.testing.assert_close(result[0], actions[0])
    torch.testing.assert_close(result[1, 4:], actions[1, 4:])
    assert torch.equal(result[1, :4], prefix[1, :4])


def zero_context(batch: int, geometry: AttentionGeometry, layers: int) -> VLMContext:
    """A one-token, all-zero VLM context: the toy task has nothing to condition on."""
    zeros = torch.zeros(batch, geometry.num_kv_heads, 1, geometry.head_dim)
    return VLMContext(keys=(zeros,) * layers, values=(zeros,) * layers, valid=torch.ones(batch, 1, dtype=torch.bool),
                      next_position=torch.zeros(batch, dtype=torch.long))


def test_a_trained_tiny_dit_samples_both_modes_of_a_bimodal_action_distribution():
    torch.manual_seed(0)
    geometry = AttentionGeometry(num_layers=2, hidden_size=32, num_heads=4, num_kv_heads=2, head_dim=16,
                                 rope_theta=10_000.0, rms_norm_eps=1e-6)
    config = DiTConfig(num_layers=2, hidden_size=32, num_heads=4, intermediate_size=64, state_dim=2, action_dim=2,
                       chunk_len=4, attention_window=2, time_embedding_dim=32)
    dit, mask, flow = DiT(config, geometry), masks.causal_mask(4), fm.FlowMatchingConfig()
    steps, batch = 400, 64
    optimizer = torch.optim.AdamW(dit.parameters(), lr=5e-3)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / steps)
    context, state, no_prefix = zero_context(batch, geometry, 2), torch.zeros(batch, 2), torch.zeros(batch).long()
    for _ in range(steps):
        modes = torch.where(torch.rand(batch) < 0.5, -1.0, 1.0)[:, None, None]
        actions = modes * torch.ones(batch, 4, 2) + 0.05 * torch.randn(batch, 4, 2)  # every chunk at +1 or at -1
        noise, tau = torch.randn_like(actions), fm.sample_tau(batch, flow)
        velocity = dit(fm.interpolate(actions, noise, tau), tau, state, context, no_prefix, mask)
        loss = fm.masked_mse(velocity, fm.velocity_target(actions, noise), torch.ones_like(actions, dtype=torch.bool))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    count = 512
    context, state, no_prefix = zero_context(count, geometry, 2), torch.zeros(count, 2), torch.zeros(count).long()
    with torch.no_grad():
        samples = fm.euler_sample(lambda x, tau: dit(x, tau, state, context, no_prefix, mask),
                                  torch.randn(count, 4, 2), flow.num_steps)
    at_plus = ((samples - 1).abs() < 0.5).all(dim=-1).all(dim=-1).float().mean().item()
    at_minus = ((samples + 1).abs() < 0.5).all(dim=-1).all(dim=-1).float().mean().item()
    # A regressor would put every chunk at the mean (0); a one-mode sampler would leave one side empty.
    assert at_plus > 0.2 and at_minus > 0.2, (at_plus, at_minus)
    assert at_plus + at_minus > 0.55, (at_plus, at_minus)
