"""Offline evaluation on DROID's held-out episodes: errors per horizon step in robot units, deterministic for a seed,
and a step-1 checkpoint's Choice Policies candidates."""

import json

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from vlaforge.evaluation import offline_evaluation
from vlaforge.evaluation.offline_evaluation import OfflineEvalConfig, evaluate_offline
from vlaforge.flows.sample_data.tiny_policy import TinyPolicySpec, write_tiny_policy
from vlaforge.pipelines.corpus_manifest import ComponentKind, CorpusConfig, CorpusInput, build_corpus, write_corpus
from vlaforge.training.model.choice_policies import ChoicePoliciesConfig, ChoicePoliciesHead

SAMPLES = 6


@pytest.fixture(scope="module")
def corpus(droid_shards, tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.json"
    write_corpus(build_corpus([CorpusInput(path=droid_shards[0], kind=ComponentKind.ROBOT, name="droid")], path,
                              CorpusConfig(seed=1)), path)
    return path


@pytest.fixture(scope="module")
def droid_policy(droid_shards, tmp_path_factory):
    """A tiny policy normalizing DROID's embodiment (its stats.json) with a step-1 Choice Policies head beside it,
    saved as `Trainer.export` saves one."""
    statistics = json.loads((droid_shards[0] / "stats.json").read_text())
    directory = write_tiny_policy(tmp_path_factory.mktemp("policy") / "policy", TinyPolicySpec(statistics=statistics))
    torch.manual_seed(0)
    head = ChoicePoliciesHead(ChoicePoliciesConfig(num_candidates=4, chunk_len=8), vlm_hidden_size=64)
    save_file({k: v.contiguous() for k, v in head.state_dict().items()}, directory / "choice_policies.safetensors")
    (directory / "choice_policies.json").write_text(json.dumps(vars(head.config)))
    return directory


def recorded_chunks(corpus, count):
    """The first `count` held-out chunks as the stream hands them out, read straight from the shards."""
    import io

    from vlaforge.training.data.corpus_stream import CorpusStream

    chunks = []
    for sample in CorpusStream(str(corpus), split="validation", one_pass=True, seed=0):
        meta = json.loads(sample["meta.json"])
        chunks.append(np.load(io.BytesIO(sample["action.npy"]))[: min(meta["valid_len"], 8)])
        if len(chunks) == count:
            return chunks


def test_errors_per_step_in_robot_units_deterministic_for_a_seed(droid_policy, corpus, tmp_path):
    config = OfflineEvalConfig(policy=droid_policy, corpus=str(corpus), max_samples=SAMPLES, image_size=(32, 32),
                               output=tmp_path)
    results = evaluate_offline(config)
    assert list(results["embodiments"]) == ["franka_droid"]
    entry = results["embodiments"]["franka_droid"]
    flow = entry["flow_matching"]
    expected_counts = np.zeros(8, dtype=int)
    for chunk in recorded_chunks(corpus, SAMPLES):
        expected_counts[: len(chunk)] += 1
    assert flow["samples_by_step"] == expected_counts.tolist() and entry["samples"] == SAMPLES
    assert len(flow["l1_by_step"]) == 8 and all(v > 0 for v in flow["l1_by_step"])
    assert flow["mse"] > 0 and results["settings"]["units"] == "robot (unnormalized)"
    assert json.loads((tmp_path / "offline_results.json").read_text()) == results

    assert evaluate_offline(config) == results  # the same seed: the same numbers
    other = evaluate_offline(OfflineEvalConfig(policy=droid_policy, corpus=str(corpus), max_samples=SAMPLES,
                                               image_size=(32, 32), seed=1))
    assert other["embodiments"]["franka_droid"]["flow_matching"]["l1"] != flow["l1"]


def test_choice_policies_top_scored_against_best_of_n(droid_policy, corpus):
    results = evaluate_offline(OfflineEvalConfig(policy=droid_policy, corpus=str(corpus), max_samples=SAMPLES,
                                                 image_size=(32, 32)))
    choice = results["embodiments"]["franka_droid"]["choice_policies"]
    assert choice["candidates"] == 4 and 0.0 <= choice["top_picks_best"] <= 1.0
    assert choice["best_of_n"]["l1"] <= choice["top_scored"]["l1"]  # the oracle is never worse
    assert choice["top_scored"]["samples_by_step"][0] == SAMPLES


def test_a_corpus_without_the_split_says_so(droid_policy, corpus):
    with pytest.raises(Exception, match="no component has 'test' samples"):
        evaluate_offline(OfflineEvalConfig(policy=droid_policy, corpus=str(corpus), split="test"))


def test_the_step_1_head_file_names_are_the_trainers():
    from vlaforge.training.trainer import CHOICE_CONFIG, CHOICE_WEIGHTS

    assert (offline_evaluation.CHOICE_CONFIG, offline_evaluation.CHOICE_WEIGHTS) == (CHOICE_CONFIG, CHOICE_WEIGHTS)
