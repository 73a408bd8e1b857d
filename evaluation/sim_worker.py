"""The environment process of `vlaforge eval sim`: `python -m vlaforge.evaluation.sim_worker --config FILE`.

It runs a simulator and reaches the policy only through the policy server's websocket, as a robot would: one
connection per episode (so each episode's noise seed starts fresh), a `SyncChunkExecutor` or an
`AsyncChunkExecutor` on the simulated clock turning chunks into one action per control step. Each finished episode
is appended to `episodes.jsonl` (`episode_record.py`) and announced as one JSON line on stdout, which the parent
turns into progress; the first `videos` episodes are written as mp4.

An entry point, like `training/train_main.py`: it parses its arguments and sets up logging. It imports no torch,
so it also runs in a simulator's own Python environment (LIBERO's), given `vlaforge` installed there without
dependencies plus numpy, websockets, msgpack and av.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import pathlib
import sys
import time

from vlaforge.evaluation.episode_record import EpisodeRecord, append_record
from vlaforge.evaluation.sim_environment import SimEnvironment, SimTask
from vlaforge.evaluation.sim_envs import sim_env
from vlaforge.training.policy.async_executor import AsyncChunkExecutor, AsyncExecutionConfig, Clock
from vlaforge.training.policy.client import PolicyClient
from vlaforge.training.policy.sync_executor import SyncChunkExecutor

VIDEOS_DIR = "videos"
MODES = ("sync", "async")


@dataclasses.dataclass(frozen=True, kw_only=True)
class EpisodePlan:
    """One episode to run: the task, the episode's index within it and the environment seed."""

    task_index: int
    episode: int
    seed: int
    video: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class WorkerConfig:
    """What the environment process runs (written as JSON by the parent)."""

    server_url: str
    """The policy server (`ws://host:port`)."""
    env: str
    """Registered environment name (`sim_envs.py`)."""
    output: str
    """Directory of `episodes.jsonl` and `videos/`."""
    episodes: tuple[EpisodePlan, ...]
    """The episodes still to run, in order."""
    mode: str = "sync"
    """`sync` or `async` execution."""
    execute_steps: int | None = None
    """T_e; None: half the server's chunk."""
    prefix_steps: int = 1
    """Smallest Δtc (asynchronous mode)."""
    latency_ticks: int = 4
    """Δt_inf of the simulated clock (asynchronous mode): 80 ms at 50 Hz."""
    max_steps: int | None = None
    """Episode step limit; None: the environment's own."""

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"WorkerConfig.mode must be one of {MODES}, got {self.mode!r}")
        object.__setattr__(self, "episodes", tuple(
            e if isinstance(e, EpisodePlan) else EpisodePlan(**e) for e in self.episodes))

    @classmethod
    def from_json(cls, text: str) -> "WorkerConfig":
        return cls(**json.loads(text))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)


def execute_steps_for(config: WorkerConfig, chunk_len: int) -> int:
    return config.execute_steps or max(1, chunk_len // 2)


def run_episode(environment: SimEnvironment, task: SimTask, plan: EpisodePlan, config: WorkerConfig,
                output: pathlib.Path, control_hz: float) -> EpisodeRecord:
    """One episode against the server; returns its record (and writes its video when the plan asks)."""
    started = time.perf_counter()
    with PolicyClient(config.server_url) as client:
        executor = _executor(client, config, control_hz)
        video = _video(output, task, plan, control_hz)
        env_s, video_s, rewards, success, steps = 0.0, 0.0, [], False, 0
        clock = time.perf_counter()
        observation = environment.reset(plan.task_index, plan.episode, plan.seed)
        env_s += time.perf_counter() - clock
        limit = config.max_steps or sim_env(config.env).max_steps
        try:
            while steps < limit:
                action = executor.act(observation)
                clock = time.perf_counter()
                result = environment.step(action)
                env_s += time.perf_counter() - clock
                observation, steps = result.observation, steps + 1
                rewards.append(result.reward)
                success = success or result.success
                if video is not None:
                    clock = time.perf_counter()
                    video.add(environment.frame())
                    video_s += time.perf_counter() - clock
                if result.done:
                    break
        finally:
            if isinstance(executor, AsyncChunkExecutor):
                executor.close()
            video_path = video.close() if video is not None else None
    log = executor.log
    jerk_at_switch, jerk_within = log.jerk(control_hz)
    return EpisodeRecord(
        task=task.name, task_index=plan.task_index, episode=plan.episode, seed=plan.seed, mode=config.mode,
        success=success, total_return=float(sum(rewards)), max_reward=float(max(rewards, default=0.0)),
        length=steps, inferences=len(log.inferences), actions_per_inference=log.actions_per_inference(),
        latencies_ms=[i.latency_s * 1e3 for i in log.inferences],
        server_infer_ms=[i.server_ms.get("infer_ms") for i in log.inferences],
        policy_infer_ms=[i.server_ms.get("policy_infer_ms") for i in log.inferences],
        starved_ticks=log.starved_ticks, late_switches=log.late_switches, jerk_at_switch=jerk_at_switch,
        jerk_within=jerk_within, env_s=env_s, wall_s=time.perf_counter() - started - video_s,
        video=None if video_path is None else str(video_path.relative_to(output)))


def _executor(client: PolicyClient, config: WorkerConfig, control_hz: float):
    chunk_len = int(client.metadata["chunk_len"])
    execute_steps = execute_steps_for(config, chunk_len)
    if config.mode == "sync":
        return SyncChunkExecutor(client.infer, execute_steps=execute_steps)
    return AsyncChunkExecutor(client.infer, AsyncExecutionConfig(
        execute_steps=execute_steps, prefix_steps=config.prefix_steps, control_hz=control_hz,
        clock=Clock.SIMULATED, latency_ticks=config.latency_ticks,
        prefix_key=client.metadata.get("prefix_key", "action_prefix")))


def _video(output: pathlib.Path, task: SimTask, plan: EpisodePlan, control_hz: float):
    if not plan.video:
        return None
    from vlaforge.evaluation.episode_video import EpisodeVideo

    name = f"{task.index:02d}-{task.name}-episode{plan.episode:03d}.mp4"
    return EpisodeVideo(output / VIDEOS_DIR / name, fps=control_hz)


def run(config: WorkerConfig) -> int:
    """Every planned episode in order; one JSON line per episode on stdout."""
    output = pathlib.Path(config.output)
    spec = sim_env(config.env)
    environment = spec.make(max_steps=config.max_steps)
    try:
        tasks = {task.index: task for task in environment.tasks()}
        for plan in config.episodes:
            record = run_episode(environment, tasks[plan.task_index], plan, config, output, spec.control_hz)
            append_record(output, record)
            print(json.dumps({"task": record.task, "episode": record.episode, "success": record.success,
                              "length": record.length}), flush=True)
    finally:
        environment.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vlaforge.evaluation.sim_worker")
    parser.add_argument("--config", required=True, type=pathlib.Path, help="a WorkerConfig as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="sim-worker %(levelname)s %(name)s: %(message)s")
    return run(WorkerConfig.from_json(args.config.read_text()))


if __name__ == "__main__":
    sys.exit(main())

