"""Synchronous and asynchronous execution on a simulated 30 Hz robot clock."""

import dataclasses

import numpy as np
import pytest

from vlaforge.training.data.normalization import Normalize
from vlaforge.training.model import presets
from vlaforge.training.policy import execution
from vlaforge.training.policy.execution import ExecutionConfig
from vlaforge.training.policy.policy import Observation, Policy

STEP = 0.01  # the reference motion advances this much per tick in joint 0


def motion(phases) -> np.ndarray:
    """A smooth two-joint motion [n, 2]; joint 0 encodes the phase, so a policy can read where the robot is."""
    phases = np.asarray(phases, dtype=np.float64)
    return np.stack([phases * STEP, np.sin(phases / 6.0)], axis=-1).astype(np.float32)


class ReferencePolicy:
    """A perfect policy: it reads the robot's position and plans the motion on from there.

    It checks that every prefix it is handed is exactly the start of the plan it makes, which is what the trained
    model's sampler guarantees (test_vla.py), so the executor must hand over the right committed actions.
    """

    def __init__(self, chunk_len: int):
        self.chunk_len, self.prefix_lengths = chunk_len, []

    def __call__(self, tick, robot_state, prefix):
        start = 0 if robot_state is None else round(float(robot_state[0]) / STEP) + 1
        chunk = motion(np.arange(start, start + self.chunk_len))
        if prefix is not None:
            np.testing.assert_array_equal(prefix, chunk[: len(prefix)])
            self.prefix_lengths.append(len(prefix))
        return chunk


REAL_ROBOT = ExecutionConfig(chunk_len=30, execute_steps=10, prefix_steps=6, asynchronous=True,
                             inference_latency_s=0.08)  # 80 ms at 30 Hz: Δt_inf = 3 ticks


def test_async_execution_never_waits_and_runs_on_seamlessly_across_chunk_switches():
    policy = ReferencePolicy(REAL_ROBOT.chunk_len)
    log = execution.run(policy, REAL_ROBOT, num_ticks=300)
    latency = REAL_ROBOT.latency_ticks
    assert latency == 3
    assert log.idle_ticks == latency and log.idle_ticks_after_start == 0  # only the start-up inference
    assert all(a is not None for a in log.actions[latency:])
    assert len(log.inference_ticks) == 1 + (300 - latency - 10) // 10 + 1 and set(policy.prefix_lengths) == {6}
    # The robot follows the motion exactly, one step per tick, whichever chunk each action came from.
    np.testing.assert_array_equal(np.stack(log.actions[latency:]), motion(np.arange(300 - latency)))
    at_switch, within = log.largest_jumps()
    print(f"async: largest jump at a chunk switch {at_switch:.4f}, within a chunk {within:.4f}")
    assert len(set(log.chunk_ids[latency:])) > 20 and at_switch <= within


def test_sync_execution_idles_for_the_inference_latency_once_per_chunk():
    config = dataclasses.replace(REAL_ROBOT, asynchronous=False, inference_latency_s=0.1)
    log = execution.run(ReferencePolicy(config.chunk_len), config, num_ticks=20 * (10 + 3))
    assert config.latency_ticks == 3  # 0.1 s × 30 Hz, not rounded up to 4 by float noise
    assert len(log.inference_ticks) == 20 and log.idle_ticks == 20 * 3
    idle_runs = [i for i in range(1, len(log.actions)) if log.actions[i] is None and log.actions[i - 1] is not None]
    assert len(idle_runs) == 19  # the robot stops before every chunk after the first


def test_async_needs_a_prefix_that_covers_the_inference_latency():
    with pytest.raises(ValueError, match="prefix_steps=2 must be >= the inference latency of 3 ticks"):
        dataclasses.replace(REAL_ROBOT, prefix_steps=2)
    with pytest.raises(ValueError, match="execute_steps \\+ prefix_steps = 31 exceeds the chunk length 30"):
        dataclasses.replace(REAL_ROBOT, execute_steps=25)


def test_the_tiny_model_drives_the_robot_asynchronously(build_model, processor, camera):
    config = dataclasses.replace(presets.vla_tiny(), attention="lambda")
    franka = {"state": {"mean": [0.0] * 7, "std": [1.0] * 7}, "action": {"mean": [0.0] * 7, "std": [0.5] * 7}}
    policy = Policy(build_model(config), processor, Normalize.from_document({"embodiments": {"franka": franka}}))
    frames = [camera("astronaut")]
    chunks = []

    def infer(tick, robot_state, prefix):
        state = np.zeros(7, np.float32) if robot_state is None else robot_state
        chunk = policy.infer(Observation(images=frames, instruction="stack the cups", state=state,
                                         embodiment="franka"), prefix=prefix)
        chunks.append((tick, chunk, prefix))
        return chunk

    timing = ExecutionConfig(chunk_len=8, execute_steps=4, prefix_steps=3, asynchronous=True,
                             inference_latency_s=0.1)
    log = execution.run(infer, timing, num_ticks=40)
    assert log.idle_ticks_after_start == 0 and len(chunks) == 1 + (40 - 3 - 4) // 4 + 1
    for (_, previous, _), (tick, chunk, prefix) in zip(chunks, chunks[1:]):
        np.testing.assert_array_equal(prefix, previous[4:7])  # steps T_e .. T_e + Δtc − 1 of the running chunk
        np.testing.assert_array_equal(chunk[:3], prefix)
        if tick + 3 < 40:
            np.testing.assert_array_equal(log.actions[tick + 3], chunk[3])  # switched in at step Δt_inf
