"""The Qwen3-VL wrapper: loaded through from_pretrained, it exposes the last L layers' KV cache and positions."""

import pytest
import torch
from transformers import Qwen3VLForConditionalGeneration

from vlaforge.training.model.vlm import VLMBackbone


@pytest.fixture(scope="module")
def batch(make_inputs):
    return make_inputs([("astronaut", "pick up the red block and put it in the bowl"), ("coffee", "stop")])


def test_context_is_the_cache_of_the_last_layers_in_order(tiny_vlm_dir, batch):
    vlm = VLMBackbone.from_pretrained(tiny_vlm_dir, num_kv_layers=2)
    context = vlm.encode(batch)
    reference = Qwen3VLForConditionalGeneration.from_pretrained(tiny_vlm_dir)
    cache = reference.model(**batch, use_cache=True).past_key_values
    geometry = vlm.geometry
    assert len(context.keys) == 2 and geometry.num_layers == 4
    for i, layer in enumerate((2, 3)):  # DiT layer i reads VLM layer num_layers - L + i
        assert context.keys[i].shape == (2, geometry.num_kv_heads, batch["input_ids"].shape[1], geometry.head_dim)
        torch.testing.assert_close(context.keys[i], cache.layers[layer].keys)
        torch.testing.assert_close(context.values[i], cache.layers[layer].values)


def test_next_position_follows_each_samples_last_real_token(tiny_vlm_dir, batch):
    vlm = VLMBackbone.from_pretrained(tiny_vlm_dir, num_kv_layers=1)
    context = vlm.encode(batch)
    lengths = batch["attention_mask"].sum(dim=1)
    assert lengths[0] > lengths[1]  # the second sample is right-padded
    assert torch.equal(context.valid, batch["attention_mask"].bool())
    # Each 64x64 image is 4x4 patches merged 2x2: 4 tokens spanning 2 M-RoPE positions, so positions run 2 behind.
    assert context.next_position.tolist() == (lengths - 2).tolist()


def test_more_kv_layers_than_the_vlm_has_is_refused(tiny_vlm_dir):
    with pytest.raises(ValueError, match=r"num_kv_layers must be in \[1, 4\] for this VLM, got 16"):
        VLMBackbone.from_pretrained(tiny_vlm_dir, num_kv_layers=16)


def test_next_token_loss_trains_the_language_head(tiny_vlm_dir, batch):
    vlm = VLMBackbone.from_pretrained(tiny_vlm_dir, num_kv_layers=1)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    loss = vlm.next_token_loss(batch, labels)
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 5  # random weights over a 151,936-word vocabulary
    assert vlm.model.lm_head.weight.grad is not None
