"""Pre-training step 1: winner-takes-all Choice Policies on the VLM's appended tokens."""

import pytest
import torch

from vlaforge.training.model import choice_policies as cp
from vlaforge.training.model.vlm import VLMBackbone

N, T, A = 4, 3, 32


@pytest.fixture(scope="module")
def head_and_vlm(tiny_vlm_dir):
    torch.manual_seed(0)
    vlm = VLMBackbone.from_pretrained(tiny_vlm_dir, num_kv_layers=1)
    config = cp.ChoicePoliciesConfig(num_candidates=N, chunk_len=T)
    return cp.ChoicePoliciesHead(config, vlm.geometry.hidden_size), vlm


def predict(head_and_vlm, make_inputs, image="astronaut"):
    head, vlm = head_and_vlm
    inputs = make_inputs([(image, "pick up the red block")])
    return head(vlm, inputs, torch.linspace(-1, 1, 32)[None])


def test_only_the_closest_candidate_gets_action_gradient(head_and_vlm, make_inputs):
    head, _ = head_and_vlm
    head.zero_grad()
    candidates, scores = predict(head_and_vlm, make_inputs)
    assert candidates.shape == (1, N, T, A) and scores.shape == (1, N)
    actions = candidates[0, 2].detach() + 0.01  # candidate 2 is (by construction) the closest
    mask = torch.ones(1, T, A, dtype=torch.bool)
    losses = cp.choice_loss(candidates, scores, actions[None], mask)
    assert losses["winner"].tolist() == [2]
    losses["action_loss"].backward()
    rows = head.action_out.weight.grad.abs().sum(dim=1).view(N, A).sum(dim=1)
    bias = head.action_out.bias.grad.view(N, A).abs().sum(dim=1)
    assert rows[2] > 0 and bias[2] > 0
    assert rows[[0, 1, 3]].eq(0).all() and bias[[0, 1, 3]].eq(0).all()
    assert head.score_out.weight.grad is None  # the action loss does not train the scores


def test_score_target_is_each_candidates_l1_distance_over_real_elements(head_and_vlm, make_inputs):
    candidates, scores = predict(head_and_vlm, make_inputs)
    actions = torch.randn(1, T, A)
    mask = torch.zeros(1, T, A, dtype=torch.bool)
    mask[:, :2, :7] = True  # a 7-dimensional robot, a chunk cut short after 2 steps
    losses = cp.choice_loss(candidates, scores, actions, mask)
    expected = [(candidates[0, n, :2, :7] - actions[0, :2, :7]).abs().mean().item() for n in range(N)]
    assert losses["score_target"][0].tolist() == pytest.approx(expected, rel=1e-5)
    assert losses["score_loss"].item() == pytest.approx(((scores[0] - torch.tensor(expected)) ** 2).mean().item(),
                                                        rel=1e-4)


def test_score_loss_trains_the_score_token_and_not_the_candidates(head_and_vlm, make_inputs):
    head, _ = head_and_vlm
    head.zero_grad()
    candidates, scores = predict(head_and_vlm, make_inputs)
    cp.choice_loss(candidates, scores, torch.randn(1, T, A), torch.ones(1, T, A, dtype=torch.bool))[
        "score_loss"].backward()
    assert head.score_out.weight.grad.abs().sum() > 0 and head.score_token.grad.abs().sum() > 0
    assert head.action_out.weight.grad is None


def test_inference_returns_the_best_scored_candidate():
    candidates = torch.arange(2 * 3 * 2 * 1, dtype=torch.float32).view(2, 3, 2, 1)
    scores = torch.tensor([[0.5, 0.1, 0.9], [0.2, 0.7, 0.05]])
    best = cp.select_best(candidates, scores)
    assert torch.equal(best[0], candidates[0, 1]) and torch.equal(best[1], candidates[1, 2])


def test_candidates_depend_on_the_image(head_and_vlm, make_inputs):
    with torch.no_grad():
        first, _ = predict(head_and_vlm, make_inputs, "astronaut")
        second, _ = predict(head_and_vlm, make_inputs, "coffee")
    assert (first - second).abs().max() > 1e-4
