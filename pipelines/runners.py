"""Run a worker over a list of work items: in this process (tests, debugging) or on Ray Data (real runs).

A worker is built once per process by a picklable factory, `setup()` once, then called once per item. Items and
results are JSON-able dicts, so they cross process boundaries as plain JSON text.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import numpy as np

logger = logging.getLogger(__name__)


class DictWorker(Protocol):
    def setup(self) -> None: ...

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]: ...


WorkerFactory = Callable[[], DictWorker]


class LocalRunner:
    """Runs every item in this process, in order."""

    def map(self, make_worker: WorkerFactory, items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
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


class RayRunner:
    """Runs items on Ray Data with an actor pool: `ray.init()` starts a local cluster unless `address` is given."""

    def __init__(self, *, address: str | None = None, num_workers: int | None = None, num_cpus_per_worker: float = 1,
                 num_gpus_per_worker: float = 0):
        self.address = address
        self.num_workers = num_workers
        self.num_cpus_per_worker = num_cpus_per_worker
        self.num_gpus_per_worker = num_gpus_per_worker  # for model stages; a fraction shares one GPU between workers

    def _ensure_ray(self) -> None:
        import ray

        if not ray.is_initialized():
            ray.init(address=self.address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        ray.data.DataContext.get_current().enable_progress_bars = False

    def map(self, make_worker: WorkerFactory, items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        if not items:
            return
        import ray

        self._ensure_ray()
        workers = self.num_workers or max(1, int(ray.available_resources().get("CPU", 1) // self.num_cpus_per_worker))
        workers = min(workers, len(items))
        dataset = ray.data.from_items([{"item": json.dumps(item)} for item in items], override_num_blocks=len(items))
        results = dataset.map_batches(
            _RayBatchWorker,
            fn_constructor_kwargs={"make_worker": make_worker},
            batch_size=1,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=workers),
            num_cpus=self.num_cpus_per_worker,
            num_gpus=self.num_gpus_per_worker or None,
        )
        logger.info("running %d items on Ray with %d workers", len(items), workers)
        for row in results.iter_rows():
            result = json.loads(row["result"])
            if _OS_ERROR in result:
                raise OSError(*result[_OS_ERROR])
            yield result


def make_runner(kind: str, *, address: str | None = None, num_workers: int | None = None,
                num_gpus_per_worker: float = 0) -> LocalRunner | RayRunner:
    """A runner by name: "local" or "ray"."""
    if kind == "local":
        return LocalRunner()
    if kind == "ray":
        return RayRunner(address=address, num_workers=num_workers, num_gpus_per_worker=num_gpus_per_worker)
    raise ValueError(f"unknown runner {kind!r}; use 'local' or 'ray'")
