"""The DiT masks: causal for pre-training step 2 and sync post-training, Λ-shaped for async post-training."""

import pytest
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


def test_strict_lambda_keeps_far_noisy_tokens_off_the_prefix_and_its_window():
    # T = 6, w = 2; sample 0 has a prefix of 1, sample 1 none (plain Λ).
    mask = masks.strict_lambda_mask(chunk_len=6, window=2, prefix_lengths=torch.tensor([1, 0]))
    actions = mask[0, 2:, 2:].int().tolist()
    # a0 prefix; a1, a2 noisy within w of the prefix (they see it); a3.. are far: they see only a3.. in their window
    assert actions == [
        [1, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0],
        [1, 1, 1, 0, 0, 0],
        [0, 0, 0, 1, 0, 0],
        [0, 0, 0, 1, 1, 0],
        [0, 0, 0, 1, 1, 1],
    ]
    assert mask[0, 2:, :2].all()  # every action still sees the sink and the state
    assert torch.equal(mask[1], masks.lambda_mask(6, 2))


def test_dropping_prefix_keys_hides_them_from_noisy_tokens_only_and_keeps_the_last_ones():
    lengths = torch.tensor([5, 2, 0])
    base = masks.lambda_mask(8, window=8)  # causal: every noisy token sees the whole prefix
    dropped = masks.drop_prefix_keys(base, lengths, probability=1.0, keep_last=2)
    # sample 0: prefix a0..a4, a0..a2 hidden from the noisy rows a5..a7; a3, a4 (the last 2) stay
    assert not dropped[0, 7:, 2:5].any() and dropped[0, 7:, 5:7].all()
    assert torch.equal(dropped[0, :7], base[:7])  # the sink, state and prefix rows are untouched
    assert torch.equal(dropped[1], base) and torch.equal(dropped[2], base)  # nothing droppable
    assert torch.equal(masks.drop_prefix_keys(base, lengths, probability=0.0, keep_last=2)[0], base)
    torch.manual_seed(0)
    many = masks.drop_prefix_keys(base, torch.full((4000,), 5), probability=0.5, keep_last=2)
    assert (~many[:, 7, 2:5]).float().mean().item() == pytest.approx(0.5, abs=0.02)
