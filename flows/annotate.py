"""The `annotate` Prefect flow: ground robot shards with several detectors, keep what they agree on, write VL
grounding shards, the audit tables and the auditor's report. Thin wiring: the recipe becomes one `Job` per robot
dataset (`annotators/annotate_recipe.py`), run by the shared job tasks.

Layout: `<output>/<robot dataset name>/` holds each VL dataset (shards, manifest.parquet, summary.json,
audit.parquet, audit_frames.parquet, quarantine.parquet, annotate_recipe.json); `<output>/report/index.html` is the
report over all of them. Idempotent and resumable like ingest: a rerun skips finished units.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from vlaforge.annotators.annotate_recipe import (
    RECIPE_NAME,
    annotate_job,
    decisions_digest,
    default_recipe,
    detections_dataset,
    detections_job,
    recipe_digest,
    uses_hosted,
)
from vlaforge.flows.job_tasks import run_job_tasks
from vlaforge.flows.object_arguments import local_input, local_output
from vlaforge.pipelines.atomic_files import atomic_write_bytes

TOKEN_ENV = "DDS_API_TOKEN"
"""Where the flow entry point finds the hosted detector's token (unless the recipe names a Prefect Secret block)."""
REPORT_DIR = "report"


def local_root(url: str) -> pathlib.Path:
    """A robot dataset directory from a path or file:// URL (the robot shard source reads local directories)."""
    if url.startswith("file://"):
        url = url[len("file://"):]
    elif "://" in url:
        raise ValueError(f"--shards {url}: robot shards are read from a local directory (or file:// URL); copy or "
                         "mount the dataset locally first")
    root = pathlib.Path(url)
    if not (root / "manifest.parquet").exists():
        raise ValueError(f"--shards {url}: no manifest.parquet there; point at a directory written by `vlaforge ingest`")
    return root


def check_resumable(target: pathlib.Path, recipe: dict[str, Any]) -> None:
    """Refuse to resume an output whose labels were decided by another recipe (runtime options such as the device
    or the batch size may change between runs: they do not change what is decided)."""
    path = target / RECIPE_NAME
    if path.exists() and json.loads(path.read_text()).get("decisions_hash") != decisions_digest(recipe):
        raise ValueError(f"{target} was annotated with another recipe ({path}); resuming it with this one would mix "
                         "labels decided two ways: use a new --output, or the earlier options")


def record_recipe(target: pathlib.Path, recipe: dict[str, Any], root: pathlib.Path) -> None:
    """Write `annotate_recipe.json` beside the dataset (the run's `options.json` has refused another recipe)."""
    record = {"recipe": recipe, "recipe_hash": recipe_digest(recipe), "decisions_hash": decisions_digest(recipe),
              "shards": str(root)}
    atomic_write_bytes(target / RECIPE_NAME, json.dumps(record, indent=1, sort_keys=True).encode())


@task(name="build-report", cache_policy=NO_CACHE)
def build_report_task(audits: list[str], output: str) -> dict[str, Any]:
    from vlaforge.annotators.report_page import build_report

    return build_report([pathlib.Path(a) for a in audits], pathlib.Path(output)).as_dict()


@flow(name="annotate")
def annotate(
    shards: list[str],
    output: str,
    recipe: dict[str, Any] | None = None,
    runner: str = "ray",
    ray_address: str | None = None,
    workers: int | None = None,
    num_gpus_per_worker: float = 0,
    stage_pools: dict[str, dict[str, float]] | None = None,
    units_per_task: int = 64,
    progress: bool = False,
    report: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Ground each robot dataset in `shards`; returns {"datasets": {name: VL summary}, "report": path or None}."""
    recipe = recipe or default_recipe()
    token = os.environ.get(TOKEN_ENV) if uses_hosted(recipe) else None
    output, mirror = local_output(output, overwrite=overwrite)  # s3:// given to a deployment: work in its mirror
    try:
        return _annotate([local_input(url) for url in shards], output, recipe, token, runner=runner,
                         ray_address=ray_address, workers=workers, num_gpus_per_worker=num_gpus_per_worker,
                         stage_pools=stage_pools, units_per_task=units_per_task, progress=progress, report=report,
                         overwrite=overwrite)
    finally:
        if mirror is not None:
            mirror.push()  # what the run committed reaches the bucket, finished or not


def _annotate(shards: list[str], output: str, recipe: dict[str, Any], token: str | None, *, runner: str,
              ray_address: str | None, workers: int | None, num_gpus_per_worker: float,
              stage_pools: dict[str, dict[str, float]] | None, units_per_task: int, progress: bool, report: bool,
              overwrite: bool) -> dict[str, Any]:
    roots = [local_root(url) for url in shards]
    names = [root.name for root in roots]
    if len(set(names)) != len(names):
        raise ValueError(f"--shards: datasets must have distinct directory names, got {names}")
    summaries, outputs = {}, []
    for root in roots:
        target = pathlib.Path(output) / root.name
        job = annotate_job(recipe, str(root), str(target), hosted_token=token)
        if not overwrite:
            check_resumable(target, recipe)
        summaries[root.name] = run_job_tasks(job, runner=runner, ray_address=ray_address, workers=workers,
                                                num_gpus_per_worker=num_gpus_per_worker, stage_pools=stage_pools,
                                                units_per_task=units_per_task, progress=progress,
                                                overwrite=overwrite)
        record_recipe(target, recipe, root)  # after the run: an --overwrite clears the output when it starts
        outputs.append(str(target))
    page = build_report_task(outputs, str(pathlib.Path(output) / REPORT_DIR)) if report else None
    get_run_logger().info("annotate finished: %s", {name: s.get("samples") for name, s in summaries.items()})
    return {"datasets": summaries, "report": page, "recipe_hash": recipe_digest(recipe)}


@flow(name="annotate-detections")
def annotate_detections(
    detections: str,
    images: str,
    output: str,
    recipe: dict[str, Any],
    runner: str = "ray",
    ray_address: str | None = None,
    workers: int | None = None,
    progress: bool = False,
    report: bool = True,
) -> dict[str, Any]:
    """Decide over a table of precomputed detections: `<output>/<dataset>/` (the VL dataset and its audit tables,
    like an annotate run's) and `<output>/report/`."""
    name = detections_dataset(recipe, detections, images)
    target = pathlib.Path(output) / name
    job = detections_job(recipe, detections, images, str(target))
    record_recipe(target, recipe, pathlib.Path(detections))
    summary = run_job_tasks(job, runner=runner, ray_address=ray_address, workers=workers, progress=progress)
    page = build_report_task([str(target)], str(pathlib.Path(output) / REPORT_DIR)) if report else None
    get_run_logger().info("annotate-detections finished: %s samples", summary.get("samples"))
    return {"dataset": name, "summary": summary, "report": page, "recipe_hash": recipe_digest(recipe)}
