"""The `ingest` Prefect flow: a robot dataset (DROID, LeRobot, teleop MCAP or HDF5) into robot shards. Thin wiring:
the options become a `Job` (`pipelines/ingest_recipe.py`), run by the shared job tasks (`job_tasks.py`)."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from vlaforge.flows.job_tasks import run_job_tasks
from vlaforge.pipelines.ingest_recipe import IngestOptions, build_ingest_job


@flow(name="ingest")
def ingest(
    source: str,
    input_path: str,
    output: str,
    options: dict[str, Any] | None = None,
    source_options: dict[str, Any] | None = None,
    runner: str = "ray",
    ray_address: str | None = None,
    workers: int | None = None,
    units_per_task: int = 64,
    progress: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Ingest one dataset into WebDataset shards, a manifest, statistics and a quarantine table.

    Each `run-units` task covers `units_per_task` units (coarse and idempotent: a retry or a rerun skips what is
    done). Returns the run's summary (see `IngestReport`).
    """
    job = build_ingest_job(source, input_path, output, IngestOptions.from_dict(options or {}), source_options)
    report = run_job_tasks(job, runner=runner, ray_address=ray_address, workers=workers,
                           units_per_task=units_per_task, progress=progress, overwrite=overwrite)
    get_run_logger().info("ingest of %s finished: %s", input_path, report)
    return report
