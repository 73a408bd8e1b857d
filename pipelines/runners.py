"""Run a worker over a list of work items: in this process (tests, debugging) or on Ray Data (real runs).

A worker is built once per process by a picklable factory, `setup()` once, then called once per item. Items and
results are JSON-able dicts, so they cross process boundaries as plain JSON text.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np

from vlaforge.pipelines.stage_pools import StagePlacement

logger = logging.getLogger(__name__)


class DictWorker(Protocol):
    def setup(self) -> None: ...

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]: ...


WorkerFactory = Callable[[], DictWorker]


class LocalRunner:
    """Runs every item in this process, in order."""

    def map(self, make_worker: WorkerFactory, items: list[dict[str, Any]], *,
            tasks: bool = False) -> Iterator[dict[str, Any]]:
        worker = make_worker()
        worker.setup()
        for item in items:
            yield worker(item)


class _RayBatchWorker:
    """The Ray Data actor: one worker per actor, set up once, fed batches of JSON-encoded items."""

    def __init__(self, make_worker: WorkerFactory) -> None:
        self.worker = make_worker()
        self.worker.setup()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        results = []
        for item in batch["item"]:
            try:
                results.append(json.dumps(self.worker(json.loads(str(item)))))
            except OSError as error:  # Ray Data would hand the driver only its text: send it over as itself
                results.append(json.dumps({_OS_ERROR: [error.errno, error.strerror, error.filename]}))
        return {"result": np.array(results, dtype=object)}


_OS_ERROR = "__os_error__"
"""The result of an item whose worker raised an OSError: [errno, strerror, filename], raised again by the driver, so
that a full disk is reported as one (and a flaky mount is retried by the flow's tasks) as in-process."""


def _ray_task(batch: dict[str, np.ndarray], make_worker: WorkerFactory) -> dict[str, np.ndarray]:
    """A Ray Data task: builds the worker for its batch of items (no model to keep: pooled stages run elsewhere)."""
    return _RayBatchWorker(make_worker)(batch)


class RayRunner:
    """Runs items on Ray Data: `ray.init()` starts a local cluster unless `address` (or RAY_ADDRESS) names one.

    Items run on an actor pool (a worker per actor, set up once), or as tasks when the job's model stages run in
    their own pools (`stage_pools.py`; `placements` by stage pool name, else `default_placement`)."""

    def __init__(self, *, address: str | None = None, num_workers: int | None = None, num_cpus_per_worker: float = 1,
                 num_gpus_per_worker: float = 0, stage_pools: bool = True,
                 placements: dict[str, StagePlacement] | None = None):
        self.address = address
        self.num_workers = num_workers
        self.num_cpus_per_worker = num_cpus_per_worker
        self.num_gpus_per_worker = num_gpus_per_worker
        """GPUs per unit worker when the job runs without stage pools; else each pooled stage actor's default."""
        self.stage_pools = stage_pools
        self.placements = dict(placements or {})
        self.default_placement = StagePlacement(num_gpus=num_gpus_per_worker)

    def connect(self) -> None:
        """Join (or start) the cluster, once per process."""
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        ray.data.DataContext.get_current().enable_progress_bars = False

    def map(self, make_worker: WorkerFactory, items: list[dict[str, Any]], *,
            tasks: bool = False) -> Iterator[dict[str, Any]]:
        if not items:
            return
        import ray

        self.connect()
        workers = self.num_workers or max(1, int(ray.available_resources().get("CPU", 1) // self.num_cpus_per_worker))
        workers = min(workers, len(items))
        dataset = ray.data.from_items([{"item": json.dumps(item)} for item in items], override_num_blocks=len(items))
        strategy = ray.data.TaskPoolStrategy(size=workers) if tasks else ray.data.ActorPoolStrategy(size=workers)
        udf = {"fn": _ray_task, "fn_kwargs": {"make_worker": make_worker}} if tasks else {
            "fn": _RayBatchWorker, "fn_constructor_kwargs": {"make_worker": make_worker}}
        results = dataset.map_batches(
            **udf,
            batch_size=1,
            batch_format="numpy",
            compute=strategy,
            num_cpus=self.num_cpus_per_worker,
            num_gpus=None if tasks else self.num_gpus_per_worker or None,
        )
        logger.info("running %d items on Ray with %d workers", len(items), workers)
        for row in results.iter_rows():
            result = json.loads(row["result"])
            if _OS_ERROR in result:
                raise OSError(*result[_OS_ERROR])
            yield result


def make_runner(kind: str, *, address: str | None = None, num_workers: int | None = None,
                num_gpus_per_worker: float = 0,
                stage_pools: dict[str, dict[str, Any]] | None = None) -> LocalRunner | RayRunner:
    """A runner by name: "local" or "ray". `stage_pools` places pooled stages by name (`StagePlacement` fields)."""
    if kind == "local":
        return LocalRunner()
    if kind == "ray":
        placements = {name: StagePlacement(**fields) for name, fields in (stage_pools or {}).items()}
        # Pools size model stages apart on a cluster. On one machine's own Ray (no address, no placement, no GPU)
        # each worker runs a unit's stages itself, as a pool actor per model needs a CPU more than a laptop has.
        pooled = bool(address or os.environ.get("RAY_ADDRESS") or placements or num_gpus_per_worker)
        return RayRunner(address=address, num_workers=num_workers, num_gpus_per_worker=num_gpus_per_worker,
                         placements=placements, stage_pools=pooled)
    raise ValueError(f"unknown runner {kind!r}; use 'local' or 'ray'")
