"""Synchronous and asynchronous chunk execution on a simulated robot clock.

Time advances in control ticks (30 Hz by default). The simulated robot is position-controlled: its state is the
last action it executed. An inference started at tick t sees that state (and whatever else the caller observes at
tick t) and its chunk is ready `latency_ticks` later.

- Synchronous: execute the first T_e actions, then infer; the robot idles for the whole inference.
- Asynchronous (report section 2.3, figure 5): when step T_e of the current chunk is due, start the next inference
  with steps T_e .. T_e + Δtc − 1 of the current chunk as its prefix, keep executing the current chunk, and when
  the new chunk is ready, continue from its step Δt_inf. Because its first Δtc ≥ Δt_inf steps are that prefix, the
  robot never waits and the executed sequence runs on across the switch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

# infer(tick, robot_state, prefix) -> chunk [T, D_a]. robot_state is the last executed action (None before the
# first), prefix [Δtc, D_a] the committed actions the chunk must start with (None in synchronous mode).
InferFn = Callable[[int, np.ndarray | None, np.ndarray | None], np.ndarray]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExecutionConfig:
    """The control loop's timing."""

    chunk_len: int
    """T, actions per inferred chunk."""
    execute_steps: int
    """T_e: steps executed from a chunk before the next inference starts."""
    prefix_steps: int = 0
    """Δtc: committed actions passed as the next inference's prefix (asynchronous mode)."""
    asynchronous: bool = False
    """Keep executing while inferring (True) or idle until the inference completes (False)."""
    control_hz: float = 30.0
    """Control rate of the robot."""
    inference_latency_s: float = 0.08
    """Wall time of one inference (80 ms on an RTX 4090 in the report)."""

    def __post_init__(self) -> None:
        if self.control_hz <= 0 or self.inference_latency_s < 0:
            raise ValueError(f"ExecutionConfig needs control_hz > 0 and inference_latency_s >= 0, got "
                             f"{self.control_hz}, {self.inference_latency_s}")
        if not 1 <= self.execute_steps <= self.chunk_len:
            raise ValueError(
                f"ExecutionConfig.execute_steps must be in [1, {self.chunk_len}], got {self.execute_steps}"
            )
        if self.asynchronous:
            self._check_asynchronous()

    def _check_asynchronous(self) -> None:
        latency = self.latency_ticks
        if self.prefix_steps < latency:
            raise ValueError(f"ExecutionConfig.prefix_steps={self.prefix_steps} must be >= the inference latency of "
                             f"{latency} ticks, or the robot runs out of committed actions")
        if self.execute_steps < latency:
            raise ValueError(f"ExecutionConfig.execute_steps={self.execute_steps} must be >= the latency of {latency} "
                             "ticks: a new chunk starts at step Δt_inf and must still reach step T_e")
        if self.execute_steps + self.prefix_steps > self.chunk_len:
            total = self.execute_steps + self.prefix_steps
            raise ValueError(f"ExecutionConfig: execute_steps + prefix_steps = {total} exceeds the chunk length "
                             f"{self.chunk_len}")

    @property
    def latency_ticks(self) -> int:
        """Δt_inf: the inference latency in whole control ticks (rounded up; float noise tolerated)."""
        return math.ceil(self.inference_latency_s * self.control_hz - 1e-9)


@dataclasses.dataclass
class ExecutionLog:
    """What the robot did at every tick."""

    actions: list[np.ndarray | None] = dataclasses.field(default_factory=list)
    """Per tick, the executed action, or None when the robot had nothing to execute."""
    chunk_ids: list[int] = dataclasses.field(default_factory=list)
    """Per tick, which inference the executed action came from (-1 when idle)."""
    inference_ticks: list[int] = dataclasses.field(default_factory=list)
    """Ticks at which an inference started."""

    def record(self, action: np.ndarray | None, chunk_id: int) -> None:
        self.actions.append(action)
        self.chunk_ids.append(chunk_id if action is not None else -1)

    def robot_state(self) -> np.ndarray | None:
        """The last executed action: where the position-controlled robot now is."""
        return next((a for a in reversed(self.actions) if a is not None), None)

    @property
    def idle_ticks(self) -> int:
        """Ticks without an action, the start-up inference included."""
        return sum(a is None for a in self.actions)

    @property
    def idle_ticks_after_start(self) -> int:
        """Ticks without an action after the first executed one."""
        first = next(i for i, a in enumerate(self.actions) if a is not None)
        return sum(a is None for a in self.actions[first:])

    def largest_jumps(self) -> tuple[float, float]:
        """(largest |Δa| at a chunk switch, largest |Δa| between steps of one chunk), over executed actions."""
        executed = [(a, c) for a, c in zip(self.actions, self.chunk_ids) if a is not None]
        at_switch, within = 0.0, 0.0
        for (previous, previous_chunk), (current, chunk) in zip(executed, executed[1:]):
            jump = float(np.abs(current - previous).max())
            if chunk != previous_chunk:
                at_switch = max(at_switch, jump)
            else:
                within = max(within, jump)
        return at_switch, within


def run(infer: InferFn, config: ExecutionConfig, num_ticks: int) -> ExecutionLog:
    """Drive the robot for `num_ticks` ticks in the mode `config` asks for."""
    if config.asynchronous:
        return _run_asynchronous(infer, config, num_ticks)
    return _run_synchronous(infer, config, num_ticks)


def _run_synchronous(infer: InferFn, config: ExecutionConfig, num_ticks: int) -> ExecutionLog:
    log = ExecutionLog()
    while len(log.actions) < num_ticks:
        log.inference_ticks.append(len(log.actions))
        chunk = infer(len(log.actions), log.robot_state(), None)
        chunk_id = len(log.inference_ticks) - 1
        for _ in range(config.latency_ticks):
            log.record(None, chunk_id)
        # The chunk was inferred for the start tick; executing it late is what makes synchronous mode idle-and-lag.
        for step in range(config.execute_steps):
            log.record(chunk[step], chunk_id)
    del log.actions[num_ticks:], log.chunk_ids[num_ticks:]
    return log


def _run_asynchronous(infer: InferFn, config: ExecutionConfig, num_ticks: int) -> ExecutionLog:
    log = ExecutionLog()
    latency = config.latency_ticks
    log.inference_ticks.append(0)
    current, current_id, step = infer(0, None, None), 0, 0
    # Start-up: nothing exists to execute before the first chunk; from then on step k of a chunk runs at its
    # base tick + k, and the next inference starts exactly when step T_e is due.
    for _ in range(min(latency, num_ticks)):
        log.record(None, 0)
    pending: tuple[int, int, np.ndarray] | None = None  # (ready tick, chunk id, chunk)
    for tick in range(latency, num_ticks):
        if pending is not None and tick == pending[0]:
            (_, current_id, current), step, pending = pending, latency, None
        if pending is None and step == config.execute_steps:
            log.inference_ticks.append(tick)
            prefix = current[step : step + config.prefix_steps]
            pending = (tick + latency, len(log.inference_ticks) - 1, infer(tick, log.robot_state(), prefix))
            if latency == 0:
                (_, current_id, current), step, pending = pending, 0, None
        log.record(current[step], current_id)
        step += 1
    return log
