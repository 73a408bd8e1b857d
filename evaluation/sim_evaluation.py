"""Closed-loop simulated evaluation: a policy server, an environment process, and the results of their episodes.

    results = evaluate_in_sim(SimEvalConfig(policy="runs/post/policy", env="aloha-transfer-cube", episodes=50,
                                            mode="async", output=pathlib.Path("eval/aloha-async")))

- The policy is a URL (`ws://host:port`, a server already running, ours or openpi's) or a policy directory, for
  which a `PolicyServer` starts on a free port of 127.0.0.1 for the run.
- The environment runs in its own process (`sim_worker.py`), started with this Python or `env_python` (a
  simulator's own environment, LIBERO's), and reaches the policy only through the websocket.
- Episodes are planned here: each task's episodes 0..N-1, environment seed `seed + 1000 * task + episode`, the same
  for both execution modes. Episodes already in `episodes.jsonl` (a rerun after a crash) are not run again; a run
  with other settings in the same directory is refused.
- The output: `episodes.jsonl`, `results.json` (`sim_results.py`), `summary.html` (`summary_page.py`), `videos/`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from vlaforge.evaluation.episode_record import EPISODES_FILE, read_records
from vlaforge.evaluation.sim_envs import SimEnvSpec, sim_env
from vlaforge.evaluation.sim_results import build_results, write_results
from vlaforge.evaluation.sim_worker import MODES, EpisodePlan, WorkerConfig
from vlaforge.evaluation.summary_page import write_summary

log = logging.getLogger(__name__)

SETTINGS_FILE = "settings.json"
WORKER_CONFIG = "worker_config.json"
WORKER_LOG = "worker.log"
REPORT_LATENCY_S = 0.08
"""The report's inference latency (RTX 4090): the simulated Δt_inf defaults to it at the environment's rate."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class SimEvalConfig:
    """One closed-loop evaluation run (see the module docstring)."""

    policy: str
    """A policy directory, or the URL of a running policy server (`ws://host:port`)."""
    env: str
    """Registered environment (`sim_envs.SIM_ENVS`)."""
    output: pathlib.Path
    """Where episodes.jsonl, results.json, summary.html and videos/ go."""
    episodes: int = 50
    """Episodes per task."""
    mode: str = "sync"
    """`sync`: infer, execute T_e, infer again; `async`: the report's asynchronous execution."""
    seed: int = 0
    """Environment seeds derive from it (the same in both modes); the server's noise seed too."""
    videos: int = 4
    """Episodes recorded as mp4 (the first ones)."""
    tasks: tuple[int, ...] | None = None
    """Task indices to run (LIBERO suites have 10); None: every task."""
    max_steps: int | None = None
    """Episode step limit; None: the benchmark's."""
    execute_steps: int | None = None
    """T_e; None: half the policy's chunk."""
    prefix_steps: int = 1
    """Smallest Δtc in asynchronous mode (raised to Δt_inf)."""
    latency_ticks: int | None = None
    """Simulated Δt_inf in control ticks; None: the report's 80 ms at the environment's control rate."""
    device: str = "cpu"
    """Device of a policy directory's model."""
    dtype: str | None = None
    """Model dtype (`bfloat16`, `float32`); None: as saved."""
    observation_map: pathlib.Path | None = None
    """Server observation map; None: the policy directory's `observation_map.json`, else the environment's."""
    image_size: tuple[int, int] | None = None
    """Frames are resized to this (H, W) for the policy; None: the observation map's."""
    env_python: str | None = None
    """Python of the environment process (a simulator's own venv); None: this one."""
    mujoco_gl: str = "egl"
    """MuJoCo's OpenGL backend in the environment process (egl: offscreen, no display)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "output", pathlib.Path(self.output))
        if self.mode not in MODES:
            raise ValueError(f"SimEvalConfig.mode must be one of {MODES}, got {self.mode!r}")
        if self.episodes < 1 or self.videos < 0:
            raise ValueError(f"SimEvalConfig needs episodes >= 1 and videos >= 0, got {self.episodes}, {self.videos}")
        sim_env(self.env)  # an unknown name fails here, with the list

    @property
    def spec(self) -> SimEnvSpec:
        return sim_env(self.env)

    def simulated_latency_ticks(self) -> int:
        import math

        if self.latency_ticks is not None:
            return self.latency_ticks
        return math.ceil(REPORT_LATENCY_S * self.spec.control_hz - 1e-9)

    def settings(self) -> dict[str, Any]:
        """What makes two runs the same run (saved; a rerun must match it)."""
        return {"policy": self.policy, "env": self.env, "episodes": self.episodes, "mode": self.mode,
                "seed": self.seed, "tasks": list(self.tasks) if self.tasks is not None else None,
                "max_steps": self.max_steps, "execute_steps": self.execute_steps, "prefix_steps": self.prefix_steps,
                "latency_ticks": self.simulated_latency_ticks(), "videos": self.videos}


ProgressFn = Callable[[dict[str, Any]], None]


def evaluate_in_sim(config: SimEvalConfig, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Run (or finish) the evaluation and write its results; returns the results.json document."""
    config.output.mkdir(parents=True, exist_ok=True)
    _check_same_run(config)
    plans = _remaining(config)
    if plans:
        server = None if config.policy.startswith(("ws://", "wss://")) else start_policy_server(config)
        try:
            url = config.policy if server is None else server.url
            _run_worker(config, url, plans, progress or (lambda line: None))
        finally:
            if server is not None:
                server.stop()
    results = build_results(list(read_records(config.output)), config.settings())
    write_results(config.output, results)
    write_summary(config.output, results)
    return results


_RENDER_PROBE = "import mujoco; context = mujoco.GLContext(64, 64); context.make_current(); context.free()"


def offscreen_rendering_problem(mujoco_gl: str = "egl", python: str | None = None) -> str | None:
    """Why MuJoCo cannot render offscreen with `mujoco_gl` in a fresh process, or None when it can."""
    probe = subprocess.run([python or sys.executable, "-c", _RENDER_PROBE], capture_output=True, text=True,
                           env={**os.environ, "MUJOCO_GL": mujoco_gl, "PYOPENGL_PLATFORM": mujoco_gl}, timeout=120)
    if probe.returncode == 0:
        return None
    last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
    return (f"MuJoCo cannot render offscreen with MUJOCO_GL={mujoco_gl} ({last}); on Debian install libegl1 and "
            "libgl1-mesa-dri (Mesa's EGL)")


def start_policy_server(config: SimEvalConfig):
    """Load the policy directory and serve it on a free port of 127.0.0.1; returns the running `PolicyServer`."""
    import torch

    from vlaforge.training.policy.policy import Policy
    from vlaforge.training.policy.served_policy import ServedPolicy
    from vlaforge.training.policy.server import PolicyServer

    dtype = getattr(torch, config.dtype) if config.dtype else None
    policy = Policy.from_pretrained(config.policy, dtype=dtype, device=config.device)
    served = ServedPolicy(policy, resolve_observation_map(config), seed=config.seed)
    server = PolicyServer(served, host="127.0.0.1", port=0)
    server.start()
    return server


def resolve_observation_map(config: SimEvalConfig):
    """The map given, else the policy directory's, else the environment's; `image_size` overrides its size."""
    from vlaforge.training.policy.observation_map import MAP_FILE, ObservationMap

    own = pathlib.Path(config.policy) / MAP_FILE
    if config.observation_map is not None:
        mapping = ObservationMap.load(config.observation_map)
    elif own.is_file():
        mapping = ObservationMap.load(own)
    else:
        mapping = ObservationMap.from_dict(config.spec.observation_map)
    return dataclasses.replace(mapping, image_size=config.image_size) if config.image_size else mapping


def _remaining(config: SimEvalConfig) -> list[EpisodePlan]:
    """The planned episodes not yet in `episodes.jsonl`; the first `videos` of the plan are recorded."""
    tasks = config.tasks if config.tasks is not None else tuple(range(config.spec.task_count))
    done = {(r.task_index, r.episode) for r in read_records(config.output)}
    plans, order = [], 0
    for task in tasks:
        for episode in range(config.episodes):
            video = order < config.videos
            order += 1
            if (task, episode) not in done:
                plans.append(EpisodePlan(task_index=task, episode=episode,
                                         seed=config.seed + 1000 * task + episode, video=video))
    return plans


def _check_same_run(config: SimEvalConfig) -> None:
    path = config.output / SETTINGS_FILE
    settings = config.settings()
    if path.exists() and (config.output / EPISODES_FILE).exists():
        previous = json.loads(path.read_text())
        if previous != settings:
            changed = sorted(k for k in settings if previous.get(k) != settings[k])
            raise ValueError(f"{config.output} holds an evaluation with other settings ({', '.join(changed)} "
                             f"differ); use another --output, or delete {config.output / EPISODES_FILE} to start over")
    path.write_text(json.dumps(settings, indent=1))


def _run_worker(config: SimEvalConfig, url: str, plans: list[EpisodePlan], progress: ProgressFn) -> None:
    worker = WorkerConfig(server_url=url, env=config.env, output=str(config.output), episodes=tuple(plans),
                          mode=config.mode, execute_steps=config.execute_steps, prefix_steps=config.prefix_steps,
                          latency_ticks=config.simulated_latency_ticks(), max_steps=config.max_steps)
    config_file = config.output / WORKER_CONFIG
    config_file.write_text(worker.to_json())
    command = [config.env_python or sys.executable, "-m", "vlaforge.evaluation.sim_worker", "--config",
               str(config_file)]
    environment = {**os.environ, "MUJOCO_GL": config.mujoco_gl, "PYOPENGL_PLATFORM": config.mujoco_gl}
    # stderr goes to a file, not a pipe: a chatty simulator must never block on a pipe nobody reads yet.
    with (config.output / WORKER_LOG).open("w") as errors, subprocess.Popen(
            command, env=environment, stdout=subprocess.PIPE, stderr=errors, text=True) as process:
        for line in process.stdout:
            try:
                progress(json.loads(line))
            except json.JSONDecodeError:
                log.info("environment process: %s", line.rstrip())
    if process.returncode != 0:
        tail = "\n".join((config.output / WORKER_LOG).read_text().strip().splitlines()[-25:])
        raise RuntimeError(f"the environment process for {config.env} failed (exit code {process.returncode}); "
                           f"episodes finished so far are kept in {config.output / EPISODES_FILE}. The last lines "
                           f"of {config.output / WORKER_LOG}:\n{tail}")
