"""The `export-lerobot` Prefect flow: one job (`pipelines/lerobot_export.py`), run by the shared job tasks."""

from __future__ import annotations

from typing import Any

from prefect import flow

from vlaforge.flows.job_tasks import run_job_tasks
from vlaforge.pipelines.lerobot_export import export_job


@flow(name="export-lerobot")
def export_lerobot(shards: str, output: str, codec: str = "h264", runner: str = "ray", ray_address: str | None = None,
                   workers: int | None = None, progress: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Write the robot dataset `shards` as the LeRobot v3.0 dataset `output`; returns the export's summary."""
    return run_job_tasks(export_job(shards, output, codec=codec), runner=runner, ray_address=ray_address,
                         workers=workers, progress=progress, overwrite=overwrite)
