"""Asynchronous post-training extras: Δtc draws and the error-based loss weights."""

import pytest
import torch

from vlaforge.training.model import action_prefix
from vlaforge.training.model.action_prefix import ActionPrefixConfig


def test_the_release_draw_prefixes_half_the_samples_with_a_length_uniform_in_1_to_6():
    torch.manual_seed(0)
    lengths = action_prefix.sample_prefix_lengths(40_000, chunk_len=30, config=ActionPrefixConfig())
    assert set(lengths.tolist()) == set(range(7))
    assert (lengths > 0).float().mean().item() == pytest.approx(0.5, abs=0.01)
    for value in range(1, 7):
        assert (lengths == value).float().mean().item() == pytest.approx(0.5 / 6, abs=0.01)


def test_the_papers_draw_is_uniform_over_0_to_6():
    torch.manual_seed(0)
    paper = ActionPrefixConfig(async_probability=1.0, prefix_lengths=[0, 1, 2, 3, 4, 5, 6])
    lengths = action_prefix.sample_prefix_lengths(40_000, chunk_len=30, config=paper)
    for value in range(7):
        assert (lengths == value).float().mean().item() == pytest.approx(1 / 7, abs=0.01)


def test_sync_only_configuration_never_prefixes():
    lengths = action_prefix.sample_prefix_lengths(1000, 30, ActionPrefixConfig(async_probability=0.0))
    assert not lengths.any()


def test_a_prefix_as_long_as_the_chunk_is_refused():
    with pytest.raises(ValueError, match="leave no noisy action in a chunk of 6"):
        action_prefix.sample_prefix_lengths(4, chunk_len=6, config=ActionPrefixConfig())


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="async_probability must be in \\[0, 1\\], got 1.5"):
        ActionPrefixConfig(async_probability=1.5)


def test_error_weights_normalize_over_async_samples_clamp_and_leave_sync_samples_at_one():
    actions = torch.zeros(3, 4, 1)
    errors = [[0.1, 0.1, 0.1, 0.1], [0.1, 0.1, 5.0, 20.0], [9.0, 9.0, 9.0, 9.0]]
    predicted = torch.tensor(errors)[..., None].requires_grad_()
    lengths = torch.tensor([1, 2, 0])  # the last sample is synchronous: its error is not part of the mean
    mask = torch.ones(3, 4, 1, dtype=torch.bool)
    weights = action_prefix.error_weights(predicted, actions, mask, lengths, ActionPrefixConfig())[..., 0]
    mean_error = (0.4 + 0.2 + 5.0 + 20.0) / 8  # 3.2, over the async samples' elements only
    assert weights[0].tolist() == [0.5] * 4  # 0.1 / 3.2 is below the floor
    assert weights[1].tolist() == [0.5, 0.5, pytest.approx(5.0 / mean_error), 5.0]  # 20 / 3.2 hits the ceiling
    assert weights[2].tolist() == [1.0] * 4
    assert not weights.requires_grad


def test_per_sample_weights_give_each_sample_one_weight_from_its_mean_error():
    actions = torch.zeros(3, 4, 1)
    predicted = torch.tensor([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 4.0, 4.0], [9.0, 9.0, 9.0, 9.0]])[..., None]
    lengths = torch.tensor([1, 1, 0])
    mask = torch.ones(3, 4, 1, dtype=torch.bool)
    per_sample = ActionPrefixConfig(weight_per="sample")
    weights = action_prefix.error_weights(predicted, actions, mask, lengths, per_sample)[..., 0]
    # sample means 1 and 2; their mean over the async elements is 1.5
    assert weights[0].tolist() == [pytest.approx(1 / 1.5)] * 4 and weights[1].tolist() == [pytest.approx(2 / 1.5)] * 4
    assert weights[2].tolist() == [1.0] * 4
    with pytest.raises(ValueError, match="'row' is not a valid WeightGranularity"):
        ActionPrefixConfig(weight_per="row")
