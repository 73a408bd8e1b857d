"""`results.json` of a simulated evaluation: per task and overall, from the episodes' records.

For each group of episodes (each task, and all of them):
- success rate with a 95% Wilson score interval (it stays inside [0, 1] and is honest at 0 or 1 successes, where
  the normal approximation collapses to a zero-width interval);
- mean return, mean episode length;
- round-trip latency p50/p95 as the client measured it, and the policy's own inference p50/p95;
- actions executed per inference, starved ticks (asynchronous mode), and the chunk-boundary jerk beside the jerk
  inside chunks;
- where the time went: the simulator, the policy, and the rest of each round trip (transport: serialization,
  the socket, the server's observation mapping), with environment steps per second of wall time.

Synchronous and asynchronous runs of one seed use the same environment seeds, so their files compare directly.
"""

from __future__ import annotations

import json
import math
import pathlib
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from vlaforge.evaluation.episode_record import EpisodeRecord

RESULTS_FILE = "results.json"
Z_95 = 1.959963984540054


def wilson_interval(successes: int, trials: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion ((0, 1) with no trials)."""
    if trials == 0:
        return 0.0, 1.0
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def _percentile(values: Sequence[float | None], q: float) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.percentile(present, q)) if present else None


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(statistics.fmean(present)) if present else None


def _own_time(server_ms: float | None, policy_ms: float | None) -> float | None:
    """The part of a round trip that is the policy's: its own time where the server reports it (ours), else the
    server's whole inference time (openpi's servers). The rest of the round trip is transport."""
    return policy_ms if policy_ms is not None else server_ms


def summarize(records: Sequence[EpisodeRecord]) -> dict[str, Any]:
    """The metrics of one group of episodes (see the module docstring)."""
    successes = sum(r.success for r in records)
    low, high = wilson_interval(successes, len(records))
    latencies = [v for r in records for v in r.latencies_ms]
    server = [v for r in records for v in r.server_infer_ms]
    policy = [v for r in records for v in r.policy_infer_ms]
    steps = sum(r.length for r in records)
    wall = sum(r.wall_s for r in records)
    own = [(rt, _own_time(s, p)) for rt, s, p in zip(latencies, server, policy)]
    policy_ms = sum(o for _, o in own if o is not None)
    transport_ms = sum(rt - o for rt, o in own if o is not None)
    return {
        "episodes": len(records),
        "successes": successes,
        "success_rate": successes / len(records) if records else None,
        "success_ci95": [low, high],
        "mean_return": _mean([r.total_return for r in records]),
        "mean_length": _mean([r.length for r in records]),
        "latency_ms": {"p50": _percentile(latencies, 50), "p95": _percentile(latencies, 95)},
        "policy_infer_ms": {"p50": _percentile(policy, 50), "p95": _percentile(policy, 95)},
        "actions_per_inference": steps / max(sum(r.inferences for r in records), 1),
        "starved_ticks": sum(r.starved_ticks for r in records),
        "late_switches": sum(r.late_switches for r in records),
        "jerk_at_switch": _mean([r.jerk_at_switch for r in records]),
        "jerk_within_chunk": _mean([r.jerk_within for r in records]),
        "time_s": {"wall": wall, "env": sum(r.env_s for r in records),
                   "policy": policy_ms / 1e3, "transport": transport_ms / 1e3},
        "steps": steps,
        "steps_per_s": steps / wall if wall > 0 else None,
    }


def build_results(records: Sequence[EpisodeRecord], settings: Mapping[str, Any]) -> dict[str, Any]:
    """results.json: the run's settings, each task's metrics, the overall metrics and every episode's outcome."""
    by_task: dict[str, list[EpisodeRecord]] = {}
    for record in sorted(records, key=lambda r: (r.task_index, r.episode)):
        by_task.setdefault(record.task, []).append(record)
    return {
        "settings": dict(settings),
        "overall": summarize(records),
        "tasks": {task: summarize(group) for task, group in by_task.items()},
        "episodes": [{"task": r.task, "episode": r.episode, "seed": r.seed, "success": r.success,
                      "return": r.total_return, "length": r.length, "video": r.video}
                     for group in by_task.values() for r in group],
    }


def write_results(directory: pathlib.Path, results: Mapping[str, Any]) -> pathlib.Path:
    path = directory / RESULTS_FILE
    path.write_text(json.dumps(results, indent=1))
    return path
