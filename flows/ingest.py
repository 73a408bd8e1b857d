"""The `ingest` Prefect flow: plan units, run them in groups on Ray Data, then finalize. Thin wiring only."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from vlaforge.datasets.source import WorkUnit
from vlaforge.pipelines import ingest_run
from vlaforge.pipelines.ingest_job import IngestJob, UnitSummary
from vlaforge.pipelines.ingest_recipe import IngestOptions, build_ingest_job
from vlaforge.pipelines.runners import make_runner


def retry_on_io_error(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a task only when it failed on I/O (a flaky disk or network mount), not on bad data or a bug."""
    try:
        state.result()
    except OSError:
        return True
    except Exception:  # noqa: BLE001 - any other failure is final
        return False
    return False


@task(name="plan-units", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, retry_condition_fn=retry_on_io_error)
def plan_units(job: IngestJob) -> list[dict[str, Any]]:
    return [unit.as_dict() for unit in ingest_run.plan_units(job)]


@task(name="run-units", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5, retry_condition_fn=retry_on_io_error)
def run_units(job: IngestJob, units: list[dict[str, Any]], runner: str, ray_address: str | None,
              workers: int | None, progress: bool) -> list[dict[str, Any]]:
    logger = get_run_logger()
    bar = progress_bar(len(units)) if progress else None

    def on_done(summary: UnitSummary) -> None:
        if bar is not None:
            bar.update(1)
        logger.info("unit %d done: %d steps%s", summary.unit, summary.steps_written,
                    " (finished earlier)" if summary.resumed else "")

    summaries = ingest_run.run_units(
        job, [WorkUnit.from_dict(u) for u in units], make_runner(runner, address=ray_address, num_workers=workers),
        on_done,
    )
    if bar is not None:
        bar.close()
    return [s.as_dict() for s in summaries]


@task(name="finalize", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2, retry_condition_fn=retry_on_io_error)
def finalize(job: IngestJob, units: list[dict[str, Any]], runner: str, ray_address: str | None,
             workers: int | None, units_resumed: int) -> dict[str, Any]:
    report = ingest_run.finalize(
        job, [WorkUnit.from_dict(u) for u in units], make_runner(runner, address=ray_address, num_workers=workers),
        units_resumed,
    )
    return report.as_dict()


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
) -> dict[str, Any]:
    """Ingest one dataset into WebDataset shards, a manifest, statistics and a quarantine table.

    Each `run-units` task covers `units_per_task` units (coarse and idempotent: a retry or a rerun skips what is
    done). Returns the run's summary (see `IngestReport`).
    """
    job = build_ingest_job(source, input_path, output, IngestOptions.from_dict(options or {}), source_options)
    units = plan_units(job)
    summaries: list[dict[str, Any]] = []
    for start in range(0, len(units), max(units_per_task, 1)):
        summaries += run_units(job, units[start : start + units_per_task], runner, ray_address, workers, progress)
    resumed = sum(bool(s["resumed"]) for s in summaries)
    report = finalize(job, units, runner, ray_address, workers, resumed)
    get_run_logger().info("ingest of %s finished: %s", input_path, report)
    return report


def progress_bar(total: int) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc="units", unit="unit")
