"""What an environment process drives, whatever the simulator: `SimEnvironment` (tasks, reset, step, a frame),
its `SimTask`s and each step's `StepResult`. The adapters (`aloha_env.py`, `libero_env.py`) implement it; the
registry of named environments is `sim_envs.py`."""

from __future__ import annotations

import dataclasses
from typing import Any, Protocol

import numpy as np


@dataclasses.dataclass(frozen=True)
class SimTask:
    """One task of an environment: its index, name, instruction and how many fixed initial states it has."""

    index: int
    name: str
    prompt: str
    init_states: int | None = None
    """LIBERO ships fixed initial states per task (50); None where the seed draws the initial state."""


@dataclasses.dataclass(frozen=True)
class StepResult:
    observation: dict[str, Any]
    reward: float
    done: bool
    success: bool


class SimEnvironment(Protocol):
    """What the environment process drives: tasks, reset, step, and a frame for the video."""

    def tasks(self) -> list[SimTask]: ...

    def reset(self, task: int, episode: int, seed: int) -> dict[str, Any]:
        """The client observation at the start of `episode` of `task` (seeded)."""

    def step(self, action: np.ndarray) -> StepResult: ...

    def frame(self) -> np.ndarray:
        """The current view, uint8 [H, W, 3], for the episode video."""

    def close(self) -> None: ...
