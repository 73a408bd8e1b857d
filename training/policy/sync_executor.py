"""`SyncChunkExecutor`: synchronous chunk execution against any policy server (the report's baseline scheme).

Call `act(observation)` once per control tick; it returns the action to execute. Every T_e ticks it asks the server
for a new chunk and waits for it (the robot idles meanwhile), then executes its first T_e actions. openpi's
`ActionChunkBroker` does the same with `action_horizon` = T_e.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from vlaforge.training.policy.chunk_log import ChunkLog, Inference

InferFn = Callable[[Mapping[str, Any]], Mapping[str, Any]]
"""A policy server's `infer`: an observation dict in, a response with `actions` [T, D_a] out (`PolicyClient.infer`,
or openpi-client's `WebsocketClientPolicy.infer`)."""


class SyncChunkExecutor:
    """Infer, execute T_e actions, infer again (see the module docstring)."""

    def __init__(self, infer: InferFn, *, execute_steps: int) -> None:
        if execute_steps < 1:
            raise ValueError(f"SyncChunkExecutor.execute_steps must be >= 1, got {execute_steps}")
        self.infer = infer
        self.execute_steps = execute_steps
        self.log = ChunkLog()
        self._chunk: np.ndarray | None = None
        self._step = 0

    def act(self, observation: Mapping[str, Any]) -> np.ndarray:
        """The action for this tick (waits for the server when a new chunk is due)."""
        if self._chunk is None or self._step == self.execute_steps:
            self._chunk, self._step = request_chunk(self.infer, observation, self.log, 0), 0
            if len(self._chunk) < self.execute_steps:
                raise ValueError(f"the server returned a chunk of {len(self._chunk)} actions, fewer than "
                                 f"execute_steps={self.execute_steps}")
        action = self._chunk[self._step]
        self.log.record(action, len(self.log.inferences) - 1, self._step)
        self._step += 1
        return action


def request_chunk(infer: InferFn, observation: Mapping[str, Any], log: ChunkLog, prefix_len: int) -> np.ndarray:
    """One blocking request; logs its timing and returns the chunk [T, D_a] (float32)."""
    started = time.perf_counter()
    response = infer(observation)
    latency = time.perf_counter() - started
    log.inferences.append(Inference(tick=log.ticks, prefix_len=prefix_len, latency_s=latency,
                                    server_ms=server_timing(response)))
    return np.asarray(response["actions"], dtype=np.float32)


def server_timing(response: Mapping[str, Any]) -> dict[str, float | None]:
    """The server's timing fields: openpi's `server_timing` and the policy's own `policy_timing.infer_ms`."""
    timing = dict(response.get("server_timing") or {})
    policy = response.get("policy_timing") or {}
    if "infer_ms" in policy:
        timing["policy_infer_ms"] = policy["infer_ms"]
    return timing
