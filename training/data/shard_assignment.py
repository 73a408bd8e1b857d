"""Which samples of a component each (rank, worker) slot reads in an epoch: plans, portions and remainders.

A *plan* decides one epoch of one component for one world of S slots (slot = rank * num_workers + worker_id). It
starts from a *base*, the samples the epoch must still deliver: every sample of every shard for a fresh epoch, or
what an earlier world left unread when the run was resumed with a different layout. The base is a list of *pieces*
(a shard and intervals of its sample indices). The plan orders the pieces by a hash of (seed, component, epoch),
lays them end to end, and cuts that line into S contiguous runs of equal length (±1 sample): slot s reads run s.
So portions are disjoint, complete and balanced, every slot finishes an epoch at about the same time, and at most
S - 1 shards are split between two slots (the later slot skips the shard's first samples).

A plan is named by a JSON `PlanSpec`: its epoch, seed, world (slots, block, interleave) and, for a remainder plan,
the spec of the plan it continues and how many positions each of that plan's slots had consumed. Everything else is
recomputed from the spec and the corpus, so a checkpoint stays small: O(old slots) integers per resumed epoch.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import json
from collections.abc import Sequence
from typing import Any

from vlaforge.training.data.slot_sequence import Interval, SlotSequence, complement, merge_intervals

ALL = -1
"""In `Remainder.consumed`: the slot had read its whole portion of that plan."""


def hash_order(n: int, key: Any) -> list[int]:
    """A permutation of range(n) that depends only on `key` (JSON-able): indices sorted by a keyed BLAKE2b hash.

    Written out rather than taken from a NumPy generator so that a checkpoint resumes identically under any
    NumPy version.
    """
    salt = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).digest()[:32]
    return sorted(range(n), key=lambda i: hashlib.blake2b(i.to_bytes(8, "little"), key=salt, digest_size=8).digest())


@dataclasses.dataclass(frozen=True)
class Piece:
    """Samples of one shard: `intervals` of sample indices [start, stop), sorted and disjoint."""

    shard: int
    intervals: tuple[Interval, ...]

    @property
    def size(self) -> int:
        return sum(stop - start for start, stop in self.intervals)

    def select(self, offsets: Sequence[Interval]) -> tuple[Interval, ...]:
        """The shard indices at piece offsets `offsets` (intervals of positions within this piece, sorted)."""
        selected: list[Interval] = []
        base = 0
        for start, stop in self.intervals:
            for low, high in offsets:
                low, high = max(low - base, 0), min(high - base, stop - start)
                if low < high:
                    selected.append((start + low, start + high))
            base += stop - start
        return tuple(merge_intervals(selected))

    def part(self, start: int, stop: int) -> Piece:
        """The piece made of this piece's offsets [start, stop)."""
        return Piece(self.shard, self.select([(start, stop)]))


@dataclasses.dataclass(frozen=True)
class Remainder:
    """A base made of what the slots of an earlier plan had not consumed."""

    plan: PlanSpec
    consumed: tuple[int, ...]
    """Positions consumed per slot of `plan` (ALL: its whole portion), in that plan's slot order."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class PlanSpec:
    """The name of a plan; with the corpus, it determines every slot's samples and their order."""

    epoch: int
    seed: int
    slots: int
    block: int
    interleave: int
    after: Remainder | None = None
    """None: the epoch reads every sample; else only what `after` left unread."""

    def as_dict(self) -> dict[str, Any]:
        spec: dict[str, Any] = {k: getattr(self, k) for k in ("epoch", "seed", "slots", "block", "interleave")}
        if self.after is not None:
            spec["after"] = {"plan": self.after.plan.as_dict(), "consumed": list(self.after.consumed)}
        return spec

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> PlanSpec:
        after = spec.get("after")
        remainder = None if after is None else Remainder(cls.from_dict(after["plan"]), tuple(after["consumed"]))
        return cls(**{k: int(spec[k]) for k in ("epoch", "seed", "slots", "block", "interleave")}, after=remainder)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.as_dict(), sort_keys=True).encode()).hexdigest()


class Plan:
    """One epoch of one component over one world: the portion and read order of every slot."""

    def __init__(self, spec: PlanSpec, component: str, shard_samples: Sequence[int]) -> None:
        self.spec = spec
        self.component = component
        self._shard_samples = shard_samples
        self._digest = spec.digest()
        if spec.after is None:
            base = [Piece(shard, ((0, n),)) for shard, n in enumerate(shard_samples) if n > 0]
        else:
            base = remainder_pieces(Plan(spec.after.plan, component, shard_samples), spec.after.consumed)
        after = None if spec.after is None else spec.after.plan.digest()
        self._pieces = [base[i] for i in hash_order(len(base), [component, spec.seed, spec.epoch, after])]
        self._ends: list[int] = []
        total = 0
        for piece in self._pieces:
            total += piece.size
            self._ends.append(total)
        self.total = total
        """Samples the epoch delivers, over all slots."""

    def portion(self, slot: int) -> list[Piece]:
        """Slot `slot`'s pieces, in reading order: positions [slot*N//S, (slot+1)*N//S) of the plan's line."""
        if not 0 <= slot < self.spec.slots:
            raise ValueError(f"slot {slot} is outside this plan's {self.spec.slots} slots")
        low, high = slot * self.total // self.spec.slots, (slot + 1) * self.total // self.spec.slots
        pieces = []
        index = bisect.bisect_right(self._ends, low)
        while index < len(self._pieces) and low < high:
            start = self._ends[index] - self._pieces[index].size
            piece = self._pieces[index].part(low - start, min(high, self._ends[index]) - start)
            pieces.append(piece)
            low += piece.size
            index += 1
        return pieces

    def sequence(self, slot: int) -> tuple[list[Piece], SlotSequence]:
        """Slot `slot`'s pieces and the order it reads their samples in."""
        pieces = self.portion(slot)
        order = SlotSequence([p.size for p in pieces], interleave=self.spec.interleave, block=self.spec.block,
                             key=[self.component, self._digest, slot])
        return pieces, order


def remainder_pieces(plan: Plan, consumed: Sequence[int]) -> list[Piece]:
    """The samples of `plan` that its slots had not consumed (`consumed[s]` positions of slot s), by shard."""
    if len(consumed) != plan.spec.slots:
        raise ValueError(f"a remainder of a {plan.spec.slots}-slot plan needs {plan.spec.slots} consumed counts, "
                         f"got {len(consumed)}")
    left: dict[int, list[Interval]] = {}
    for slot, count in enumerate(consumed):
        if count == ALL:
            continue
        pieces, order = plan.sequence(slot)
        for piece, used in zip(pieces, order.consumed_offsets(count)):
            left.setdefault(piece.shard, []).extend(piece.select(complement(used, piece.size)))
    return [Piece(shard, tuple(merge_intervals(left[shard]))) for shard in sorted(left) if left[shard]]
