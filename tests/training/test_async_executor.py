"""Chunk executors against a scripted server: which action runs at which tick, with which prefix.

The scripted server answers with chunks whose values encode (request, step), and starts each chunk with the prefix
it was sent, as a policy server conditioned on it does. So the executed sequence shows exactly where each chunk was
switched in and that the robot never ran out of committed actions."""

import threading
import time

import numpy as np
import pytest

from vlaforge.training.policy.async_executor import (
    AsyncChunkExecutor,
    AsyncExecutionConfig,
    Clock,
    ExecutionError,
)
from vlaforge.training.policy.sync_executor import SyncChunkExecutor

T = 8


class ScriptedServer:
    """chunk n holds 100 * n + step; a prefix replaces its first steps, as our server does."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.requests: list[dict] = []
        self.delay_s = delay_s
        self.threads: set[str] = set()

    def infer(self, observation):
        self.threads.add(threading.current_thread().name)
        self.requests.append(observation)
        time.sleep(self.delay_s)
        chunk = 100.0 * (len(self.requests) - 1) + np.arange(T, dtype=np.float32)[:, None] * np.ones((1, 2))
        prefix = observation.get("action_prefix")
        if prefix is not None:
            chunk[: len(prefix)] = prefix
        return {"actions": chunk.astype(np.float32), "server_timing": {"infer_ms": 1.0}}


def run(executor, ticks):
    actions = [executor.act({"tick": tick}) for tick in range(ticks)]
    return np.array([a[0] for a in actions])


def test_async_simulated_clock_switches_at_latency_and_never_starves():
    server = ScriptedServer()
    executor = AsyncChunkExecutor(server.infer, AsyncExecutionConfig(execute_steps=4, prefix_steps=1, latency_ticks=2,
                                                                     control_hz=50))
    executed = run(executor, 16)
    executor.close()
    # start-up chunk 0 runs steps 0..5 (4..5 while request 1 is in flight); each later chunk steps 2..5
    assert list(executed) == [0, 1, 2, 3, 4, 5, 102, 103, 104, 105, 202, 203, 204, 205, 302, 303]
    assert [r["tick"] for r in server.requests] == [0, 4, 8, 12]  # sent when step T_e is due
    assert [len(r.get("action_prefix", ())) for r in server.requests] == [0, 2, 2, 2]  # Δtc = Δt_inf
    assert np.array_equal(server.requests[1]["action_prefix"][:, 0], [4, 5])  # the committed steps T_e, T_e+1
    assert executor.log.starved_ticks == 0 and executor.log.late_switches == 0
    assert server.threads != {threading.current_thread().name}  # requests ran on the worker thread
    assert executor.log.actions_per_inference() == 16 / 4


def test_async_latency_from_the_start_up_request_and_zero_latency():
    server = ScriptedServer()
    executor = AsyncChunkExecutor(server.infer, AsyncExecutionConfig(execute_steps=3, prefix_steps=0, latency_ticks=0))
    assert list(run(executor, 7)) == [0, 1, 2, 100, 101, 102, 200]  # no latency: switched in at once
    slow = AsyncChunkExecutor(ScriptedServer(delay_s=0.05).infer,
                              AsyncExecutionConfig(execute_steps=3, control_hz=50, latency_ticks=None))
    run(slow, 1)
    assert slow.latency_ticks >= 3  # 50 ms or more at 50 Hz, measured on the start-up request
    slow.close()


def test_async_refuses_a_latency_the_chunk_cannot_cover():
    executor = AsyncChunkExecutor(ScriptedServer().infer,
                                  AsyncExecutionConfig(execute_steps=4, latency_ticks=5, control_hz=50))
    with pytest.raises(ExecutionError, match=r"latency is 5 ticks at 50 Hz, so Δtc = 5, but a chunk of T = 8 "
                                             r"executed from step T_e = 4 leaves only 4 committed actions"):
        run(executor, 6)


def test_async_wall_clock_raises_the_prefix_to_the_measured_latency():
    server = ScriptedServer(delay_s=0.03)
    executor = AsyncChunkExecutor(server.infer, AsyncExecutionConfig(execute_steps=3, prefix_steps=1, control_hz=1000,
                                                                     clock=Clock.WALL, latency_margin_ticks=1))
    with pytest.raises(ExecutionError, match=r"latency is \d+ ticks at 1000 Hz"):
        run(executor, 4)  # 30 ms is 30+ ticks at 1 kHz: more than a chunk of 8 can commit
    executor.close()
    relaxed = AsyncChunkExecutor(ScriptedServer().infer,
                                 AsyncExecutionConfig(execute_steps=3, prefix_steps=1, control_hz=1.0,
                                                      clock=Clock.WALL, latency_margin_ticks=1))
    run(relaxed, 1)
    assert relaxed.prefix_steps() == 2  # a sub-second latency is 1 tick at 1 Hz, plus the margin
    relaxed.close()


def test_async_wall_clock_counts_starvation_when_the_chunk_runs_out():
    server = ScriptedServer()
    gate = threading.Event()

    def held(observation):
        if len(server.requests) >= 1:
            gate.wait(5)
        return server.infer(observation)

    executor = AsyncChunkExecutor(held, AsyncExecutionConfig(execute_steps=6, prefix_steps=2, control_hz=1.0,
                                                             clock=Clock.WALL, latency_margin_ticks=0))
    threading.Timer(0.3, gate.set).start()
    executed = run(executor, 10)  # request 1 goes out at tick 6; chunk 0 runs out after tick 7 and the robot waits
    executor.close()
    assert list(executed[:8]) == [0, 1, 2, 3, 4, 5, 6, 7]
    assert executor.log.starved_ticks >= 1 and executor.log.late_switches == 1
    assert executed[8] >= 100  # then the new chunk


def test_sync_executes_t_e_then_waits_for_the_next_chunk():
    server = ScriptedServer()
    executor = SyncChunkExecutor(server.infer, execute_steps=3)
    assert list(run(executor, 7)) == [0, 1, 2, 100, 101, 102, 200]
    assert [r["tick"] for r in server.requests] == [0, 3, 6]
    assert all("action_prefix" not in r for r in server.requests)
    assert [i.prefix_len for i in executor.log.inferences] == [0, 0, 0]


def test_jerk_is_measured_where_chunks_meet_and_inside_them():
    server = ScriptedServer()
    executor = SyncChunkExecutor(server.infer, execute_steps=4)
    run(executor, 12)
    at_switch, within = executor.log.jerk(control_hz=10)
    assert within == 0.0  # a ramp inside a chunk has no jerk
    assert at_switch > 0  # the 100-unit jump between chunks does
