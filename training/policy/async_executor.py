"""`AsyncChunkExecutor`: the report's asynchronous execution (section 2.3) against any policy server.

Call `act(observation)` once per control tick; it returns the action to execute at that tick.
- Start-up: the first chunk is requested and waited for.
- When step T_e of the current chunk is due, the next request goes out on a worker thread with the observation of
  that tick and the committed actions T_e .. T_e + Δtc − 1 of the current chunk as its prefix (the server conditions
  on them, so the new chunk starts with exactly them); the robot keeps executing the current chunk.
- When the new chunk arrives Δt_inf ticks later, execution continues from its step Δt_inf. Since its first Δtc ≥
  Δt_inf steps are the prefix, which is what the robot executed meanwhile, the motion runs on across the switch.

Two clocks:
- `Clock.WALL` (a robot): ticks are real time at the control rate, driven by the caller (`run_realtime` paces
  them). Δt_inf is measured: Δtc is raised to the largest recent latency in ticks plus a margin, and if that no
  longer fits the chunk (T_e + Δtc > T) the executor stops with an error naming the numbers. A chunk that arrives
  after the old one ran out costs starved ticks (counted in the log).
- `Clock.SIMULATED` (a simulator, whose time stands still between steps): Δt_inf is a fixed number of ticks (given,
  or the start-up request's latency at the control rate). The request still runs on a thread while the caller steps
  the simulator; at tick launch + Δt_inf the executor waits for it. Runs are reproducible and never starve, and the
  executed actions are exactly what a robot with that latency would execute.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import enum
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from vlaforge.training.policy.chunk_log import ChunkLog, Inference
from vlaforge.training.policy.sync_executor import InferFn, request_chunk, server_timing

PREFIX_KEY = "action_prefix"
RECENT_LATENCIES = 8
"""Requests whose largest latency sets Δt_inf on the wall clock."""


class Clock(str, enum.Enum):
    """Where control ticks come from (see the module docstring)."""

    WALL = "wall"
    SIMULATED = "simulated"


class ExecutionError(RuntimeError):
    """Asynchronous execution cannot keep the robot supplied with committed actions; the text says which numbers."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class AsyncExecutionConfig:
    """Timing of asynchronous execution."""

    execute_steps: int
    """T_e: steps of a chunk executed before the next request goes out."""
    prefix_steps: int = 1
    """Smallest Δtc sent as the prefix; raised to Δt_inf (plus `latency_margin_ticks` on the wall clock)."""
    control_hz: float = 30.0
    """Control rate: ticks per second."""
    clock: Clock = Clock.SIMULATED
    """Real time (a robot) or simulated ticks (a simulator)."""
    latency_ticks: int | None = None
    """Simulated clock: Δt_inf in ticks; None: the start-up request's latency at `control_hz`, rounded up."""
    latency_margin_ticks: int = 1
    """Wall clock: Δtc exceeds the measured Δt_inf by this many ticks, against jitter."""
    prefix_key: str = PREFIX_KEY
    """Observation key the server reads the prefix from (its metadata's `prefix_key`)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "clock", Clock(self.clock))
        if self.execute_steps < 1 or self.prefix_steps < 0 or self.latency_margin_ticks < 0:
            raise ValueError(f"AsyncExecutionConfig needs execute_steps >= 1, prefix_steps >= 0 and "
                             f"latency_margin_ticks >= 0, got {self.execute_steps}, {self.prefix_steps}, "
                             f"{self.latency_margin_ticks}")
        if self.control_hz <= 0:
            raise ValueError(f"AsyncExecutionConfig.control_hz must be > 0, got {self.control_hz}")
        if self.latency_ticks is not None and self.latency_ticks < 0:
            raise ValueError(f"AsyncExecutionConfig.latency_ticks must be >= 0, got {self.latency_ticks}")


@dataclasses.dataclass
class _Pending:
    future: concurrent.futures.Future
    tick: int
    started: float
    prefix: np.ndarray


class AsyncChunkExecutor:
    """Asynchronous chunk execution on a wall or simulated clock (see the module docstring)."""

    def __init__(self, infer: InferFn, config: AsyncExecutionConfig, *,
                 now: Callable[[], float] = time.perf_counter) -> None:
        self.infer = infer
        self.config = config
        self.log = ChunkLog()
        self._now = now
        self._worker = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="chunk-request")
        self._chunk: np.ndarray | None = None
        self._chunk_id = -1
        self._step = 0
        self._pending: _Pending | None = None
        self._latency_ticks = config.latency_ticks

    @property
    def latency_ticks(self) -> int | None:
        """Δt_inf: fixed (simulated clock) or the largest recent latency in ticks (wall clock)."""
        if self.config.clock is Clock.SIMULATED:
            return self._latency_ticks
        recent = self.log.latencies_s()[-RECENT_LATENCIES:]
        return self._ticks(max(recent)) if recent else None

    def prefix_steps(self) -> int:
        """Δtc for the next request: at least Δt_inf (plus the margin on the wall clock)."""
        latency = self.latency_ticks or 0
        margin = self.config.latency_margin_ticks if self.config.clock is Clock.WALL else 0
        return max(self.config.prefix_steps, latency + margin)

    def act(self, observation: Mapping[str, Any]) -> np.ndarray:
        """The action for this tick; requests, waits and switches chunks as the module docstring says."""
        if self._chunk is None:
            self._start(observation)
        elif self._pending is not None:
            self._collect()
        if self._pending is None and self._step >= self.config.execute_steps:
            self._launch(observation)
            if self.config.clock is Clock.SIMULATED and self._latency_ticks == 0:
                self._switch(self._pending, 0)  # no latency: the new chunk's first step is this tick's action
        if self._step >= len(self._chunk):
            self._starve()
        action = self._chunk[self._step]
        self.log.record(action, self._chunk_id, self._step)
        self._step += 1
        return action

    def close(self) -> None:
        """Wait for a request still in flight and stop the worker thread."""
        self._worker.shutdown(wait=True)

    def _start(self, observation: Mapping[str, Any]) -> None:
        chunk = request_chunk(self.infer, observation, self.log, 0)
        if len(chunk) < self.config.execute_steps:
            raise ExecutionError(f"the server returns chunks of {len(chunk)} actions, fewer than execute_steps="
                                 f"{self.config.execute_steps}")
        if self._latency_ticks is None and self.config.clock is Clock.SIMULATED:
            self._latency_ticks = self._ticks(self.log.inferences[-1].latency_s)
        self._chunk, self._chunk_id, self._step = chunk, 0, 0

    def _launch(self, observation: Mapping[str, Any]) -> None:
        # Normally the current step is T_e; it is later only when a chunk arrived after more than T_e ticks.
        steps, length, start = self.prefix_steps(), len(self._chunk), self._step
        if start + steps > length or steps >= length:
            raise ExecutionError(
                f"asynchronous execution needs Δtc >= Δt_inf: the inference latency is {self.latency_ticks} ticks at "
                f"{self.config.control_hz:g} Hz, so Δtc = {steps}, but a chunk of T = {length} executed from step "
                f"T_e = {start} leaves only {length - start} committed actions; lower execute_steps, or make "
                "inference faster, or train longer chunks")
        prefix = np.array(self._chunk[start:start + steps])
        request = {**observation, self.config.prefix_key: prefix} if steps else dict(observation)
        future = self._worker.submit(_timed, self.infer, request, self._now)
        self._pending = _Pending(future=future, tick=self.log.ticks, started=self._now(), prefix=prefix)

    def _collect(self) -> None:
        """Switch to the pending chunk when it is due (simulated) or has arrived (wall)."""
        pending = self._pending
        elapsed = self.log.ticks - pending.tick
        if self.config.clock is Clock.SIMULATED:
            if elapsed < self._latency_ticks:
                return
        elif not pending.future.done():
            return
        self._switch(pending, elapsed)

    def _starve(self) -> None:
        """The current chunk ran out before the next arrived: wait for it, counting the ticks the robot stood."""
        pending = self._pending
        waited_from = self._now()
        pending.future.result()
        stood = self._ticks(self._now() - waited_from) if self.config.clock is Clock.WALL else 0
        self.log.starved_ticks += max(stood, 1)
        self._switch(pending, self.log.ticks - pending.tick + max(stood, 1))

    def _switch(self, pending: _Pending, elapsed_ticks: int) -> None:
        response, latency = pending.future.result()
        chunk = np.asarray(response["actions"], dtype=np.float32)
        self.log.inferences.append(Inference(tick=pending.tick, prefix_len=len(pending.prefix), latency_s=latency,
                                             server_ms=server_timing(response)))
        if elapsed_ticks > len(pending.prefix):
            self.log.late_switches += 1
        self._chunk, self._chunk_id = chunk, len(self.log.inferences) - 1
        self._step = min(elapsed_ticks, len(chunk) - 1)
        self._pending = None

    def _ticks(self, seconds: float) -> int:
        return math.ceil(seconds * self.config.control_hz - 1e-9)


def _timed(infer: InferFn, request: Mapping[str, Any], now: Callable[[], float]) -> tuple[Mapping[str, Any], float]:
    started = now()
    response = infer(request)
    return response, now() - started


def run_realtime(executor: AsyncChunkExecutor, observe: Callable[[], Mapping[str, Any]],
                 apply: Callable[[np.ndarray], None], ticks: int) -> ChunkLog:
    """Drive a robot for `ticks` control ticks at the executor's control rate: observe, act, apply, sleep to the
    next tick. The robot clock never waits for inference except when starved."""
    period = 1.0 / executor.config.control_hz
    next_tick = time.perf_counter()
    for _ in range(ticks):
        apply(executor.act(observe()))
        next_tick += period
        time.sleep(max(0.0, next_tick - time.perf_counter()))
    return executor.log
