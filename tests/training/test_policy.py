"""The inference policy: robot units in and out, and a saved directory that loads back to the same outputs."""

import dataclasses
import io
import json
import pathlib
import shutil

import numpy as np
import pytest
import torch
from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

from vlaforge.training.data.corpus_loader import CorpusLoader
from vlaforge.training.data.corpus_stream import CorpusStream
from vlaforge.training.data.normalization import Normalize, NormKind
from vlaforge.training.data.robot_transform import RobotSampleTransform
from vlaforge.training.model import presets
from vlaforge.training.policy import policy as policy_module
from vlaforge.training.policy.policy import Observation, Policy

ASSETS = pathlib.Path(__file__).resolve().parents[1] / "assets" / "training"


def statistics(dim: int, mean: float, std: float) -> dict:
    return {"mean": [mean] * dim, "std": [std] * dim}


NORMALIZE = Normalize.from_document({"embodiments": {
    "franka": {"state": statistics(8, 0.5, 0.1), "action": statistics(7, 100.0, 2.0)},
    "aloha": {"state": statistics(14, 0.0, 1.0), "action": statistics(14, 0.0, 1.0)},
}})


@pytest.fixture(scope="module")
def observation(camera):
    def make(embodiment="franka", image="astronaut", state_dim=8):
        return Observation(images=[camera(image), camera("camera")], instruction="pick up the red block",
                           state=np.linspace(0.3, 0.7, state_dim), embodiment=embodiment)

    return make


@pytest.fixture(scope="module")
def policy(build_model, processor):
    config = dataclasses.replace(presets.vla_tiny(), attention="lambda")
    return Policy(build_model(config), processor, NORMALIZE)


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
    with pytest.raises(ValueError, match="format_version 99, this code reads 1 and 2"):
        Policy.from_pretrained(directory)


def test_a_directory_exported_before_the_chunk_len_rename_still_loads(policy, observation, tmp_path):
    """`policy.json` version 1 (tests/assets: written by that code) names the chunk `chunk_length`, and its
    `norm_stats.json` has the same layout as today's."""
    directory = policy.save_pretrained(tmp_path / "policy")
    shutil.copy(ASSETS / "policy_v1.json", directory / "policy.json")
    shutil.copy(ASSETS / "norm_stats_v1.json", directory / "norm_stats.json")
    loaded = Policy.from_pretrained(directory)
    saved = json.loads((ASSETS / "policy_v1.json").read_text())["vla"]["prefix"]["prefix_lengths"]
    # the v1 file's own prefix draws (its default then), not today's
    prefix = dataclasses.replace(policy.model.config.prefix, prefix_lengths=tuple(saved))
    assert loaded.model.config == dataclasses.replace(policy.model.config, prefix=prefix) and loaded.chunk_len == 8
    assert loaded.normalize == Normalize.load(ASSETS / "norm_stats_v1.json")
    assert loaded.infer(observation(), generator=seeded()).shape == (8, 7)


@pytest.mark.parametrize("kind", list(NormKind))
def test_the_policy_unnormalizes_exactly_as_the_loader_normalized(kind, small_corpus, tiny_vlm_dir, build_model,
                                                                   processor, tmp_path):
    """One `Normalize` for both: the loader's, saved with the policy, comes back equal, and inverts the loader's
    normalized state and action chunk to the shard's values."""
    robot = RobotSampleTransform.Config(image_size=(16, 16), chunk_len=4, norm=kind)
    loader = CorpusLoader(CorpusLoader.Config(corpus_url=str(small_corpus), processor=str(tiny_vlm_dir),
                                              num_workers=0, robot=robot), rank=0, world_size=1)
    directory = Policy(build_model(), processor, loader.normalize).save_pretrained(tmp_path / "policy")
    exported = Policy.from_pretrained(directory).normalize
    assert exported == loader.normalize and exported.kind is kind and exported.embodiments == ["arm_a", "arm_b"]

    samples = iter(CorpusStream(str(small_corpus)))
    raw = next(s for s in samples if s["kind"] == "robot")
    example = loader.robot_transform(raw)
    state, chunk = (np.load(io.BytesIO(raw[member])) for member in ("state.npy", "action.npy"))
    dims = (len(state), chunk.shape[1])
    np.testing.assert_allclose(exported.unnormalize_actions(example.embodiment, example.actions[:4, :dims[1]]),
                               chunk[:4], rtol=1e-5, atol=1e-5)
    assert np.array_equal(exported.normalize_state(example.embodiment, state), example.state[:dims[0]])
    assert np.array_equal(exported.normalize_actions(example.embodiment, chunk[:4]), example.actions[:4, :dims[1]])
