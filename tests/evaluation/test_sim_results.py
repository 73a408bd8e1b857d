"""results.json's metrics from hand-built episode records: the Wilson interval at its published values, and where
the time of a round trip went."""

import pytest

from vlaforge.evaluation.episode_record import EpisodeRecord
from vlaforge.evaluation.sim_results import build_results, summarize, wilson_interval


def record(episode, *, success=False, latencies=(10.0, 30.0), server=(6.0, 8.0), policy=(4.0, 5.0), task="t"):
    return EpisodeRecord(task=task, task_index=0, episode=episode, seed=episode, mode="sync", success=success,
                         total_return=1.0 + episode, max_reward=1.0, length=8, inferences=len(latencies),
                         actions_per_inference=8 / len(latencies), latencies_ms=list(latencies),
                         server_infer_ms=list(server), policy_infer_ms=list(policy), starved_ticks=0, late_switches=0,
                         jerk_at_switch=None, jerk_within=None, env_s=1.5, wall_s=2.0)


def test_wilson_interval_matches_the_published_values():
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(0, 2) == pytest.approx((0.0, 0.6576), abs=1e-4)  # not the normal approximation's (0, 0)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_transport_is_the_round_trip_less_the_policys_own_time():
    """Our server reports the policy's time: the observation mapping (server less policy) is transport. A server
    that reports only its own total (openpi's) has that total counted as the policy's."""
    ours = summarize([record(0), record(1, success=True)])
    assert ours["time_s"]["policy"] == pytest.approx(2 * (4 + 5) / 1e3)
    assert ours["time_s"]["transport"] == pytest.approx(2 * ((10 - 4) + (30 - 5)) / 1e3)
    assert ours["successes"] == 1 and ours["mean_return"] == 1.5 and ours["steps"] == 16
    openpi = summarize([record(0, policy=(None, None))])
    assert openpi["time_s"]["policy"] == pytest.approx((6 + 8) / 1e3)
    assert openpi["time_s"]["transport"] == pytest.approx(((10 - 6) + (30 - 8)) / 1e3)
    assert openpi["latency_ms"] == {"p50": 20.0, "p95": pytest.approx(29.0)}


def test_results_group_episodes_by_task():
    results = build_results([record(1, task="b"), record(0, task="a"), record(2, task="a", success=True)],
                            {"env": "x"})
    assert list(results["tasks"]) == ["a", "b"] and results["tasks"]["a"]["successes"] == 1
    assert results["overall"]["episodes"] == 3 and [e["episode"] for e in results["episodes"]] == [0, 2, 1]
