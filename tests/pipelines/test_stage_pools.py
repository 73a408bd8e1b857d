"""Stage pools on a local Ray cluster: a pooled stage's calls go to its actors and come back with the drops and
side-table rows the stage recorded, exactly as in-process; misplaced or unplaceable pools are refused in words."""

from __future__ import annotations

import dataclasses

import pytest

from vlaforge.datasets.drops import DropReason
from vlaforge.pipelines.stage import Stage, StageConfig
from vlaforge.pipelines.stage_pools import StagePlacement, StagePools


class Squares(Stage):
    """Keeps even numbers as their squares, drops odd ones, and records one table row per call."""

    pooled = True

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(StageConfig):
        offset: int = 0

    def setup(self) -> None:
        self.ready = True  # what a model load would be: only actors do it

    def __call__(self, batch):
        kept = []
        for n in batch:
            if n % 2:
                self.ledger.drop(file="f", episode=str(n), reason=DropReason.TOO_SHORT)
            else:
                kept.append(n * n + self.config.offset)
        self.rows = getattr(self, "rows", []) + [{"batch": len(batch)}]
        return kept

    def take_tables(self):
        rows, self.rows = getattr(self, "rows", []), []
        return {"calls": rows} if rows else {}


def test_a_remote_stage_answers_as_the_stage_would_in_process(ray_local):
    config = Squares.Config(offset=1)
    pools = StagePools.start([config], {}, StagePlacement(actors=2))
    try:
        (remote,) = pools.remote_stages([config], unit=3).values()
        local = config.build()
        for batch in ([1, 2, 3, 4], [6], [5]):
            assert remote(batch) == local(batch)
        assert [(d.episode, d.reason) for d in remote.ledger.take()] == [
            (d.episode, d.reason) for d in local.ledger.take()]
        assert remote.take_tables() == local.take_tables() == {"calls": [{"batch": 4}, {"batch": 1}, {"batch": 1}]}
        nodes = {ray_local.get(actor.node.remote()) for actor in pools.pools[0]}
        assert len(pools.pools[0]) == 2 and len(nodes) == 1
    finally:
        pools.shutdown()


def test_a_placement_for_no_pooled_stage_is_refused(ray_local):
    with pytest.raises(ValueError, match=r"stage pools \['sam'\] match no pooled stage of this job; its pooled "
                                         r"stages are \['Squares'\]"):
        StagePools.start([Squares.Config()], {"sam": StagePlacement()}, StagePlacement())


def test_a_pool_the_cluster_cannot_place_stops_the_run_in_words(ray_local):
    with pytest.raises(RuntimeError, match=r"stage Squares: 1 pool actor\(s\) not placed within 3 s; each asks for "
                                           r"1 GPUs and 1 CPUs"):
        StagePools.start([Squares.Config()], {}, StagePlacement(num_gpus=1), ready_timeout_s=3)


def test_placements_are_checked():
    with pytest.raises(ValueError, match="StagePlacement.actors must be >= 1, got 0"):
        StagePlacement(actors=0)
