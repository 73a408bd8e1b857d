"""`AlohaEnvironment`: gym-aloha's bimanual transfer-cube and insertion tasks (MuJoCo through dm_control).

The robot is the ALOHA bimanual ViperX pair: state and action are 14 absolute joint positions (each arm's 6 joints,
then its gripper normalized to 0 closed .. 1 open, left arm first), at 50 Hz. gym-aloha renders its cameras at
480x640 every step and returns the `top` one. The reward counts stages (4 = done), and an episode succeeds when it
reaches 4. Rendering is offscreen: the environment process sets `MUJOCO_GL` (EGL) before MuJoCo loads.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vlaforge.evaluation.sim_environment import SimTask, StepResult


class AlohaEnvironment:
    """One gym-aloha task behind the `SimEnvironment` methods."""

    def __init__(self, gym_id: str, *, name: str, prompt: str, max_steps: int) -> None:
        import gym_aloha  # noqa: F401 - registers the gym_aloha/ ids with gymnasium
        import gymnasium

        self.name, self.prompt = name, prompt
        self._env = gymnasium.make(gym_id, obs_type="pixels_agent_pos", max_episode_steps=max_steps)
        self._image: np.ndarray | None = None

    def tasks(self) -> list[SimTask]:
        return [SimTask(index=0, name=self.name, prompt=self.prompt)]

    def reset(self, task: int, episode: int, seed: int) -> dict[str, Any]:
        observation, _ = self._env.reset(seed=seed)
        return self._observation(observation)

    def step(self, action: np.ndarray) -> StepResult:
        observation, reward, terminated, truncated, info = self._env.step(np.asarray(action, dtype=np.float32))
        return StepResult(observation=self._observation(observation), reward=float(reward),
                          done=bool(terminated or truncated), success=bool(info.get("is_success", False)))

    def frame(self) -> np.ndarray:
        return self._image

    def close(self) -> None:
        self._env.close()

    def _observation(self, observation: dict[str, Any]) -> dict[str, Any]:
        self._image = observation["pixels"]["top"]
        return {"images": {"top": self._image}, "state": np.asarray(observation["agent_pos"], dtype=np.float32),
                "prompt": self.prompt}
