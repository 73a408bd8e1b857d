"""Closed-loop episodes of gym-aloha (real MuJoCo, rendered offscreen) against the tiny exported policy, through the
policy server, in both execution modes. The random-weight policy never succeeds; these tests check that the
episodes ran as configured, what they wrote, and that asynchronous execution never ran out of actions."""

import json

import pytest

from vlaforge.evaluation.episode_record import read_records
from vlaforge.evaluation.sim_evaluation import SimEvalConfig, evaluate_in_sim
from vlaforge.training.policy.observation_map import ObservationMap
from vlaforge.training.policy.policy import Policy
from vlaforge.training.policy.served_policy import ServedPolicy
from vlaforge.training.policy.server import PolicyServer

STEPS = 10


@pytest.fixture(scope="module")
def sync_run(mujoco_renders, tiny_policy_dir, tmp_path_factory):
    """A policy directory given: the evaluation starts its own server."""
    output = tmp_path_factory.mktemp("eval") / "sync"
    lines = []
    config = SimEvalConfig(policy=str(tiny_policy_dir), env="aloha-transfer-cube", episodes=2, mode="sync",
                           max_steps=STEPS, videos=1, output=output)
    return config, evaluate_in_sim(config, progress=lines.append), lines


@pytest.fixture(scope="module")
def async_run(mujoco_renders, tiny_policy_dir, tmp_path_factory):
    """A running server's URL given, as for a policy served elsewhere."""
    policy = Policy.from_pretrained(tiny_policy_dir)
    server = PolicyServer(ServedPolicy(policy, ObservationMap.load(tiny_policy_dir / "observation_map.json")), port=0)
    url = server.start()
    output = tmp_path_factory.mktemp("eval") / "async"
    config = SimEvalConfig(policy=url, env="aloha-transfer-cube", episodes=2, mode="async", max_steps=STEPS,
                           videos=0, latency_ticks=3, output=output)
    try:
        yield config, evaluate_in_sim(config)
    finally:
        server.stop()


def test_sync_episodes_ran_closed_loop_and_wrote_results_videos_and_summary(sync_run):
    config, results, lines = sync_run
    overall = results["overall"]
    assert overall["episodes"] == 2 and overall["steps"] == 2 * STEPS and overall["successes"] == 0
    assert overall["success_rate"] == 0.0 and 0.0 == overall["success_ci95"][0] < overall["success_ci95"][1] < 1
    # T_e = 4 (half the tiny policy's 8-action chunk): requests at ticks 0, 4 and 8 of each 10-step episode
    assert overall["actions_per_inference"] == pytest.approx(STEPS / 3)
    assert overall["latency_ms"]["p50"] > 0 and overall["latency_ms"]["p95"] >= overall["latency_ms"]["p50"]
    assert overall["time_s"]["env"] > 0 and overall["time_s"]["policy"] > 0 and overall["steps_per_s"] > 0
    assert list(results["tasks"]) == ["aloha-transfer-cube"]
    assert [line["episode"] for line in lines] == [0, 1]  # progress, one line per episode

    on_disk = json.loads((config.output / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    videos = sorted((config.output / "videos").glob("*.mp4"))
    assert [v.name for v in videos] == ["00-aloha-transfer-cube-episode000.mp4"] and videos[0].stat().st_size > 0
    page = (config.output / "summary.html").read_text()
    assert "videos/00-aloha-transfer-cube-episode000.mp4" in page and "0/2" in page

    records = list(read_records(config.output))
    assert [(r.episode, r.seed, r.length, r.inferences) for r in records] == [(0, 0, STEPS, 3), (1, 1, STEPS, 3)]


def test_async_episodes_never_ran_out_of_actions_and_sent_prefixes(async_run, sync_run):
    config, results = async_run
    overall = results["overall"]
    assert overall["episodes"] == 2 and overall["steps"] == 2 * STEPS
    assert overall["starved_ticks"] == 0 and overall["late_switches"] == 0
    records = list(read_records(config.output))
    # the same environment seeds as the synchronous run: the two are directly comparable
    assert [r.seed for r in records] == [r.seed for r in read_records(sync_run[0].output)]
    # start-up at tick 0, then a request each time step T_e = 4 is due: ticks 4 and 8 (the chunk arrives 3 later)
    assert all(r.inferences == 2 and r.mode == "async" for r in records)
    assert results["settings"]["latency_ticks"] == 3 and not (config.output / "videos").exists()


def test_a_rerun_skips_finished_episodes_and_other_settings_are_refused(sync_run):
    config, results, _ = sync_run
    before = (config.output / "episodes.jsonl").read_text()
    assert evaluate_in_sim(config) == json.loads(json.dumps(results))  # nothing left to run: the same results
    assert (config.output / "episodes.jsonl").read_text() == before
    import dataclasses

    with pytest.raises(ValueError, match=r"holds an evaluation with other settings \(mode differ\)"):
        evaluate_in_sim(dataclasses.replace(config, mode="async"))


def test_an_unknown_environment_names_the_closest():
    with pytest.raises(ValueError, match=r"unknown simulated environment 'aloha-transfer'; did you mean "
                                         r"'aloha-transfer-cube'\?"):
        SimEvalConfig(policy="x", env="aloha-transfer", output="out")
