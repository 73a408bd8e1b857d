"""The `ingest-vl` Prefect flow: a general VL dataset (any format whose source yields VL rows) into VL shards. Thin
wiring only: index the rows, select (dedup by images and conversation, near-duplicate images, the per-dataset
limit), then the VL job's plan / run / finalize."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from vlaforge.datasets.schema import VlTask
from vlaforge.datasets.source import WorkUnit
from vlaforge.flows.job_tasks import command_line, retry_on_io_error, run_claimed_job_tasks
from vlaforge.pipelines import vl_ingest
from vlaforge.pipelines.runners import make_runner
from vlaforge.pipelines.shards.writer import ShardConfig
from vlaforge.pipelines.vl_ingest import VlIngest


@task(name="index-vl-rows", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5,
      retry_condition_fn=retry_on_io_error)
def index_rows(job: VlIngest, runner: str, ray_address: str | None, workers: int | None) -> list[dict[str, Any]]:
    units = job.source.build().plan()
    vl_ingest.index_units(job, units, make_runner(runner, address=ray_address, num_workers=workers))
    return [unit.as_dict() for unit in units]


@task(name="select-vl-rows", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2,
      retry_condition_fn=retry_on_io_error)
def select_rows(job: VlIngest, units: list[dict[str, Any]]) -> dict[str, int]:
    return vl_ingest.select_rows(job, [WorkUnit.from_dict(u) for u in units])


@flow(name="ingest-vl")
def ingest_vl(
    input_path: str,
    output: str,
    dataset: str | None = None,
    task: str | None = None,
    limit: int | None = None,
    dedup: bool = True,
    near_duplicates: str = "report",
    source_options: dict[str, Any] | None = None,
    sample_options: dict[str, Any] | None = None,
    shard_samples: int | None = 2000,
    shard_bytes: int | None = 256 * 2**20,
    runner: str = "ray",
    ray_address: str | None = None,
    workers: int | None = None,
    progress: bool = False,
    input_format: str = "vl-parquet",
    overwrite: bool = False,
) -> dict[str, Any]:
    """Ingest one general VL dataset (`input_format`: a registered format that yields VL rows); returns its summary
    (with row counts: kept, duplicates, past the limit)."""
    job = vl_ingest.new_job(input_path, output, dataset=dataset, task=VlTask(task) if task else None, limit=limit,
                            dedup=dedup, near_duplicates=near_duplicates,
                            source_options=source_options, sample_options=sample_options, input_format=input_format,
                            shards=ShardConfig(max_samples=shard_samples, max_bytes=shard_bytes))
    with vl_ingest.claimed_vl_ingest(job, overwrite=overwrite, command=command_line()) as owned:
        units = index_rows(owned, runner, ray_address, workers)
        counts = select_rows(owned, units)
        run_claimed_job_tasks(owned.job(), runner=runner, ray_address=ray_address, workers=workers,
                              progress=progress)
        summary = vl_ingest.record_selection(output, counts)
    get_run_logger().info("ingest of %s finished: %d samples, rows %s", input_path, summary["samples"], counts)
    return summary
