"""`CorpusStream`: the samples of a corpus manifest for one (rank, worker) slot, by URL, resumable exactly.

    stream = CorpusStream("s3://bucket/corpus.json", rank=r, world_size=W, worker_id=w, num_workers=N)
    for sample in stream:   # endless: each component starts its next epoch when its current one is done
        sample  # {"__key__", "__url__", "component", "kind", "epoch", "state.npy": b"...", "wrist.jpg": b"..."}

What each slot reads (slot = rank * num_workers + worker_id, S = world_size * num_workers slots):
- Draws: each draw takes the kind furthest behind the corpus's VL:robot ratio, then the component of that kind
  furthest behind its weight (`mixture_schedule`): every kind and component stays within one draw of its target.
- Epochs, per component: every epoch the component's shards are put in a seeded order and the line of their samples
  is cut into S equal contiguous runs, one per slot (`shard_assignment`): disjoint, complete, balanced (a shard may
  be split between two neighbouring slots). Each slot reads its run a few shards at a time, interleaved, and hands
  it out shuffled in blocks of `block` samples (`slot_sequence`, which documents the shuffle trade-off). A slot that
  finishes its run of a component starts that component's next epoch, so each sample is seen once per epoch.
- Memory: one block of samples per component, plus `interleave` open shards per component.

Evaluation (`one_pass=True`, e.g. with `split="validation"`): one pass over every sample of the split, then
StopIteration. There is no mixture draw: the slot reads its portion of each component in full, component after
component in the manifest's order, from epoch 0's plan, so across all slots every sample of every component comes
exactly once (a slot may get nothing of a component smaller than the number of slots). The pass is deterministic
for a seed, and `state_dict()` / `load_state_dict()` work as in training (a one-pass state only resumes a one-pass
stream).

State: `state_dict()` is this slot's position (JSON-able, small; see `stream_state` for the format);
`load_state_dict()` takes either this slot's own state or a checkpoint of every slot (`combine_states`), and
resumes exactly (same seed, S, block and interleave) or elastically (anything else: what the old world left unread
of each epoch under way is split over the new slots). `state_dict()` describes the samples handed out so far; a
DataLoader wrapper snapshots it in the worker with each batch and keeps, per worker, the snapshot of the last
batch the trainer consumed (prefetched batches are not consumed).

Shards: URLs relative to the corpus manifest resolve against its URL; see `pipelines/shards/urls.py` for schemes and
retries and `pipelines/shards/reader.py` for what makes a shard refused. A refused shard is logged, counted in
`stats["bad_shards"]` by reason, and its samples are passed over (or, with `on_bad_shard="raise"`, the error stops
the stream).
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
from typing import Any

from vlaforge.pipelines.corpus_manifest import ComponentKind, CorpusError, CorpusManifest
from vlaforge.pipelines.shards.reader import ShardEntry, ShardReader, StreamField
from vlaforge.pipelines.shards.urls import ShardOpener, resolve_url
from vlaforge.training.data.component_cursor import (
    BadShardPolicy,
    ComponentCursor,
    ComponentShards,
    World,
    new_stats,
)
from vlaforge.training.data.mixture_schedule import MixtureEntry, MixtureSchedule
from vlaforge.training.data.shard_assignment import PlanSpec
from vlaforge.training.data.stream_state import STATE_FORMAT, resume

__all__ = ["CorpusStream", "StreamField"]

log = logging.getLogger(__name__)


class CorpusStream:
    """An iterator over one slot's samples of a corpus, endless or (`one_pass`) one pass; see the module docstring."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config:
        """How a slot reads (the same in every slot of a run; changing block or interleave resumes elastically)."""

        block: int = 256
        """Samples shuffled together (and held in memory) per component."""
        interleave: int = 4
        """Shards read round-robin at once per component: neighbours in a block come from that many shards."""
        on_bad_shard: BadShardPolicy = BadShardPolicy.SKIP
        """skip: log, count and pass over a refused shard; raise: stop with its BadShardError."""
        reader: ShardReader.Config = dataclasses.field(default_factory=ShardReader.Config)
        """Allowed member extensions and the spool directory (verification is the stream's `verify_sha256`)."""
        opener: ShardOpener.Config = dataclasses.field(default_factory=ShardOpener.Config)
        """Retries, timeouts and S3 options."""

        def __post_init__(self) -> None:
            if self.block < 1:
                raise ValueError(f"CorpusStream.Config.block must be >= 1, got {self.block}")
            if self.interleave < 1:
                raise ValueError(f"CorpusStream.Config.interleave must be >= 1, got {self.interleave}")
            if self.on_bad_shard not in {policy.value for policy in BadShardPolicy}:
                raise ValueError(f"CorpusStream.Config.on_bad_shard must be one of "
                                 f"{[p.value for p in BadShardPolicy]}, got {self.on_bad_shard!r}")

    def __init__(self, corpus_url: str, *, rank: int = 0, world_size: int = 1, worker_id: int = 0,
                 num_workers: int = 1, seed: int | None = None, split: str = "train", one_pass: bool = False,
                 verify_sha256: bool = False, config: CorpusStream.Config | None = None,
                 kinds: tuple[str, ...] | None = None) -> None:
        """`one_pass`: every sample of `split` once over all slots, each component in full, then StopIteration.
        `kinds`: read only components of these kinds ("robot", "vl"; None: all): the others are never opened, and
        the mixture draws among the kinds left (a robot-only phase reads no VL sample)."""
        _check_slot("rank", rank, "world_size", world_size)
        _check_slot("worker_id", worker_id, "num_workers", num_workers)
        self.config = config or CorpusStream.Config()
        self.corpus_url = corpus_url
        self.split = split
        self.one_pass = one_pass
        self.kinds = None if kinds is None else frozenset(ComponentKind(kind) for kind in kinds)
        opener = ShardOpener(self.config.opener)
        data = opener.read_bytes(corpus_url)
        self.corpus_sha256 = hashlib.sha256(data).hexdigest()
        self.manifest = CorpusManifest.from_json(data, corpus_url)
        self.world = World(seed=self.manifest.seed if seed is None else seed, slots=world_size * num_workers,
                           slot=rank * num_workers + worker_id, block=self.config.block,
                           interleave=self.config.interleave)
        reader_config = dataclasses.replace(self.config.reader, verify_sha256=verify_sha256)
        self._reader = ShardReader(reader_config, opener)
        self._components = self._split_components()
        self.stats: dict[str, Any] = new_stats()
        self._start({name: {} for name in self._components}, None)

    def __iter__(self) -> CorpusStream:
        return self

    def __next__(self) -> dict[str, Any]:
        if self.one_pass:
            sample = self._next_in_pass()
        else:
            name = self._schedule.peek()
            sample = self._cursors[name].next_sample()
            self._schedule.advance(name, self._components[name].kind)
        self.stats["samples"] += 1
        return sample

    def _next_in_pass(self) -> dict[str, Any]:
        """The next sample of the first component (in manifest order) whose portion is not done yet."""
        for cursor in self._cursors.values():
            sample = cursor.next_sample()
            if sample is not None:
                return sample
        raise StopIteration

    def state_dict(self) -> dict[str, Any]:
        """This slot's position: everything handed out so far counts as consumed."""
        return {
            "format": STATE_FORMAT,
            "corpus_sha256": self.corpus_sha256,
            "split": self.split,
            "one_pass": self.one_pass,
            "world": self.world.key(),
            "slot": self.world.slot,
            "mixture": self._schedule.state_dict(),
            "components": {name: cursor.state_dict() for name, cursor in self._cursors.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from this slot's own state, or from a checkpoint of every slot (`combine_states`)."""
        components, mixture = resume(state, corpus_sha256=self.corpus_sha256, split=self.split, world=self.world,
                                     components=list(self._components), one_pass=self.one_pass)
        self.close()
        self._start(components, mixture)

    def close(self) -> None:
        """Close the shards being read (iterating again reopens them)."""
        for cursor in self._cursors.values():
            cursor.close()

    def _start(self, components: dict[str, dict[str, Any]], mixture: dict[str, Any] | None) -> None:
        entries = [MixtureEntry(c.name, c.kind.value, c.weight) for c in self.manifest.components
                   if c.name in self._components]
        weights = {kind: sum(e.weight for e in entries if e.kind == kind) for kind in {e.kind for e in entries}}
        entries = [dataclasses.replace(e, weight=e.weight / weights[e.kind]) for e in entries]
        self._schedule = MixtureSchedule(self.manifest.kind_shares(), entries)
        if mixture is not None:
            self._schedule.load_state_dict(mixture)
        self._cursors = {
            name: ComponentCursor(
                shards, self.world, self._reader, policy=BadShardPolicy(self.config.on_bad_shard), stats=self.stats,
                epoch=int(components[name].get("epoch", 0)), consumed=int(components[name].get("consumed", 0)),
                plans={int(e): PlanSpec.from_dict(p) for e, p in components[name].get("plans", {}).items()},
                one_pass=self.one_pass)
            for name, shards in self._components.items()
        }

    def _split_components(self) -> dict[str, ComponentShards]:
        """The components with samples in this split, their shard URLs resolved against the corpus URL."""
        components = {}
        for component in self.manifest.components:
            if self.kinds is not None and component.kind not in self.kinds:
                continue
            shards = tuple(ShardEntry(resolve_url(self.corpus_url, s.url), s.samples, s.bytes, s.sha256)
                           for s in component.shards_of(self.split))
            total = sum(shard.samples for shard in shards)
            if total == 0:
                log.warning("%s: component %s has no %r samples; it is left out of this stream", self.corpus_url,
                            component.name, self.split)
                continue
            if total < self.world.slots and not self.one_pass:  # one pass: a slot may read nothing of it
                raise CorpusError(
                    f"{self.corpus_url}: component {component.name!r} has {total} {self.split!r} samples, fewer "
                    f"than the {self.world.slots} (rank, worker) slots that each need one; use fewer workers or "
                    "leave the component out of the corpus")
            components[component.name] = ComponentShards(component.name, component.kind.value, shards)
        if not components:
            kinds = "" if self.kinds is None else f" of kind {sorted(kind.value for kind in self.kinds)}"
            raise CorpusError(f"{self.corpus_url}: no component{kinds} has {self.split!r} samples")
        return components


def _check_slot(name: str, value: int, total_name: str, total: int) -> None:
    if total < 1 or not 0 <= value < total:
        raise ValueError(f"CorpusStream: {name}={value} must be in [0, {total_name}={total})")
