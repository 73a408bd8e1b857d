"""The inference policy: robot units in and out, and a saved directory that loads back to the same outputs."""

import dataclasses

import numpy as np
import pytest
import torch
from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

from vlaforge.training.model import presets
from vlaforge.training.policy import policy as policy_module
from vlaforge.training.policy.normalization import EmbodimentStats
from vlaforge.training.policy.policy import Observation, Policy

STATS = {
    "franka": EmbodimentStats(state_mean=np.full(8, 0.5), state_std=np.full(8, 0.1),
                              action_mean=np.full(7, 100.0), action_std=np.full(7, 2.0)),
    "aloha": EmbodimentStats(state_mean=np.zeros(14), state_std=np.ones(14),
                             action_mean=np.zeros(14), action_std=np.ones(14)),
}


@pytest.fixture(scope="module")
def observation(camera):
    def make(embodiment="franka", image="astronaut", state_dim=8):
        return Observation(images=[camera(image), camera("camera")], instruction="pick up the red block",
                           state=np.linspace(0.3, 0.7, state_dim), embodiment=embodiment)

    return make


@pytest.fixture(scope="module")
def policy(build_model, processor):
    config = dataclasses.replace(presets.vla_tiny(), attention="lambda")
    return Policy(build_model(config), processor, STATS)


def seeded(seed=0):
    return torch.Generator().manual_seed(seed)


def test_chunk_is_in_robot_units_for_the_embodiments_own_dimensions(policy, observation):
    chunk = policy.infer(observation(), generator=seeded())
    assert chunk.shape == (8, 7) and chunk.dtype == np.float32
    assert abs(chunk.mean() - 100.0) < 30  # unnormalized around the action mean of 100 (std 2)
    assert policy.infer(observation("aloha", state_dim=14), generator=seeded()).shape == (8, 14)


def test_same_seed_same_chunk_and_a_committed_prefix_is_kept(policy, observation):
    first = policy.infer(observation(), generator=seeded(3))
    assert np.array_equal(first, policy.infer(observation(), generator=seeded(3)))
    prefix = first[4:7]
    replanned = policy.infer(observation(image="coffee"), prefix=prefix, generator=seeded(4))
    assert np.array_equal(replanned[:3], prefix)
    free = policy.infer(observation(image="coffee"), generator=seeded(4))
    assert not np.allclose(replanned[3:5], free[3:5])  # the actions right after the prefix condition on it


def test_unknown_embodiment_lists_the_known_ones(policy, observation):
    expected = r"no normalization statistics for embodiment 'ur5'; known: \['aloha', 'franka'\]"
    with pytest.raises(KeyError, match=expected):
        policy.infer(observation("ur5"))


def test_save_and_load_give_identical_chunks_for_the_same_noise_seed(policy, observation, tmp_path):
    directory = policy.save_pretrained(tmp_path / "policy")
    names = {p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file()}
    assert {"policy.json", "dit.safetensors", "norm_stats.json", "vlm/config.json", "vlm/model.safetensors",
            "vlm/tokenizer.json", "vlm/processor_config.json"} <= names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl", ".pickle"))]
    loaded = Policy.from_pretrained(directory)
    assert loaded.model.config == policy.model.config
    for seed, prefix in ((0, None), (1, np.full((2, 7), 101.0, np.float32))):
        expected = policy.infer(observation(), prefix=prefix, generator=seeded(seed))
        assert np.array_equal(loaded.infer(observation(), prefix=prefix, generator=seeded(seed)), expected)


def test_the_saved_vlm_is_a_plain_hugging_face_checkpoint(policy, tmp_path):
    directory = policy.save_pretrained(tmp_path / "policy")
    model = Qwen3VLForConditionalGeneration.from_pretrained(directory / policy_module.VLM_DIR)
    processor = AutoProcessor.from_pretrained(directory / policy_module.VLM_DIR)
    assert model.config.text_config.num_hidden_layers == 4
    assert processor.tokenizer.convert_tokens_to_ids("<|image_pad|>") == model.config.image_token_id


def test_a_directory_from_another_format_version_is_refused(policy, tmp_path):
    directory = policy.save_pretrained(tmp_path / "policy")
    (directory / "policy.json").write_text('{"format_version": 99, "vla": {}}')
    with pytest.raises(ValueError, match="format_version 99, this code reads 1"):
        Policy.from_pretrained(directory)
