"""Stage-level execution on a Ray cluster: each pooled stage (a model, or a shared quota) in its own actor pool.

On one machine a unit worker runs every stage of a job in its own process. On a cluster that would load every model
(Grounding DINO, LLMDet, SAM, the VLM) into every worker, so GPU stages could not be sized apart from CPU ones. Here:

- the stages that say `pooled` (see `Stage.pooled`) each get an actor pool: `actors` actors, each asking Ray for
  `num_gpus` (fractions share a GPU) and `num_cpus`, each building the stage once and calling `setup()` once;
- the units run as Ray tasks (CPU): read, CPU stages, shard writing; at a pooled stage the unit's batch goes to one
  actor of that stage's pool (`RemoteStage`), whole, exactly as it would reach the stage in-process, and comes back
  with the drops and side-table rows the stage recorded.

So outputs are byte-identical to an in-process run, and resumability is the job runner's own (markers, committed
shards). An actor that dies (its node lost) is restarted by Ray and the call retried; a unit task that dies is
retried by Ray Data, or redone by a rerun.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from vlaforge.datasets.drops import Drop
from vlaforge.pipelines.stage import Stage, StageConfig

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, kw_only=True)
class StagePlacement:
    """Where one pooled stage runs on the cluster."""

    num_gpus: float = 0.0
    """GPUs each actor asks for; a fraction (0.5) puts that many actors on one GPU."""
    num_cpus: float = 1.0
    """CPUs each actor asks for."""
    actors: int = 1
    """Actors in the pool: how many batches of this stage run at once."""

    def __post_init__(self) -> None:
        if not 0 <= self.num_gpus:
            raise ValueError(f"StagePlacement.num_gpus must be >= 0, got {self.num_gpus}")
        if not 0 < self.num_cpus:
            raise ValueError(f"StagePlacement.num_cpus must be > 0, got {self.num_cpus}")
        if self.actors < 1:
            raise ValueError(f"StagePlacement.actors must be >= 1, got {self.actors}")


class StageActor:
    """One actor of a pool: the stage, built and set up once."""

    def __init__(self, config: StageConfig) -> None:
        self.stage = config.build()
        self.stage.setup()

    def call(self, batch: list[Any]) -> tuple[list[Any], list[dict[str, Any]], dict[str, list[dict[str, Any]]]]:
        """The stage's outputs for `batch`, with the drops and side-table rows this call recorded."""
        outputs = self.stage(batch)
        return outputs, [drop.as_row() for drop in self.stage.ledger.take()], self.stage.take_tables()

    def node(self) -> str:
        """The Ray node this actor runs on (for tests and logs)."""
        import ray

        return ray.get_runtime_context().get_node_id()


class RemoteStage(Stage):
    """Stands in for a pooled stage inside a unit worker: calls go to the stage's actor pool."""

    def __init__(self, config: StageConfig, actors: Sequence[Any], first: int = 0) -> None:
        super().__init__(config)
        self.actors = list(actors)
        self._next = first % len(self.actors)
        self._tables: dict[str, list[dict[str, Any]]] = {}

    def __call__(self, batch: list[Any]) -> list[Any]:
        import ray

        actor = self.actors[self._next]
        self._next = (self._next + 1) % len(self.actors)
        outputs, drops, tables = ray.get(actor.call.remote(batch))
        self.ledger.extend([Drop.from_row(row) for row in drops])
        for name, rows in tables.items():
            self._tables.setdefault(name, []).extend(rows)
        return outputs

    def take_tables(self) -> dict[str, list[dict[str, Any]]]:
        tables, self._tables = self._tables, {}
        return tables


class StagePools:
    """The actor pools of one job's pooled stages, by stage index; `shutdown()` ends them."""

    def __init__(self, pools: dict[int, list[Any]]) -> None:
        self.pools = pools

    @classmethod
    def start(cls, stages: Sequence[StageConfig], placements: Mapping[str, StagePlacement],
              default: StagePlacement, ready_timeout_s: float = 600.0) -> StagePools:
        """A pool for every pooled stage of `stages`, placed by its `pool_name` in `placements` (else `default`),
        each actor set up (its model loaded) before this returns. A name in `placements` that no pooled stage has is
        refused: it would silently place nothing. An actor the cluster cannot place within `ready_timeout_s` stops
        the run with what it asked for and what the cluster has, instead of waiting for ever."""
        import ray

        built = [config.build() for config in stages]
        names = {stage.pool_name for stage in built if stage.pooled}
        unknown = sorted(set(placements) - names)
        if unknown:
            raise ValueError(f"stage pools {unknown} match no pooled stage of this job; its pooled stages are "
                             f"{sorted(names) or 'none'}")
        remote = ray.remote(max_restarts=-1, max_task_retries=3)(StageActor)
        pools = {}
        for index, stage in enumerate(built):
            if stage.pooled:
                placement = placements.get(stage.pool_name, default)
                options = remote.options(num_gpus=placement.num_gpus, num_cpus=placement.num_cpus)
                pools[index] = [options.remote(stages[index]) for _ in range(placement.actors)]
                logger.info("stage %s: %d actors, %g GPUs and %g CPUs each", stage.pool_name, placement.actors,
                            placement.num_gpus, placement.num_cpus)
        started = cls(pools)
        started._wait_ready(built, placements, default, ready_timeout_s)
        return started

    def _wait_ready(self, built: Sequence[Stage], placements: Mapping[str, StagePlacement], default: StagePlacement,
                    timeout_s: float) -> None:
        import ray

        pending = {actor.node.remote(): index for index, actors in self.pools.items() for actor in actors}
        _, late = ray.wait(list(pending), num_returns=len(pending), timeout=timeout_s)
        if late:
            stage = built[pending[late[0]]]
            placement = placements.get(stage.pool_name, default)
            self.shutdown()
            raise RuntimeError(
                f"stage {stage.pool_name}: {len(late)} pool actor(s) not placed within {timeout_s:g} s; each asks "
                f"for {placement.num_gpus:g} GPUs and {placement.num_cpus:g} CPUs and the cluster has "
                f"{ray.cluster_resources()} ({ray.available_resources()} free). Give it less (--stage-pool "
                f"{stage.pool_name}=num_gpus=...,num_cpus=...,actors=...) or add nodes")
        ray.get(list(pending))  # a failed setup (a bad model path) raises here, with the stage's own message

    def remote_stages(self, stages: Sequence[StageConfig], unit: int) -> dict[int, RemoteStage]:
        """Stand-ins for a unit's worker; each unit starts at another actor, so units spread over a pool."""
        return {index: RemoteStage(stages[index], actors, first=unit) for index, actors in self.pools.items()}

    def shutdown(self) -> None:
        import ray

        for actors in self.pools.values():
            for actor in actors:
                ray.kill(actor)
        self.pools = {}
