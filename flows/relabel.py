"""The `relabel` Prefect flow: one generator over robot shards (or a VL dataset) into a VL dataset. Thin wiring only.

The API key never becomes a plain flow parameter: it arrives as a `SecretStr` (stored masked in the flow run) or is
read from a Prefect Secret block on each worker.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from prefect import flow, get_run_logger
from pydantic import SecretStr

from vlaforge.annotators.relabel_recipe import relabel_job
from vlaforge.annotators.vlm_backends import backend_config
from vlaforge.annotators.vlm_http import HttpVlm
from vlaforge.flows.job_tasks import run_job_tasks
from vlaforge.pipelines.shards.writer import ShardConfig


@flow(name="relabel")
def relabel(
    shards: str,
    output: str,
    generator: str,
    vlm: str | None = None,
    vlm_options: dict[str, Any] | None = None,
    api_key: SecretStr | None = None,
    dataset: str | None = None,
    options: dict[str, Any] | None = None,
    split: str | None = None,
    shards_per_unit: int = 4,
    shard_samples: int = 2000,
    runner: str = "ray",
    ray_address: str | None = None,
    workers: int | None = None,
    num_gpus_per_worker: float = 0,
    stage_pools: dict[str, dict[str, float]] | None = None,
    progress: bool = False,
    overwrite: bool = False,
    judge: str | None = None,
    judge_threshold: float = 7.0,
) -> dict[str, Any]:
    """Run `generator` (caption, vqa, eqa, plan, trajectory) over `shards` with the VLM `vlm` (`local:DIR` or
    `http:URL`, options such as `model`, `concurrency`, `api_key_block`) into the VL dataset `output`; `judge`
    (`local:DIR` or `http:URL`, the same key) scores every kept answer against its image."""
    backend = _with_key(backend_config(vlm, **(vlm_options or {})) if vlm else None, api_key)
    judge_backend = _with_key(backend_config(judge) if judge else None, api_key)
    job = relabel_job(shards=shards, output=output, generator=generator, vlm=backend, dataset=dataset,
                      options=options, split=split, shards_per_unit=shards_per_unit,
                      shard_config=ShardConfig(max_samples=shard_samples, max_bytes=256 * 2**20),
                      judge=judge_backend, judge_threshold=judge_threshold)
    summary = run_job_tasks(job, runner=runner, ray_address=ray_address, workers=workers,
                               num_gpus_per_worker=num_gpus_per_worker, stage_pools=stage_pools, progress=progress,
                               overwrite=overwrite)
    get_run_logger().info("relabel %s of %s finished: %d samples, drops %s", generator, shards, summary["samples"],
                          summary["drops_by_reason"])
    return summary


def _with_key(backend: Any, api_key: SecretStr | None) -> Any:
    """An HTTP backend with the API key set (it never travels as a plain flow parameter)."""
    if api_key is not None and isinstance(backend, HttpVlm.Config):
        return dataclasses.replace(backend, api_key=api_key.get_secret_value())
    return backend
