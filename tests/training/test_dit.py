"""The DiT reads the VLM like the report's model: Λ mask, RoPE offset, conditioning, adaLN-Zero."""

import dataclasses

import pytest
import torch

from vlaforge.training.model import masks, presets
from vlaforge.training.model.masks import AttentionKind

T = presets.dit_tiny().chunk_len
WINDOW = presets.dit_tiny().attention_window


@pytest.fixture(scope="module")
def inputs(make_inputs):
    return make_inputs([("astronaut", "pick up the red block"), ("chelsea", "fold the towel")])


def run_dit(model, context, actions, prefix_lengths, kind, tau=0.3, state_seed=5):
    batch = actions.shape[0]
    state = torch.randn(batch, model.config.dit.state_dim, generator=torch.Generator().manual_seed(state_seed))
    mask = masks.dit_mask(kind, model.config.dit.chunk_len, model.config.dit.attention_window)
    with torch.no_grad():
        return model.dit(actions, torch.full((batch,), tau), state, context, prefix_lengths, mask)


def perturbed_prefix_outputs(model, inputs, kind, prefix_length=2):
    context = model.vlm.encode(inputs)
    actions = torch.randn(2, T, model.config.dit.action_dim, generator=torch.Generator().manual_seed(0))
    lengths = torch.full((2,), prefix_length)
    changed = actions.clone()
    changed[:, :prefix_length] += 3.0  # a different committed prefix, same noisy actions after it
    return run_dit(model, context, actions, lengths, kind), run_dit(model, context, changed, lengths, kind)


@pytest.mark.parametrize("num_layers", [1, 2])
def test_lambda_mask_limits_what_the_prefix_reaches(build_model, inputs, num_layers):
    config = dataclasses.replace(presets.vla_tiny(), attention=AttentionKind.LAMBDA)
    config = dataclasses.replace(config, dit=dataclasses.replace(config.dit, num_layers=num_layers))
    model = build_model(config)
    prefix_length = 2
    before, after = perturbed_prefix_outputs(model, inputs, AttentionKind.LAMBDA, prefix_length)
    in_window = range(prefix_length, prefix_length + WINDOW)  # noisy tokens that attend to a prefix action directly
    beyond = range(masks.prefix_reach(prefix_length, WINDOW, num_layers) + 1, T)
    assert len(beyond) > 0
    for k in in_window:
        assert not torch.allclose(before[:, k], after[:, k]), f"noisy token {k} should see the prefix"
    for k in beyond:
        assert torch.equal(before[:, k], after[:, k]), f"noisy token {k} must be blind to the prefix"


def test_causal_mask_lets_every_later_token_see_the_prefix(build_model, inputs):
    model = build_model()
    before, after = perturbed_prefix_outputs(model, inputs, AttentionKind.CAUSAL)
    for k in range(2, T):
        assert not torch.allclose(before[:, k], after[:, k]), f"noisy token {k} should see the prefix"


def test_rope_offset_moves_noisy_outputs_and_leaves_the_prefix_alone(build_model, inputs):
    model = build_model()
    shifted = build_model(dataclasses.replace(presets.vla_tiny(), dit=dataclasses.replace(
        presets.dit_tiny(), noisy_position_offset=0)))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), shifted.state_dict().values()))
    context = model.vlm.encode(inputs)
    actions = torch.randn(2, T, 32, generator=torch.Generator().manual_seed(1))
    lengths = torch.tensor([3, 3])
    with_offset = run_dit(model, context, actions, lengths, AttentionKind.CAUSAL)
    without = run_dit(shifted, context, actions, lengths, AttentionKind.CAUSAL)
    assert torch.equal(with_offset[:, :3], without[:, :3])
    assert not torch.allclose(with_offset[:, 3:], without[:, 3:])


def dit_on(model, inputs):
    actions = torch.randn(inputs["input_ids"].shape[0], T, 32, generator=torch.Generator().manual_seed(2))
    return run_dit(model, model.vlm.encode(inputs), actions, torch.zeros(actions.shape[0], dtype=torch.long),
                   AttentionKind.CAUSAL)


def test_output_follows_the_image_and_the_instruction(build_model, make_inputs):
    model = build_model()
    base = dit_on(model, make_inputs([("astronaut", "pick up the red block")]))
    other_image = dit_on(model, make_inputs([("coffee", "pick up the red block")]))
    other_words = dit_on(model, make_inputs([("astronaut", "pick up the blue block")]))
    assert (base - other_image).abs().max() > 1e-3
    assert (base - other_words).abs().max() > 1e-3


def test_output_ignores_what_sits_in_a_padding_slot(build_model, make_inputs):
    model = build_model()
    batch = make_inputs([("astronaut", "pick up the red block and put it in the bowl"), ("coffee", "stop")])
    padding = (batch["attention_mask"][1] == 0).nonzero().flatten()
    assert len(padding) > 0
    altered = dict(batch, input_ids=batch["input_ids"].clone())
    altered["input_ids"][1, padding] = 9707  # a real word id instead of the pad token
    assert torch.equal(dit_on(model, batch), dit_on(model, altered))


def test_fresh_dit_blocks_are_identities_until_modulation_is_learned(build_model, make_inputs):
    model = build_model(live=False)
    first = dit_on(model, make_inputs([("astronaut", "pick up the red block")]))
    second = dit_on(model, make_inputs([("coffee", "fold the towel")]))
    assert torch.equal(first, second)  # adaLN-Zero: gates start at 0, so nothing from the VLM flows in yet


def test_dit_needs_query_heads_that_share_the_vlm_kv_heads(build_model):
    bad = dataclasses.replace(presets.vla_tiny(), dit=dataclasses.replace(presets.dit_tiny(), num_heads=3))
    with pytest.raises(ValueError, match="num_heads=3 must be a multiple of the VLM's 2 KV heads"):
        build_model(bad)


def prefix_gradients(model, inputs, kind, prefix_length):
    """Per noisy timestep k, the largest |d velocity_k / d prefix action| over the batch."""
    context = model.vlm.encode(inputs)
    actions = torch.randn(2, T, 32, generator=torch.Generator().manual_seed(7)).requires_grad_()
    lengths = torch.full((2,), prefix_length)
    state = torch.randn(2, 32, generator=torch.Generator().manual_seed(8))
    mask = masks.dit_mask(kind, T, WINDOW, lengths)
    out = model.dit(actions, torch.full((2,), 0.4), state, context, lengths, mask)
    reach = {}
    for k in range(prefix_length, T):
        (grad,) = torch.autograd.grad(out[:, k].sum(), actions, retain_graph=True)
        reach[k] = grad[:, :prefix_length].abs().max().item()
    return reach


def test_through_stacked_layers_lambda_lets_every_noisy_output_depend_on_the_prefix_and_strict_lambda_does_not(
        build_model, inputs):
    """4 layers, w = 2, T = 8: a prefix of 2 reaches timestep 1 + 4·2 = 9 under Λ, past the chunk's end, as the
    report's 16 layers with w = 4 reach past T = 30. The strict variant bounds the reach to the window, by gradient."""
    config = dataclasses.replace(presets.vla_tiny(), dit=dataclasses.replace(presets.dit_tiny(), num_layers=4))
    model = build_model(config)
    prefix_length = 2
    assert masks.prefix_reach(prefix_length, WINDOW, 4) >= T - 1
    plain = prefix_gradients(model, inputs, AttentionKind.LAMBDA, prefix_length)
    assert all(value > 0 for value in plain.values()), plain
    strict = prefix_gradients(model, inputs, AttentionKind.LAMBDA_STRICT, prefix_length)
    near = range(prefix_length, prefix_length + WINDOW)
    assert all(strict[k] > 0 for k in near)
    assert all(strict[k] == 0.0 for k in range(prefix_length + WINDOW, T)), strict
