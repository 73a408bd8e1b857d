"""The DiT masks: causal for pre-training step 2 and sync post-training, Λ-shaped for async post-training."""

import torch

from vlaforge.training.model import masks


def test_causal_mask_lets_each_token_see_itself_and_everything_before():
    mask = masks.causal_mask(chunk_len=3)
    assert mask.tolist() == [
        [1, 0, 0, 0, 0],
        [1, 1, 0, 0, 0],
        [1, 1, 1, 0, 0],
        [1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1],
    ]


def test_lambda_mask_keeps_sink_state_and_the_last_w_actions():
    # Rows/columns: SINK, state, a0..a4; window 2: a_k sees a_{k-2}..a_k.
    expected = [
        [1, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1, 0, 0],
        [1, 1, 0, 1, 1, 1, 0],
        [1, 1, 0, 0, 1, 1, 1],
    ]
    assert masks.lambda_mask(chunk_len=5, window=2).int().tolist() == expected


def test_lambda_mask_with_a_window_as_long_as_the_chunk_is_causal():
    assert torch.equal(masks.lambda_mask(6, window=6), masks.causal_mask(6))


def test_joint_mask_hides_vlm_padding_from_every_dit_token():
    valid = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])
    joint = masks.joint_mask(valid, masks.causal_mask(2))
    assert joint.shape == (2, 1, 4, 8)
    assert not joint[0, 0, :, 3].any() and joint[1, 0, :, 3].all()
    assert torch.equal(joint[0, 0, :, 4:], masks.causal_mask(2))


def test_prefix_reach_chains_the_window_through_the_layers():
    assert masks.prefix_reach(prefix_length=2, window=2, num_layers=1) == 3
    assert masks.prefix_reach(prefix_length=2, window=2, num_layers=2) == 5
