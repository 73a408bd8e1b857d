"""`ServedPolicy`: what the policy server runs per request. A client's observation dict in, a response dict out.

Per connection, a `Session` holds the noise generator, seeded from the server's seed when the client connects, so
a client that connects, runs an episode and disconnects gets the same chunks for the same observations every time.
The response is `{"actions": float32 [T, D_a], "policy_timing": {"infer_ms": ...}}`: the chunk in robot units, in
the embodiment's native dimensions (no padding), starting with the committed prefix when the observation carried
one; `infer_ms` is the policy's own time (processor, VLM, flow-matching sampler), which the server's timing leaves
out of its overhead.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from vlaforge.training.policy.observation_map import ObservationError, ObservationMap
from vlaforge.training.policy.policy import Policy

ACTIONS = "actions"
POLICY_TIMING = "policy_timing"
INFER_MS = "infer_ms"
PROTOCOL = "openpi-websocket-msgpack-numpy"


class ServedPolicy:
    """A `Policy` behind an `ObservationMap`, answering observation dicts (see the module docstring)."""

    def __init__(self, policy: Policy, observation_map: ObservationMap, *, seed: int = 0) -> None:
        embodiment = observation_map.embodiment
        if embodiment not in policy.normalize:
            raise ValueError(f"the observation map's embodiment {embodiment!r} has no normalization statistics in "
                             f"this policy; known: {policy.normalize.embodiments}")
        self.policy = policy
        self.map = observation_map
        self.seed = seed
        self.state_dim = policy.normalize.state_dim(embodiment)
        self.action_dim = policy.normalize.action_dim(embodiment)

    @property
    def metadata(self) -> dict[str, Any]:
        """Sent to each client on connect: enough to write a client from."""
        chunk_len = self.policy.chunk_len
        return {
            "protocol": PROTOCOL,
            "server": "vlaforge",
            "embodiment": self.map.embodiment,
            "observation": self.map.describe(self.state_dim, self.action_dim, chunk_len),
            "prompt_key": self.map.prompt,
            "prefix_key": self.map.prefix,
            "actions": {"key": ACTIONS, "dtype": "float32", "shape": [chunk_len, self.action_dim],
                        "units": "robot (unnormalized)", "starts_with_prefix": True},
            "chunk_len": chunk_len,
            "seed": self.seed,
        }

    def session(self) -> "Session":
        return Session(self)


class Session:
    """One client connection: its own seeded noise generator."""

    def __init__(self, served: ServedPolicy) -> None:
        self.served = served
        self.generator = torch.Generator().manual_seed(served.seed)

    def infer(self, observation: Mapping[str, Any]) -> dict[str, Any]:
        """The response to one observation; `ObservationError` for one the policy cannot read."""
        served = self.served
        parsed, prefix = served.map.parse(observation, served.state_dim, served.action_dim)
        if prefix is not None and len(prefix) >= served.policy.chunk_len:
            raise ObservationError(f"observation key {served.map.prefix!r}: expected at most "
                                   f"{served.policy.chunk_len - 1} committed actions (the chunk holds "
                                   f"{served.policy.chunk_len}), got {len(prefix)}")
        started = time.perf_counter()
        with torch.inference_mode():
            actions = served.policy.infer(parsed, prefix=prefix if prefix is not None and len(prefix) else None,
                                          generator=self.generator)
        elapsed_ms = (time.perf_counter() - started) * 1e3
        return {ACTIONS: np.ascontiguousarray(actions, dtype=np.float32), POLICY_TIMING: {INFER_MS: elapsed_ms}}
