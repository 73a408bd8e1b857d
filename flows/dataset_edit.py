"""The `dataset-edit` Prefect flow: `vlaforge dataset filter|split|merge`, one job each
(`pipelines/dataset_edit_recipe.py`), run by the shared job tasks."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger

from vlaforge.datasets.configurable import config_from_dict
from vlaforge.flows.job_tasks import run_job_tasks
from vlaforge.pipelines import dataset_edit_recipe as recipe
from vlaforge.pipelines.episode_selection import EpisodeSelection
from vlaforge.pipelines.shards.writer import ShardConfig
from vlaforge.pipelines.split_reassignment import SplitReassignment

OPERATIONS = ("filter", "split", "merge")


@flow(name="dataset-edit")
def edit_dataset(
    operation: str,
    sources: list[str],
    output: str,
    options: dict[str, Any] | None = None,
    name: str | None = None,
    shard_samples: int | None = None,
    shard_bytes: int | None = 256 * 2**20,
    runner: str = "ray",
    ray_address: str | None = None,
    workers: int | None = None,
    progress: bool = False,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Write the new robot dataset `output` from `sources`: `filter` (options: `EpisodeSelection.Config` fields),
    `split` (`SplitReassignment.Config` fields) or `merge`. Returns its summary."""
    shards = ShardConfig(max_samples=shard_samples, max_bytes=shard_bytes)
    common = {"name": name, "shards": shards}
    if operation == "filter":
        selection = config_from_dict(EpisodeSelection.Config, options or {}, where="filter options")
        job = recipe.filter_job(sources[0], output, selection, **common)
    elif operation == "split":
        reassignment = config_from_dict(SplitReassignment.Config, options or {}, where="split options")
        job = recipe.split_job(sources[0], output, reassignment, **common)
    elif operation == "merge":
        job = recipe.merge_job(sources, output, **common)
    else:
        raise ValueError(f"unknown dataset operation {operation!r}; one of {', '.join(OPERATIONS)}")
    summary = run_job_tasks(job, runner=runner, ray_address=ray_address, workers=workers, progress=progress,
                            overwrite=overwrite)
    get_run_logger().info("dataset %s of %s finished: %s", operation, sources, summary)
    return summary
