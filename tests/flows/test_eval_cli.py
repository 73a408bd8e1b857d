"""`vlaforge eval sim|offline|vl` through the `evaluate` flow on a real Prefect server: each prints its table and
writes its results."""

import json

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from vlaforge.datasets.synth.vl_benchmarks import write_mme, write_pope
from vlaforge.evaluation.sim_envs import SIM_ENVS
from vlaforge.evaluation.vl_retention import VL_BENCHMARKS
from vlaforge.flows import eval_cli
from vlaforge.flows.cli import main
from vlaforge.flows.sample_data.tiny_vlm import write_tiny_qwen3_vl

pytestmark = pytest.mark.slow


def run(prefect_server, argv, capsys):
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        code = main(argv)
    return code, " ".join(capsys.readouterr().out.split())


def test_eval_sim_runs_gym_aloha_episodes_and_prints_the_table(mujoco_renders, prefect_server, tiny_policy_dir,
                                                               tmp_path, capsys):
    code, out = run(prefect_server, ["eval", "sim", "--policy", str(tiny_policy_dir), "--env", "aloha-insertion",
                                     "--episodes", "1", "--max-steps", "6", "--mode", "async", "--videos", "0",
                                     "--output", str(tmp_path / "sim")], capsys)
    assert code == 0
    results = json.loads((tmp_path / "sim" / "results.json").read_text())
    assert results["overall"]["episodes"] == 1 and results["overall"]["steps"] == 6
    assert results["settings"]["mode"] == "async" and results["overall"]["starved_ticks"] == 0
    assert "aloha-insertion, async execution: 1 episodes" in out and "summary.html" in out


def test_eval_vl_compares_two_vlms(prefect_server, tmp_path, capsys):
    base, other = write_tiny_qwen3_vl(tmp_path / "base"), write_tiny_qwen3_vl(tmp_path / "step1", seed=1)
    pope, _ = write_pope(tmp_path / "pope")
    code, out = run(prefect_server, ["eval", "vl", "--vlm", str(base), "--vlm", str(other), "--benchmark", "pope",
                                     "--data", str(pope), "--benchmark", "mme", "--data", str(write_mme(tmp_path)),
                                     "--output", str(tmp_path / "vl"), "--max-new-tokens", "3"], capsys)
    assert code == 0
    results = json.loads((tmp_path / "vl" / "vl_results.json").read_text())
    assert list(results["benchmarks"]) == ["pope", "mme"] and list(results["vlms"]) == ["base", "step1"]
    assert "VL retention: accuracy per benchmark" in out and "step1 - base" in out


def test_eval_vl_needs_one_data_per_benchmark(capsys):
    assert main(["eval", "vl", "--vlm", "x", "--benchmark", "pope", "--benchmark", "mme", "--data", "a"]) == 2
    assert "give one --data per --benchmark: 2 benchmarks, 1 paths" in capsys.readouterr().err


def test_the_clis_choices_are_the_registries():
    assert set(eval_cli.SIM_ENVS) == set(SIM_ENVS) and set(eval_cli.VL_BENCHMARKS) == set(VL_BENCHMARKS)


def test_eval_offline_prints_errors_per_embodiment(prefect_server, droid_shards, tmp_path, capsys):
    from vlaforge.flows.sample_data.tiny_policy import TinyPolicySpec, write_tiny_policy
    from vlaforge.pipelines.corpus_manifest import ComponentKind, CorpusConfig, CorpusInput, build_corpus, write_corpus

    corpus = tmp_path / "corpus.json"
    write_corpus(build_corpus([CorpusInput(path=droid_shards[0], kind=ComponentKind.ROBOT, name="droid")], corpus,
                              CorpusConfig()), corpus)
    statistics = json.loads((droid_shards[0] / "stats.json").read_text())
    policy = write_tiny_policy(tmp_path / "policy", TinyPolicySpec(statistics=statistics))
    code, out = run(prefect_server, ["eval", "offline", "--policy", str(policy), "--corpus", str(corpus),
                                     "--max-samples", "2", "--image-size", "32x32", "--output", str(tmp_path / "off")],
                    capsys)
    assert code == 0
    results = json.loads((tmp_path / "off" / "offline_results.json").read_text())
    assert results["embodiments"]["franka_droid"]["samples"] == 2
    assert "franka_droid" in out and "robot units" in out
