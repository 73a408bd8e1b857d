"""`ChunkLog`: what a chunk executor did, tick by tick and inference by inference, for evaluation metrics."""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Inference:
    """One request to the policy server."""

    tick: int
    """Control tick at which the observation was taken and the request sent."""
    prefix_len: int
    """Δtc: committed actions sent with it (0 in synchronous mode and for the start-up request)."""
    latency_s: float
    """Round trip as the client measured it (send to reply)."""
    server_ms: dict[str, float | None]
    """The server's own timing (`server_timing` and the policy's `infer_ms`), as it reported it."""


@dataclasses.dataclass
class ChunkLog:
    """Per tick, which chunk and step the executed action came from; per request, its timing."""

    actions: list[np.ndarray] = dataclasses.field(default_factory=list)
    """[D_a] executed action per tick."""
    chunk_ids: list[int] = dataclasses.field(default_factory=list)
    """Per tick, the index (in `inferences`) of the request whose chunk the action came from."""
    steps: list[int] = dataclasses.field(default_factory=list)
    """Per tick, the action's step within its chunk."""
    inferences: list[Inference] = dataclasses.field(default_factory=list)
    starved_ticks: int = 0
    """Ticks the robot had no committed action to execute and waited for a chunk (asynchronous mode only; the
    start-up request and synchronous mode's waits are by design and not counted)."""
    late_switches: int = 0
    """Chunks that arrived after their committed prefix had run out, so the robot's motion did not continue from
    the prefix into the new chunk (wall clock only)."""

    def record(self, action: np.ndarray, chunk_id: int, step: int) -> None:
        self.actions.append(action)
        self.chunk_ids.append(chunk_id)
        self.steps.append(step)

    @property
    def ticks(self) -> int:
        return len(self.actions)

    def actions_per_inference(self) -> float:
        return self.ticks / max(len(self.inferences), 1)

    def latencies_s(self) -> list[float]:
        return [inference.latency_s for inference in self.inferences]

    def jerk(self, control_hz: float) -> tuple[float | None, float | None]:
        """Mean |third difference| of the executed actions (L2 over dimensions, x hz³: units per s³), over windows
        that span a chunk switch and over windows inside one chunk; None where there is no such window.

        A window is 4 consecutive ticks; it spans a switch when its ticks do not all come from one chunk. Comparing
        the two says how much rougher the motion is where chunks meet.
        """
        if len(self.actions) < 4:
            return None, None
        actions = np.stack(self.actions).astype(np.float64)
        jerk = np.linalg.norm(np.diff(actions, n=3, axis=0), axis=-1) * control_hz ** 3
        ids = np.asarray(self.chunk_ids)
        spans = np.array([len(set(ids[i:i + 4])) > 1 for i in range(len(jerk))])
        at_switch = float(jerk[spans].mean()) if spans.any() else None
        within = float(jerk[~spans].mean()) if (~spans).any() else None
        return at_switch, within
