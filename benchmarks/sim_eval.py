"""Closed-loop simulation throughput: environment steps per second of `vlaforge eval sim` with the tiny policy, and
where the time goes (the simulator, the policy, the transport), against the bare simulator stepping on its own.

    .venv/bin/python benchmarks/sim_eval.py [--episodes 2] [--steps 40] [--env aloha-transfer-cube] [--quick]

Rows, side by side on one machine:
- bare env: gym-aloha stepped with constant actions in its own process, nothing else (the baseline: what the
  simulator alone allows, rendering included);
- sync and async: the full loop through the policy server (`evaluate_in_sim`), the same seeds and steps.
The shares are of wall time; in async mode the policy runs while the simulator steps, so they overlap.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile

from vlaforge.evaluation.sim_evaluation import SimEvalConfig, evaluate_in_sim
from vlaforge.flows.sample_data.tiny_policy import TinyPolicySpec, write_tiny_policy

_BARE = """
import json, sys, time
import numpy as np
from vlaforge.evaluation.sim_envs import sim_env
spec = sim_env(sys.argv[1]); steps = int(sys.argv[2])
environment = spec.make(max_steps=steps + 1)
environment.reset(0, 0, 0)
action = np.zeros(14, np.float32)
started = time.perf_counter()
for _ in range(steps):
    environment.step(action)
print(json.dumps({"steps": steps, "seconds": time.perf_counter() - started}))
"""


def bare_env(env: str, steps: int) -> float:
    """Steps per second of the simulator alone, in a process of its own (as the evaluation runs it)."""
    environment = {**os.environ, "MUJOCO_GL": "egl", "PYOPENGL_PLATFORM": "egl"}
    out = subprocess.run([sys.executable, "-c", _BARE, env, str(steps)], env=environment, capture_output=True,
                         text=True, check=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    return result["steps"] / result["seconds"]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="aloha-transfer-cube")
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--steps", type=int, default=40, help="steps per episode")
    parser.add_argument("--quick", action="store_true", help="1 episode of 16 steps")
    args = parser.parse_args()
    episodes, steps = (1, 16) if args.quick else (args.episodes, args.steps)
    root = pathlib.Path(tempfile.mkdtemp())
    observation_map = {"embodiment": "bimanual_2x6dof", "cameras": {"images/top": "exterior_1"},
                       "default_prompt": "transfer the cube", "image_size": [224, 224]}
    policy = write_tiny_policy(root / "policy", TinyPolicySpec(observation_map=observation_map))
    baseline = bare_env(args.env, episodes * steps)
    rows = [["bare env (baseline)", f"{baseline:.2f}", "1.00x", "-", "-", "-", "-"]]
    for mode in ("sync", "async"):
        results = evaluate_in_sim(SimEvalConfig(policy=str(policy), env=args.env, episodes=episodes, max_steps=steps,
                                                mode=mode, videos=0, output=root / mode))
        overall = results["overall"]
        wall, shares = overall["time_s"]["wall"], overall["time_s"]
        rate = overall["steps_per_s"]
        rows.append([f"{mode} loop", f"{rate:.2f}", f"{rate / baseline:.2f}x",
                     *(f"{shares[k] / wall:.0%}" for k in ("env", "policy", "transport")),
                     f"{overall['latency_ms']['p50']:.1f}"])
    header = ["run", "env steps/s", "vs bare env", "env share", "policy share", "transport share",
              "round trip p50 ms"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(f"{args.env}: {episodes} episode(s) x {steps} steps, tiny policy (224x224 frames), CPU")
    for line in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
