"""DiT RoPE positions (report figure 4) and their agreement with the VLM's own rotary geometry."""

import torch
from transformers.models.qwen3_vl.modeling_qwen3_vl import Qwen3VLTextRotaryEmbedding

from vlaforge.training.model import presets, rope


def test_positions_continue_the_vlm_and_offset_only_the_noisy_actions():
    positions = rope.dit_positions(torch.tensor([20]), torch.tensor([2]), chunk_len=5, noisy_offset=10)
    # SINK 20, state 21, clean prefix 22 23, noisy actions 24 25 26 shifted by 10.
    assert positions.tolist() == [[20, 21, 22, 23, 34, 35, 36]]


def test_offset_moves_noisy_tokens_and_not_the_prefix_per_sample():
    starts, prefixes = torch.tensor([7, 30]), torch.tensor([0, 3])
    shifted = rope.dit_positions(starts, prefixes, chunk_len=6, noisy_offset=10)
    plain = rope.dit_positions(starts, prefixes, chunk_len=6, noisy_offset=0)
    moved = shifted - plain
    assert moved.tolist() == [[0, 0, 10, 10, 10, 10, 10, 10], [0, 0, 0, 0, 0, 10, 10, 10]]


def test_dit_rotation_equals_the_vlm_rotation_of_text_positions():
    text = presets.qwen3_vl_tiny().text_config
    vlm_rotary = Qwen3VLTextRotaryEmbedding(text)
    positions = torch.tensor([[0, 5, 17, 400, 1000]])
    x = torch.zeros(1, 5, text.head_dim)
    vlm_cos, vlm_sin = vlm_rotary(x, positions[None].expand(3, -1, -1))
    inv_freq = rope.inverse_frequencies(text.head_dim, text.rope_parameters["rope_theta"])
    cos, sin = rope.rotary_cos_sin(positions, inv_freq)
    torch.testing.assert_close(cos, vlm_cos, rtol=0, atol=1e-5)
    torch.testing.assert_close(sin, vlm_sin, rtol=0, atol=1e-5)
