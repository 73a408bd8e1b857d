"""`CorpusLoader`: one rank's training batches from a corpus manifest URL, through a PyTorch DataLoader, resumable.

    loader = CorpusLoader(CorpusLoader.Config(corpus_url="s3://bucket/corpus.json", processor="/ckpt/vlm"),
                          rank=rank, world_size=world_size)
    loader.load_state_dict(checkpoint["loader"])      # optional: continue exactly where the checkpoint was taken
    for batch in loader:                              # endless; a CorpusBatch (training/data/collate.py)
        ...
        checkpoint["loader"] = loader.state_dict()    # JSON-able

Each DataLoader worker runs one `CorpusStream` slot (worker ids from `get_worker_info()`), turns raw samples into
examples (`robot_transform`, `vl_transform`), groups them by the mixing policy and collates them (`collate`), so
decoding and tokenization happen in the workers and batches reach the trainer prefetched (`prefetch_factor` per
worker). A thread of the trainer's process takes them off the workers' queue ahead of the trainer
(`batch_receiver.py`), so that cost overlaps the training step instead of adding to its data wait.

Resume. Every batch carries its worker's resume record (the `Batcher`'s: stream state and consumed draws) and the
main process keeps, per worker, the record of the last batch the trainer took: batches still prefetched in the queue
are not consumed. The state also names the worker whose batch comes next. The DataLoader hands out batches round
robin from its worker 0, so a resumed loader rotates the workers' roles (DataLoader worker i plays slot
(i + next) mod N): the batch order after a resume is exactly the uninterrupted run's.

With a different number of workers or ranks (elastic), `CorpusLoader.combine` gathers every rank's state into one
checkpoint whose streams the new slots split between them (`stream_state`): nothing of an epoch under way is
skipped or repeated under `MixPolicy.MIXED`. Under `BY_KIND`, samples consumed after the oldest sample still waiting
in a kind's buffer are read again (at most what was drawn while that buffer filled).

Evaluation: `Config(split="validation", one_pass=True)` makes a loader that ends. Its workers' streams read every
sample of the split once over all ranks and workers, each component in full and with no mixture draw
(`corpus_stream`), and each worker's last batch may be short. A pass that ran to its end leaves the position at the
start again, so every `for batch in loader:` is one whole pass.

    val = CorpusLoader(CorpusLoader.Config(corpus_url=url, processor=vlm, split="validation", one_pass=True),
                       rank=rank, world_size=world_size)
    for batch in val:                                 # every validation sample of this rank once, then the loop ends
        ...

Bad samples: `BadSamplePolicy.RAISE` stops the run with the error; `SKIP` passes the sample over, and the loader logs
each one (shard, key, reason, the running count), gathers the records in `quarantined` (one per sample, by reason,
however often it is re-read), and stops the run (`BadSampleBudgetError`) once a worker's skips exceed
`bad_sample_budget`'s fraction of the samples it drew (checked in the worker, so a stream of nothing but bad samples
stops too, instead of looking for a good one for ever).

Workers. One iteration runs at a time: leaving a `for` loop early (break, an exception), `close()` or the end of a
`with CorpusLoader(...) as loader:` block shut its workers down at once (each closes its shards and exits 0), and
starting another `for` closes the previous one. Workers are forked from the trainer's process and inherit its
thread-exit hooks, which libraries register for their own service threads (Prefect's log and event services do, in a
process that ran a flow). Those threads do not exist in a worker, and a hook that fails there would make the worker's
clean exit an exit code 1, which the DataLoader reports as a crashed worker; so in a worker, a failing inherited
hook is logged and passed over.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info
from transformers import AutoProcessor, ProcessorMixin

from vlaforge.datasets.drops import Drop, count_by_reason
from vlaforge.pipelines.corpus_manifest import ComponentKind, CorpusError, CorpusManifest
from vlaforge.pipelines.shards.urls import ShardOpener, resolve_url
from vlaforge.training.data import bad_samples, device_batch
from vlaforge.training.data.bad_samples import BadSampleBudget, BadSampleError, BadSamplePolicy
from vlaforge.training.data.batch_receiver import BatchReceiver
from vlaforge.training.data.collate import Batcher, CorpusBatch, make_collate
from vlaforge.training.data.corpus_stream import CorpusStream, StreamField
from vlaforge.training.data.normalization import Normalize
from vlaforge.training.data.robot_transform import RobotSampleTransform
from vlaforge.training.data.stream_state import combine_states
from vlaforge.training.data.vl_transform import VlSampleTransform

log = logging.getLogger(__name__)


class RobotPixels(str, enum.Enum):
    """Where a robot batch's pixel values are made (`CorpusLoader.Config.robot_pixels`)."""

    DEVICE = "device"
    WORKER = "worker"


STATE_FORMAT = "vlaforge.corpus-loader-state/1"
CHECKPOINT_FORMAT = "vlaforge.corpus-loader-checkpoint/1"


@dataclasses.dataclass(frozen=True)
class WorkerMessage:
    """What a worker sends the main process through the DataLoader: a `CorpusBatch` and the bookkeeping that rides
    with it. The loader keeps the bookkeeping (resume records, quarantined samples, stream counters) and yields only
    the batch."""

    batch: CorpusBatch
    worker: int
    """The slot's worker id (not the DataLoader's, which is rotated after a resume)."""
    resume: dict[str, Any]
    """The Batcher's resume record after this batch."""
    drops: list[Drop]
    """Samples quarantined since the worker's previous batch."""
    stream_stats: dict[str, Any]
    """The stream's counters (samples, shards opened, bad shards by reason)."""

    def pin_memory(self) -> "WorkerMessage":
        return dataclasses.replace(self, batch=self.batch.pin_memory())


@dataclasses.dataclass(frozen=True)
class _Plan:
    """Everything a worker needs, picklable: the configs, this rank, the robot transform and the resume records."""

    config: "CorpusLoader.Config"
    rank: int
    world_size: int
    robot: RobotSampleTransform
    """Built once in the trainer's process: its `normalize` is the one the exported policy saves."""
    processor: ProcessorMixin | None
    """Loaded once in the trainer's process; workers inherit it (a Qwen tokenizer takes about a second to load)."""
    resume: dict[int, dict[str, Any]]
    rotation: int


class CorpusDataset(IterableDataset):
    """One rank's batches; each DataLoader worker iterates one stream slot (see the module docstring)."""

    def __init__(self, plan: _Plan) -> None:
        super().__init__()
        self.plan = plan

    def __iter__(self) -> Iterator[WorkerMessage]:
        info = get_worker_info()
        physical, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        config = self.plan.config
        if workers != max(config.num_workers, 1):
            raise RuntimeError(f"CorpusDataset was planned for {config.num_workers} workers, runs in {workers}")
        worker = (physical + self.plan.rotation) % workers
        stream = CorpusStream(config.corpus_url, rank=self.plan.rank, world_size=self.plan.world_size,
                              worker_id=worker, num_workers=workers, seed=config.seed, split=config.split,
                              one_pass=config.one_pass, verify_sha256=config.verify_sha256, config=config.stream,
                              kinds=config.kinds)
        vl = None
        if self.plan.processor is not None:
            vl = VlSampleTransform(VlSampleTransform.Config(processor=config.processor,
                                                            max_length=config.vl_max_length), self.plan.processor)
        collate = make_collate(None if vl is None else vl.processor, 0 if vl is None else vl.pad_token_id,
                               config.robot_vlm_inputs, pixels_on_device=config.robot_pixels is RobotPixels.DEVICE)
        batcher = Batcher(config.batch, collate, stream.state_dict)
        if worker in self.plan.resume:
            stream.load_state_dict(batcher.load(self.plan.resume[worker]))
        transforms = {ComponentKind.ROBOT: self.plan.robot, ComponentKind.VL: vl}
        try:
            yield from self._batches(stream, batcher, transforms, worker)
        finally:
            stream.close()

    def _batches(self, stream: CorpusStream, batcher: Batcher, transforms: Mapping[ComponentKind, Any],
                 worker: int) -> Iterator[WorkerMessage]:
        policy, budget = self.plan.config.bad_samples, self.plan.config.bad_sample_budget
        drops: list[Drop] = []
        skipped: list[Drop] = []
        samples = iter(stream)
        while True:
            batcher.before_draw()
            raw = next(samples, None)
            if raw is None:
                break
            kind = ComponentKind(raw[StreamField.KIND.value])
            index = batcher.draw(kind)
            if index is None:
                continue
            try:
                example = transforms[kind](raw)
            except BadSampleError as error:
                bad_samples.handle(error, policy, drops)
                skipped.append(drops[-1])
                log.warning("skipped a bad sample (%s): %s [%d skipped of %d drawn by this worker; it stops past "
                            "%.2f%%]", error.reason.value, error, len(skipped), stream.stats["samples"],
                            100 * budget.max_fraction)
                budget.check(skipped, stream.stats["samples"])  # here: a stream of nothing but bad samples ends too
                continue
            for batch, resume in batcher.add(index, kind, example):
                yield WorkerMessage(batch, worker, resume, drops, _plain(stream.stats))
                drops = []
        for batch, resume in batcher.finish():  # a one-pass stream ends: its partial batches go out
            yield WorkerMessage(batch, worker, resume, drops, _plain(stream.stats))
            drops = []


def _forgive_inherited_exit_hooks(worker_id: int) -> None:
    """Worker init: the thread-exit hooks inherited from the trainer's process may fail without failing the worker.

    `threading._threading_atexits` is CPython's (private) list of the hooks `threading._register_atexit` takes, which
    `threading._shutdown()` runs at a process's exit, multiprocessing's workers included; a fork copies it. See the
    module docstring for why.
    """
    hooks = getattr(threading, "_threading_atexits", None)
    if hooks:
        hooks[:] = [functools.partial(_run_inherited_hook, worker_id, hook) for hook in hooks]


def _run_inherited_hook(worker_id: int, hook: Callable[[], Any]) -> None:
    try:
        hook()
    except Exception as error:  # the hook's service thread lives in the trainer's process, not in this worker
        log.debug("loader worker %d: a thread-exit hook inherited from the trainer's process failed at exit (%r); "
                  "passed over", worker_id, error)


def _plain(stats: Mapping[str, Any]) -> dict[str, Any]:
    """The stream's counters as JSON-able data (Counters become dicts)."""
    return json.loads(json.dumps(stats))


class CorpusLoader:
    """One rank's iterator of `CorpusBatch`es over a corpus manifest URL: endless, or one pass of a split for
    evaluation (see the module docstring)."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config:
        corpus_url: str
        """The corpus manifest: a path, file://, http(s):// or s3:// URL."""
        processor: str | None = None
        """Qwen3-VL processor (directory or hub id): tokenizes VL samples, and each robot sample's frames +
        instruction when `robot_vlm_inputs`. None: robot batches carry frames only, and VL components are refused."""
        robot_vlm_inputs: bool = True
        """Tokenize robot samples' frames + instruction in the workers (needs `processor`)."""
        robot_pixels: RobotPixels = RobotPixels.DEVICE
        """Where a robot batch's pixel values are made: on the training device from the uint8 frames
        (`to_device`; the frames cross the process boundary once, as uint8), or in the worker (the processor's
        float32 patches travel beside the frames, about 8x their size)."""
        robot: RobotSampleTransform.Config = dataclasses.field(default_factory=RobotSampleTransform.Config)
        """Frame size, cameras, chunk length, normalization."""
        vl_max_length: int = 4096
        """VL samples with more tokens are bad samples (truncation would cut images or answers)."""
        batch: Batcher.Config = dataclasses.field(default_factory=Batcher.Config)
        """Batch size (per rank) and mixing policy."""
        num_workers: int = 2
        """DataLoader worker processes, each one stream slot; 0 runs the stream in the trainer's process."""
        prefetch_factor: int = 2
        """Batches each worker prepares ahead."""
        pin_memory: bool = False
        """Page-locked batches for asynchronous copies to a GPU."""
        seed: int | None = None
        """Shard order and shuffle seed; None: the corpus manifest's."""
        split: str = "train"
        """The split of every component to read."""
        one_pass: bool = False
        """Evaluation: every sample of `split` exactly once over all ranks and workers, each component in full (no
        mixture draw), then the loop ends; each `for` over the loader is one whole pass."""
        verify_sha256: bool = False
        """Check every shard's sha256 before using it (remote shards are spooled while hashed)."""
        stream: CorpusStream.Config = dataclasses.field(default_factory=CorpusStream.Config)
        """Shuffle block, interleave, bad-shard policy, retries and S3 options."""
        bad_samples: BadSamplePolicy = BadSamplePolicy.RAISE
        """What a sample that does not decode does: stop the run ("raise"), or be skipped, logged and counted
        ("skip")."""
        bad_sample_budget: BadSampleBudget = BadSampleBudget()
        """Under "skip": the share of the samples drawn that may be skipped before the run stops."""
        kinds: tuple[str, ...] = (ComponentKind.ROBOT.value, ComponentKind.VL.value)
        """The component kinds to read: the stream opens only these components and draws among them, so leaving
        "vl" out reads no VL sample at all (a robot-only training phase)."""

        def __post_init__(self) -> None:
            object.__setattr__(self, "bad_samples", BadSamplePolicy(self.bad_samples))
            object.__setattr__(self, "robot_pixels", RobotPixels(self.robot_pixels))
            object.__setattr__(self, "kinds", tuple(ComponentKind(kind).value for kind in self.kinds))
            if not self.kinds:
                raise ValueError("CorpusLoader.Config.kinds must name at least one kind (robot, vl)")
            if self.num_workers < 0:
                raise ValueError(f"CorpusLoader.Config.num_workers must be >= 0, got {self.num_workers}")
            if self.prefetch_factor < 1:
                raise ValueError(f"CorpusLoader.Config.prefetch_factor must be >= 1, got {self.prefetch_factor}")
            if self.robot_vlm_inputs and self.processor is None:
                object.__setattr__(self, "robot_vlm_inputs", False)

    def __init__(self, config: Config, *, rank: int = 0, world_size: int = 1) -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"CorpusLoader: rank {rank} must be in [0, world_size={world_size})")
        self.config = config
        self.rank = rank
        self.world_size = world_size
        self.stats = self._load_stats()
        """{component: stats.json document} of every robot component."""
        self.robot_transform = config.robot.build(self.stats)
        """Decodes, normalizes and pads robot samples in the workers."""
        self.processor = None if config.processor is None else AutoProcessor.from_pretrained(config.processor)
        self.quarantined: dict[tuple[str, str], Drop] = {}
        self.skipped: list[Drop] = []
        """Every skip, in order (a sample skipped in two epochs is here twice)."""
        self.stream_stats: dict[int, dict[str, Any]] = {}
        self._records: dict[int, dict[str, Any]] = {}
        self._next_worker = 0
        self._batches = 0
        self._iterator: Iterator[WorkerMessage] | None = None
        self._receiver: BatchReceiver[WorkerMessage] | None = None

    @property
    def normalize(self) -> Normalize:
        """The state and action normalization of the corpus's embodiments, as the workers apply it: the trainer
        exports this object with the policy."""
        return self.robot_transform.normalize

    @property
    def slots(self) -> int:
        """Stream slots of this rank (DataLoader workers, or 1 in-process)."""
        return max(self.config.num_workers, 1)

    def __iter__(self) -> Iterator[CorpusBatch]:
        self.close()
        plan = _Plan(self.config, self.rank, self.world_size, self.robot_transform, self.processor,
                     dict(self._records), self._next_worker)
        options: dict[str, Any] = {}
        if self.config.num_workers:
            options = {"prefetch_factor": self.config.prefetch_factor, "persistent_workers": False,
                       "worker_init_fn": _forgive_inherited_exit_hooks}
        loader = DataLoader(CorpusDataset(plan), batch_size=None, num_workers=self.config.num_workers,
                            pin_memory=self.config.pin_memory, **options)
        self._iterator = iterator = iter(loader)
        messages: Iterable[WorkerMessage] = iterator
        if self.config.num_workers:
            self._receiver = messages = BatchReceiver(iterator, depth=self.config.prefetch_factor,
                                                      name=f"corpus-loader-rank{self.rank}")
        try:
            for item in messages:
                self._take(item)
                yield item.batch
            if self.config.one_pass:  # the pass is complete: the next `for` starts the next one
                self._records, self._next_worker = {}, 0
        finally:
            if self._iterator is iterator:
                self.close()

    def to_device(self, batch: CorpusBatch, device: torch.device | str) -> CorpusBatch:
        """`batch` ready for the model on `device`: tensors moved, robot pixel values made there (`robot_pixels`)."""
        image_processor = None if self.processor is None else self.processor.image_processor
        return device_batch.to_device(batch, device, image_processor)

    def close(self) -> None:
        """Shut the current iteration's workers down now (they close their shards and exit); idempotent.

        Leaving a `for` loop early does this too, as soon as the loop's iterator is let go; an exception's traceback
        can hold it much longer, so a trainer that stops iterating before the end should call `close()` or use the
        loader as a context manager. The position (`state_dict()`) is kept: the next `for` continues from it.
        """
        receiver, self._receiver = self._receiver, None
        if receiver is not None:
            receiver.stop()
        iterator, self._iterator = self._iterator, None
        shutdown = getattr(iterator, "_shutdown_workers", None)  # torch's multiprocessing iterator (idempotent)
        if shutdown is not None:
            shutdown()

    def __enter__(self) -> "CorpusLoader":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _take(self, item: WorkerMessage) -> None:
        self._records[item.worker] = item.resume
        self._next_worker = (item.worker + 1) % self.slots
        self.stream_stats[item.worker] = item.stream_stats
        self._batches += 1
        if item.drops:
            self._skip(item.drops)

    def _skip(self, drops: list[Drop]) -> None:
        """Keep the samples a worker skipped (it logged each, and holds them to the budget)."""
        for drop in drops:
            self.skipped.append(drop)
            self.quarantined.setdefault((drop.file, drop.episode), drop)

    def quarantine_counts(self) -> dict[str, int]:
        """Quarantined samples per reason."""
        return count_by_reason(list(self.quarantined.values()))

    def state_dict(self) -> dict[str, Any]:
        """This rank's position: per worker, the resume record of the last batch taken; JSON-able."""
        workers = {}
        for worker in range(self.slots):
            # A worker that has not delivered a batch yet resumes from its stream's start.
            workers[str(worker)] = self._records.get(worker) or {"stream": self._fresh_state(worker), "skip": {}}
        return {"format": STATE_FORMAT, "rank": self.rank, "world_size": self.world_size, "num_workers": self.slots,
                "next_worker": self._next_worker, "batches": self._batches, "workers": workers}

    @staticmethod
    def combine(states: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """One checkpoint from every rank's `state_dict()`, to resume with a different number of ranks or workers."""
        ranks = sorted(state["rank"] for state in states)
        world = {state["world_size"] for state in states}
        if len(world) != 1 or ranks != list(range(world.pop())):
            raise ValueError(f"CorpusLoader.combine needs the state of every rank once; got ranks {ranks}")
        streams = [record["stream"] for state in states for record in state["workers"].values()]
        return {"format": CHECKPOINT_FORMAT, "streams": combine_states(streams)}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume from this rank's `state_dict()` (same ranks and workers), or from `combine()` of every rank's."""
        if state.get("format") == STATE_FORMAT and (state["world_size"], state["num_workers"]) == (
                self.world_size, self.slots):
            if state["rank"] != self.rank:
                raise ValueError(f"the loader state is rank {state['rank']}'s; this loader is rank {self.rank}")
            self._records = {int(worker): record for worker, record in state["workers"].items()}
            self._next_worker = int(state["next_worker"])
            self._batches = int(state["batches"])
            return
        if state.get("format") == STATE_FORMAT and state["world_size"] == 1:
            state = self.combine([state])  # one rank held every slot: its state is a whole checkpoint
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(
                f"the loader state was saved with {state.get('world_size')} ranks x {state.get('num_workers')} "
                f"workers, this loader has {self.world_size} x {self.slots}; pass CorpusLoader.combine(states of "
                "every rank) to resume elastically")
        if self.config.batch.policy.value != "mixed":
            log.warning("elastic resume under %s: samples consumed after a kind's oldest waiting sample are read "
                        "again", self.config.batch.policy.value)
        self._records = {worker: {"stream": state["streams"], "skip": {}} for worker in range(self.slots)}
        self._next_worker = 0

    def _fresh_state(self, worker: int) -> dict[str, Any]:
        config = self.config
        stream = CorpusStream(config.corpus_url, rank=self.rank, world_size=self.world_size, worker_id=worker,
                              num_workers=self.slots, seed=config.seed, split=config.split,
                              one_pass=config.one_pass, config=config.stream, kinds=config.kinds)
        return stream.state_dict()

    def _load_stats(self) -> dict[str, dict[str, Any]]:
        """{component: stats.json document} of every robot component, read from the manifest's statistics URLs."""
        opener = ShardOpener(self.config.stream.opener)
        url = self.config.corpus_url
        manifest = CorpusManifest.from_json(opener.read_bytes(url), url)
        reads_vl = ComponentKind.VL.value in self.config.kinds
        if self.config.processor is None and reads_vl and any(c.kind is ComponentKind.VL for c in manifest.components):
            raise CorpusError(f"{url}: the corpus has VL components; set CorpusLoader.Config.processor to the "
                              "Qwen3-VL processor that tokenizes them")
        stats = {}
        for component in manifest.components:
            if component.kind is ComponentKind.ROBOT:
                if not component.stats_url:
                    raise CorpusError(f"{url}: robot component {component.name!r} has no stats_url")
                stats_url = resolve_url(url, component.stats_url)
                stats[component.name] = json.loads(opener.read_bytes(stats_url))
        return stats
