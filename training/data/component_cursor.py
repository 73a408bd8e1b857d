"""One component's samples for one slot, epoch after epoch, and how far it got (one integer per epoch).

The cursor reads its slot's portion of the current epoch's plan in position order (`SlotSequence.walk`), a block
at a time, and hands the block out in the block's permutation. `consumed` counts positions handed out, including
positions whose shard was refused (they hold no sample and are passed over), so the state means the same thing
after a resume. At the end of its portion it moves to the next epoch, whose plan is the default one unless a
resume left a remainder plan for it in `plans`; a `one_pass` cursor stops there instead (`next_sample()` is None).
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import itertools
import logging
from collections.abc import Iterator, Mapping
from typing import Any

from vlaforge.pipelines.shards.reader import BadShardError, ShardEntry, ShardReader, StreamField
from vlaforge.training.data.shard_assignment import Piece, Plan, PlanSpec

log = logging.getLogger(__name__)


class BadShardPolicy(str, enum.Enum):
    SKIP = "skip"
    """Log the shard, count it in the stream's stats under its reason, and pass over its samples."""
    RAISE = "raise"
    """Stop the stream with the BadShardError."""


class CorpusStreamError(RuntimeError):
    """The stream cannot go on (for example every shard a slot reads was refused)."""


@dataclasses.dataclass(frozen=True)
class ComponentShards:
    """The shards of one component in the stream's split, as the corpus manifest lists them."""

    name: str
    kind: str
    shards: tuple[ShardEntry, ...]

    @property
    def samples(self) -> int:
        return sum(shard.samples for shard in self.shards)


@dataclasses.dataclass(frozen=True)
class World:
    """The layout a plan is made for; `slot` is this stream's place in it."""

    seed: int
    slots: int
    slot: int
    block: int
    interleave: int

    def default_plan(self, epoch: int) -> PlanSpec:
        return PlanSpec(epoch=epoch, seed=self.seed, slots=self.slots, block=self.block, interleave=self.interleave)

    def key(self) -> dict[str, int]:
        """What must match for a slot's state to resume exactly: everything but the slot."""
        return {"seed": self.seed, "slots": self.slots, "block": self.block, "interleave": self.interleave}


class ComponentCursor:
    def __init__(self, component: ComponentShards, world: World, reader: ShardReader, *,
                 policy: BadShardPolicy, stats: dict[str, Any], epoch: int = 0, consumed: int = 0,
                 plans: Mapping[int, PlanSpec] | None = None, one_pass: bool = False) -> None:
        self.component = component
        self.world = world
        self.epoch = epoch
        self.consumed = consumed
        self.plans = dict(plans or {})
        self.one_pass = one_pass
        """Read this epoch's portion once, then stop (evaluation) instead of starting the next epoch."""
        self._reader = reader
        self._policy = policy
        self._stats = stats
        self._sizes = [shard.samples for shard in component.shards]
        self._yielded_in_epoch = 0
        self._barren_epochs = 0
        self._start_epoch()

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "consumed": self.consumed,
                "plans": {str(epoch): spec.as_dict() for epoch, spec in sorted(self.plans.items())}}

    def next_sample(self) -> dict[str, Any] | None:
        """The next sample: {"__key__", "__url__", "component", "kind", "epoch", ext: bytes}; None once a one-pass
        cursor has handed out its whole portion."""
        while True:
            if self.consumed >= self._sequence.length:
                if self.one_pass:
                    self.close()
                    return None
                self._finish_epoch()
                continue
            index = self.consumed // self._sequence.block
            if self._block_index != index:
                self._load_block(index)
            start, _ = self._sequence.block_bounds(index)
            position = self._order[self.consumed - start]
            sample, self._block[position] = self._block[position], None
            self.consumed += 1
            if sample is not None:
                self._yielded_in_epoch += 1
                return {**sample, StreamField.COMPONENT.value: self.component.name,
                        StreamField.KIND.value: self.component.kind, StreamField.EPOCH.value: self.epoch}

    def close(self) -> None:
        """Close the shards being read."""
        for reader in self._readers.values():
            reader.close()
        self._readers = {}
        self._walk_position = -1

    def _start_epoch(self) -> None:
        spec = self.plans.get(self.epoch) or self.world.default_plan(self.epoch)
        plan = Plan(spec, self.component.name, self._sizes)
        self._pieces, self._sequence = plan.sequence(self.world.slot)
        self._block_index: int | None = None
        self._block: list[dict[str, Any] | None] = []
        self._order: list[int] = []
        self._readers: dict[int, Iterator[dict[str, Any] | None]] = {}
        self._walk_position = -1

    def _finish_epoch(self) -> None:
        if self._sequence.length and not self._yielded_in_epoch:
            self._barren_epochs += 1
            if self._barren_epochs >= 2:
                raise CorpusStreamError(
                    f"component {self.component.name!r}: every shard of slot {self.world.slot}'s portion was refused "
                    f"in two epochs running (bad shards so far: {dict(self._stats['bad_shards'])}); fix or drop them")
        else:
            self._barren_epochs = 0
        self.close()
        self.epoch += 1
        self.consumed = 0
        self._yielded_in_epoch = 0
        self.plans = {epoch: spec for epoch, spec in self.plans.items() if epoch >= self.epoch}
        self._start_epoch()

    def _load_block(self, index: int) -> None:
        """Read block `index`'s samples in position order (continuing the open shards when it follows on)."""
        start, stop = self._sequence.block_bounds(index)
        try:
            if self._walk_position != start:  # a resume, or the first block: open the pieces where `start` is
                self.close()
                self._offsets = self._sequence.prefix_counts(start)
                self._walk = self._sequence.walk(start)
            self._block = [self._next_of(piece) for piece in itertools.islice(self._walk, stop - start)]
        except BaseException:
            self.close()  # the next call starts this block again from the state, which did not move
            self._block_index = None
            raise
        self._walk_position = stop
        self._order = self._sequence.permutation(index)
        self._block_index = index

    def _next_of(self, piece: int) -> dict[str, Any] | None:
        if piece not in self._readers:
            self._readers[piece] = self._piece_samples(self._pieces[piece], self._offsets[piece])
        sample = next(self._readers[piece])
        self._offsets[piece] += 1
        if self._offsets[piece] == self._pieces[piece].size:  # done with this shard: let its file go now
            self._readers.pop(piece).close()
        return sample

    def _piece_samples(self, piece: Piece, start: int) -> Iterator[dict[str, Any] | None]:
        """Each sample of `piece` from offset `start`, or None for each one a refused shard did not deliver."""
        shard = self.component.shards[piece.shard]
        delivered = 0
        self._stats["shards_opened"] += 1
        try:
            for sample in self._reader.samples(shard, piece.select([(start, piece.size)])):
                delivered += 1
                yield sample
        except BadShardError as error:
            if self._policy is BadShardPolicy.RAISE:
                raise
            self._stats["bad_shards"][error.reason.value] += 1
            self._stats["skipped_samples"] += piece.size - start - delivered
            log.error("component %s: shard refused, %d samples passed over: %s", self.component.name,
                      piece.size - start - delivered, error)
        for _ in range(piece.size - start - delivered):
            yield None


def new_stats() -> dict[str, Any]:
    """The counters a stream keeps: samples handed out, shards opened, bad shards by reason, samples passed over."""
    return {"samples": 0, "shards_opened": 0, "bad_shards": collections.Counter(), "skipped_samples": 0}
