"""Prefect tasks that run a `VlJob` (plan units, run them in groups on Ray Data, finalize), for the VL flows.

A VL flow (`annotate`, `relabel`) builds its `VlJob` and calls `run_vl_job_tasks` inside its `@flow`: the wiring,
retries and progress are the same as ingest's.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from vlaforge.datasets.source import WorkUnit
from vlaforge.flows.ingest import progress_bar, retry_on_io_error
from vlaforge.pipelines import vl_job
from vlaforge.pipelines.runners import make_runner
from vlaforge.pipelines.vl_job import VlJob, VlUnitSummary


@task(name="plan-vl-units", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2,
      retry_condition_fn=retry_on_io_error)
def plan_vl_units(job: VlJob) -> list[dict[str, Any]]:
    return [unit.as_dict() for unit in vl_job.plan_vl_units(job)]


@task(name="run-vl-units", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5,
      retry_condition_fn=retry_on_io_error)
def run_vl_units(job: VlJob, units: list[dict[str, Any]], runner: str, ray_address: str | None,
                 workers: int | None, num_gpus_per_worker: float, progress: bool) -> list[dict[str, Any]]:
    logger = get_run_logger()
    bar = progress_bar(len(units)) if progress else None

    def on_done(summary: VlUnitSummary) -> None:
        if bar is not None:
            bar.update(1)
        logger.info("unit %d done: %d samples%s", summary.unit, summary.samples_written,
                    " (finished earlier)" if summary.resumed else "")

    chosen = make_runner(runner, address=ray_address, num_workers=workers, num_gpus_per_worker=num_gpus_per_worker)
    summaries = vl_job.run_vl_units(job, [WorkUnit.from_dict(u) for u in units], chosen, on_done)
    if bar is not None:
        bar.close()
    return [s.as_dict() for s in summaries]


@task(name="finalize-vl", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2,
      retry_condition_fn=retry_on_io_error)
def finalize_vl(job: VlJob, units: list[dict[str, Any]]) -> dict[str, Any]:
    return vl_job.finalize_vl_job(job, [WorkUnit.from_dict(u) for u in units])


def run_vl_job_tasks(job: VlJob, *, runner: str = "ray", ray_address: str | None = None, workers: int | None = None,
                     num_gpus_per_worker: float = 0, units_per_task: int = 64, progress: bool = False) -> dict[str, Any]:
    """Plan, run (in tasks of `units_per_task` units) and finalize; call inside a `@flow`. Returns the summary."""
    units = plan_vl_units(job)
    for start in range(0, len(units), max(units_per_task, 1)):
        run_vl_units(job, units[start : start + units_per_task], runner, ray_address, workers,
                     num_gpus_per_worker, progress)
    return finalize_vl(job, units)
