"""The Prefect tasks that run a `Job` (`pipelines/job.py`): plan its units, run them in groups on Ray Data, finalize.

Every flow that writes a dataset (`ingest`, `ingest-vl`, `relabel`, `annotate`) builds its `Job` and calls
`run_job_tasks` inside its `@flow`: one wiring, one retry policy, one progress display for all of them.
"""

from __future__ import annotations

import dataclasses
import shlex
import sys
from typing import Any

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from vlaforge.datasets.source import WorkUnit
from vlaforge.flows.failures import NOT_TRANSIENT
from vlaforge.flows.object_arguments import local_output
from vlaforge.pipelines import job as jobs
from vlaforge.pipelines.job import Job, UnitSummary
from vlaforge.pipelines.object_mirror import is_object_url, mirror_of
from vlaforge.pipelines.runners import make_runner


def retry_on_io_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a task only when it failed on I/O (a flaky disk or network mount, a VLM server that went away), not on
    bad data or a bug, nor on what a retry cannot fix (a read-only or full disk, a denied permission)."""
    try:
        state.result()
    except OSError as error:
        return error.errno not in NOT_TRANSIENT
    except Exception:  # noqa: BLE001 - any other failure is final
        return False
    return False


def progress_bar(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc="units", unit="unit")


@task(name="plan-units", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, retry_condition_fn=retry_on_io_error)
def plan_units(job: Job) -> list[dict[str, Any]]:
    return [unit.as_dict() for unit in jobs.plan_units(job)]


@task(name="run-units", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5, retry_condition_fn=retry_on_io_error)
def run_units(job: Job, units: list[dict[str, Any]], runner: str, ray_address: str | None, workers: int | None,
              num_gpus_per_worker: float, progress: bool,
              stage_pools: dict[str, dict[str, float]] | None = None) -> list[dict[str, Any]]:
    logger = get_run_logger()
    bar = progress_bar(len(units)) if progress else None

    def on_done(summary: UnitSummary) -> None:
        if bar is not None:
            bar.update(1)
        logger.info("unit %d done: %d samples%s", summary.unit, summary.samples_written,
                    " (finished earlier)" if summary.resumed else "")

    chosen = make_runner(runner, address=ray_address, num_workers=workers, num_gpus_per_worker=num_gpus_per_worker,
                         stage_pools=stage_pools)
    summaries = jobs.run_units(job, [WorkUnit.from_dict(u) for u in units], chosen, on_done)
    if bar is not None:
        bar.close()
    return [s.as_dict() for s in summaries]


@task(name="finalize", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, retry_condition_fn=retry_on_io_error)
def finalize(job: Job, units: list[dict[str, Any]], runner: str, ray_address: str | None, workers: int | None,
             units_resumed: int) -> dict[str, Any]:
    chosen = make_runner(runner, address=ray_address, num_workers=workers)
    return jobs.finalize_job(job, [WorkUnit.from_dict(u) for u in units], chosen, units_resumed)


def run_job_tasks(job: Job, *, runner: str = "ray", ray_address: str | None = None, workers: int | None = None,
                  num_gpus_per_worker: float = 0, units_per_task: int = 64, progress: bool = False,
                  overwrite: bool = False, stage_pools: dict[str, dict[str, float]] | None = None) -> dict[str, Any]:
    """Claim the output (`pipelines/job.py`: `claimed`: one run at a time, the same options as before unless
    `overwrite`), then `run_claimed_job_tasks`; call inside a `@flow`. Returns the dataset's summary."""
    if is_object_url(job.output):  # a flow run given s3:// (a deployment): the job works in the output's mirror
        job = dataclasses.replace(job, output=local_output(job.output, overwrite=overwrite)[0])
    with jobs.claimed(job, overwrite=overwrite, command=command_line()) as owned:
        return run_claimed_job_tasks(owned, runner=runner, ray_address=ray_address, workers=workers,
                                     num_gpus_per_worker=num_gpus_per_worker, units_per_task=units_per_task,
                                     progress=progress, stage_pools=stage_pools)


def run_claimed_job_tasks(job: Job, *, runner: str = "ray", ray_address: str | None = None,
                          workers: int | None = None, num_gpus_per_worker: float = 0, units_per_task: int = 64,
                          progress: bool = False, stage_pools: dict[str, dict[str, float]] | None = None
                          ) -> dict[str, Any]:
    """Plan, run (a `run-units` task per `units_per_task` units: coarse and idempotent, so a retry or a rerun skips
    what is done) and finalize a job that owns its output (`jobs.claimed`). On Ray, the job's model stages run in
    their own actor pools (`stage_pools`: name -> `StagePlacement` fields; `num_gpus_per_worker` is each pool actor's
    default GPUs). An output mirrored from object storage (`pipelines/object_mirror.py`) is pushed after each group
    of units, so what a crash leaves committed is in the bucket too."""
    mirror = mirror_of(job.output)
    units = plan_units(job)
    summaries: list[dict[str, Any]] = []
    for start in range(0, len(units), max(units_per_task, 1)):
        summaries += run_units(job, units[start : start + units_per_task], runner, ray_address, workers,
                               num_gpus_per_worker, progress, stage_pools)
        if mirror is not None:
            mirror.push()
    resumed = sum(bool(s["resumed"]) for s in summaries)
    report = finalize(job, units, runner, ray_address, workers, resumed)
    if mirror is not None:
        mirror.push()
    return report


def command_line() -> str:
    """What was run, as the output's lock records it for a refused second run to print."""
    return shlex.join(sys.argv)
