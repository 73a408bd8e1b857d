"""The `evaluate` Prefect flow: one evaluation of a checkpoint, as a task. Thin wiring over `vlaforge.evaluation`.

`kind` picks the evaluation and `options` are the fields of its config, JSON-able (paths as strings), as the CLI,
a deployment or another flow passes them:
- `sim`: `SimEvalConfig` (closed-loop episodes against the policy server; `sim_evaluation.py`);
- `offline`: `OfflineEvalConfig` (chunks against held-out episodes; `offline_evaluation.py`);
- `vl`: `VlEvalConfig` (VL benchmarks, VLMs side by side; `vl_retention.py`).
The flow returns the results document, which each evaluation also writes under its output directory.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from vlaforge.datasets.configurable import lookup

KINDS = ("sim", "offline", "vl")


def _paths(options: dict[str, Any], *names: str) -> dict[str, Any]:
    return {k: (pathlib.Path(v) if k in names and v is not None else v) for k, v in options.items()}


@task(name="sim-episodes", cache_policy=NO_CACHE)
def sim_episodes(options: dict[str, Any]) -> dict[str, Any]:
    from vlaforge.evaluation.sim_evaluation import SimEvalConfig, evaluate_in_sim

    logger = get_run_logger()
    config = SimEvalConfig(**_paths(options, "output", "observation_map"))
    return evaluate_in_sim(config, progress=lambda line: logger.info("episode %s", line))


@task(name="offline-metrics", cache_policy=NO_CACHE)
def offline_metrics(options: dict[str, Any]) -> dict[str, Any]:
    from vlaforge.evaluation.offline_evaluation import OfflineEvalConfig, evaluate_offline

    return evaluate_offline(OfflineEvalConfig(**_paths(options, "policy", "output")))


@task(name="vl-benchmarks", cache_policy=NO_CACHE)
def vl_benchmarks(options: dict[str, Any]) -> dict[str, Any]:
    from vlaforge.evaluation.vl_retention import VlEvalConfig, evaluate_vl

    logger = get_run_logger()
    return evaluate_vl(VlEvalConfig(**_paths(options, "output")),
                       progress=lambda vlm, benchmark, score: logger.info("%s on %s: accuracy %.3f", vlm, benchmark,
                                                                          score["accuracy"]))


TASKS: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
    "sim": sim_episodes,
    "offline": offline_metrics,
    "vl": vl_benchmarks,
}


@flow(name="evaluate")
def evaluate(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    """Run the evaluation `kind` (sim, offline, vl) with `options` (its config's fields); returns its results."""
    run = lookup(TASKS, kind, what="evaluation")
    results = run(options)
    get_run_logger().info("evaluate %s finished", kind)
    return results
