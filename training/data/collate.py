"""Collation of robot and VL examples into batches, and the mixing policy that decides what shares a batch.

The corpus stream already draws VL and robot samples at the manifest's ratio (1:6); the policy only groups them:
- `MixPolicy.MIXED` (default): a batch is the next B samples of the stream, whatever their kind. Each batch holds
  both kinds in about the stream's ratio (a `CorpusBatch` with a robot part and a VL part, either may be absent),
  so every optimizer step sees both losses: the report's co-training.
- `MixPolicy.BY_KIND`: samples wait in one buffer per kind and a batch is emitted when a buffer holds B. Every batch
  is one kind; over many batches the kinds alternate in the stream's ratio (about 6 robot batches per VL batch).
  Use it when one step should run one loss, or when the kinds need different batch shapes.

Resuming exactly, under either policy. Every emitted batch carries a `resume` record: the stream's state before the
oldest sample still waiting in a buffer (the anchor), and for each buffer how many of its draws after the anchor
were already consumed (emitted in a batch, skipped as bad, or skipped on an earlier replay). Loading it, a worker
restores the stream to the anchor and replays: the consumed draws are dropped undecoded, the waiting ones are
buffered again. With nothing waiting (always the case under MIXED), the anchor is simply the current state.
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import enum
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from transformers import ProcessorMixin
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

from vlaforge.pipelines.corpus_manifest import ComponentKind as Kind
from vlaforge.training.data.robot_transform import RobotExample
from vlaforge.training.data.vl_transform import IGNORE_INDEX, VlExample
from vlaforge.training.model.vla import RobotBatch
from vlaforge.training.model.vlm import ATTENTION_MASK, IMAGE_GRID_THW, INPUT_IDS, MM_TOKEN_TYPE_IDS, PIXEL_VALUES


class MixPolicy(str, enum.Enum):
    """What shares a batch (see the module docstring)."""

    MIXED = "mixed"
    BY_KIND = "by_kind"


@dataclasses.dataclass(frozen=True)
class VlBatch:
    """A batch of VL samples, right-padded."""

    keys: list[str]
    components: list[str]
    epochs: list[int]
    tasks: list[str]
    inputs: dict[str, torch.Tensor]
    """input_ids, attention_mask, mm_token_type_ids [B, S]; pixel_values [ΣP, F] and image_grid_thw [ΣN_img, 3]
    when any sample has an image."""
    labels: torch.Tensor
    """[B, S] int64, IGNORE_INDEX off the assistant turns and on padding."""

    def __len__(self) -> int:
        return len(self.keys)


@dataclasses.dataclass(frozen=True)
class CorpusBatch:
    """What the loader yields: a robot part (the model's `RobotBatch`), a VL part, or both (MIXED)."""

    robot: RobotBatch | None
    vl: VlBatch | None

    def pin_memory(self) -> "CorpusBatch":
        """Every tensor of both parts in page-locked memory, for asynchronous host-to-GPU copies (the DataLoader's
        pin-memory thread calls this)."""
        return CorpusBatch(robot=_mapped_fields(self.robot, _pinned), vl=_mapped_fields(self.vl, _pinned))

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled (a batch leaving a DataLoader worker) with its tensors as numpy arrays, which travel inside the
        pickle through the worker's pipe. Left as tensors, torch's multiprocessing pickler would give each its own
        shared-memory file and file descriptor to pass and map: for a robot batch's dozen small tensors that cost the
        trainer several ms a batch, more than copying the few hundred KB."""
        parts = (self.robot, self.vl)
        return _batch_from_arrays, tuple(None if part is None else (type(part), _field_values(part, _as_array))
                                         for part in parts)

    def __len__(self) -> int:
        return sum(len(part) for part in (self.robot, self.vl) if part is not None)

    @property
    def keys(self) -> list[str]:
        return [key for part in (self.robot, self.vl) if part is not None for key in part.keys]


def _field_values(part: Any, convert: Callable[[Any], Any]) -> dict[str, Any]:
    """The dataclass `part`'s fields, each (also inside a dict) passed through `convert`."""
    return {f.name: _mapped(getattr(part, f.name), convert) for f in dataclasses.fields(part)}


def _mapped_fields(part: Any, convert: Callable[[Any], Any]) -> Any:
    """A copy of the dataclass `part` (or None) with `convert` applied to its values (also inside a dict)."""
    return None if part is None else dataclasses.replace(part, **_field_values(part, convert))


def _mapped(value: Any, convert: Callable[[Any], Any]) -> Any:
    if isinstance(value, dict):
        return {name: convert(item) for name, item in value.items()}
    return convert(value)


def _pinned(value: Any) -> Any:
    return value.pin_memory() if isinstance(value, torch.Tensor) else value


_NUMPY_DTYPES = {torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64, torch.bool, torch.float16,
                 torch.float32, torch.float64}
"""Tensor dtypes numpy holds as they are (bfloat16 is not among them: such a tensor travels as a tensor)."""


class _Array(np.ndarray):
    """A numpy array that stands for a tensor in a pickled batch (a plain ndarray field stays an ndarray)."""


def _as_array(value: Any) -> Any:
    if isinstance(value, torch.Tensor) and value.dtype in _NUMPY_DTYPES and not value.requires_grad:
        return value.detach().cpu().numpy().view(_Array)
    return value


def _as_tensor(value: Any) -> Any:
    return torch.from_numpy(value.view(np.ndarray)) if isinstance(value, _Array) else value


def _batch_from_arrays(*parts: tuple[type, dict[str, Any]] | None) -> "CorpusBatch":
    robot, vl = (None if part is None else part[0](**{name: _mapped(value, _as_tensor)
                                                      for name, value in part[1].items()}) for part in parts)
    return CorpusBatch(robot=robot, vl=vl)


def robot_prompt(n_images: int, instruction: str) -> list[dict[str, Any]]:
    """The robot sample's VLM input, as the policy builds it at inference: the frames, then the instruction."""
    content: list[dict[str, str]] = [{"type": "image"} for _ in range(n_images)]
    content.append({"type": "text", "text": instruction})
    return [{"role": "user", "content": content}]


def collate_robot(examples: Sequence[RobotExample], processor: ProcessorMixin | None = None, *,
                  pixels_on_device: bool = False, tokens: PromptTokens | None = None) -> RobotBatch:
    """Stack robot examples; with a processor, also tokenize each sample's present frames + instruction.

    `pixels_on_device`: make only the tokens (and `image_grid_thw`) here, exactly as the processor would
    (`PromptTokens`; pass `tokens` to keep its cache between batches), and leave `pixel_values` to
    `device_batch.to_device`, which runs the processor's own image code on the uint8 frames where the batch trains:
    the frames cross a process boundary once, as uint8, instead of also as float32 patches.
    """
    vlm_inputs = None
    if processor is not None:
        texts, images = [], []
        for example in examples:
            frames = [example.images[slot] for slot in np.flatnonzero(example.image_mask)]
            texts.append(processor.apply_chat_template(robot_prompt(len(frames), example.instruction), tokenize=False))
            images.extend(frames)
        if pixels_on_device:
            vlm_inputs = (tokens or PromptTokens(processor))(texts, [image.shape[:2] for image in images])
        else:
            vlm_inputs = dict(processor(text=texts, images=images, padding=True, padding_side="right",
                                        return_tensors="pt"))
    return RobotBatch(
        keys=[e.key for e in examples], components=[e.component for e in examples],
        epochs=[e.epoch for e in examples], embodiments=[e.embodiment for e in examples],
        instructions=[e.instruction for e in examples],
        images=torch.from_numpy(np.stack([e.images for e in examples])),
        image_mask=torch.from_numpy(np.stack([e.image_mask for e in examples])),
        state=torch.from_numpy(np.stack([e.state for e in examples])),
        state_mask=torch.from_numpy(np.stack([e.state_mask for e in examples])),
        actions=torch.from_numpy(np.stack([e.actions for e in examples])),
        action_mask=torch.from_numpy(np.stack([e.action_mask for e in examples])),
        valid_len=torch.tensor([e.valid_len for e in examples], dtype=torch.long),
        vlm_inputs=vlm_inputs,
    )


class PromptTokens:
    """What the Qwen3-VL processor returns for prompt texts and images of given sizes, without `pixel_values`: each
    image placeholder expanded to the image's token count, the ids right-padded, the multimodal token types, and
    `image_grid_thw` [N_img, 3]. Equal to the processor's own output (tested). A prompt's ids are kept once made
    (`cache_size` prompts): an episode's steps share their instruction, and so their prompt."""

    def __init__(self, processor: ProcessorMixin, cache_size: int = 4096) -> None:
        self.processor = processor
        image_processor = processor.image_processor
        self._patch, self._merge = image_processor.patch_size, image_processor.merge_size
        self._pixels = (image_processor.size.shortest_edge, image_processor.size.longest_edge)
        self._ids = functools.lru_cache(maxsize=cache_size)(self._encode)

    def __call__(self, texts: Sequence[str], image_sizes: Sequence[tuple[int, int]]) -> dict[str, torch.Tensor]:
        grids = [self._grid(height, width) for height, width in image_sizes]
        counts = iter(t * h * w // self._merge**2 for t, h, w in grids)
        rows = []
        for text in texts:
            images = text.count(self.processor.image_token)
            rows.append(self._ids(text, tuple(next(counts) for _ in range(images))))
        tokenizer = self.processor.tokenizer
        inputs = {INPUT_IDS: _pad([torch.tensor(row, dtype=torch.long) for row in rows], tokenizer.pad_token_id),
                  ATTENTION_MASK: _pad([torch.ones(len(row), dtype=torch.long) for row in rows], 0)}
        inputs[MM_TOKEN_TYPE_IDS] = (inputs[INPUT_IDS] == self.processor.image_token_id).long()
        inputs[IMAGE_GRID_THW] = torch.tensor(grids, dtype=torch.long).reshape(-1, 3)
        return inputs

    def _grid(self, height: int, width: int) -> list[int]:
        """[t, h, w] patches of an image, after the processor's own resize rule."""
        height, width = smart_resize(height, width, factor=self._patch * self._merge, min_pixels=self._pixels[0],
                                     max_pixels=self._pixels[1])
        return [1, height // self._patch, width // self._patch]

    def _encode(self, text: str, counts: tuple[int, ...]) -> tuple[int, ...]:
        """The ids of `text` with its i-th image placeholder repeated counts[i] times."""
        placeholder = self.processor.image_token
        pieces = text.split(placeholder)
        expanded = pieces[0] + "".join(placeholder * count + piece for count, piece in zip(counts, pieces[1:],
                                                                                            strict=True))
        return tuple(self.processor.tokenizer(expanded)[INPUT_IDS])


def _pad(rows: Sequence[torch.Tensor], fill: int) -> torch.Tensor:
    """[B] ragged 1-D tensors -> [B, max_len], right-padded with `fill`."""
    out = torch.full((len(rows), max(len(r) for r in rows)), fill, dtype=rows[0].dtype)
    for i, row in enumerate(rows):
        out[i, :len(row)] = row
    return out


def collate_vl(examples: Sequence[VlExample], pad_token_id: int) -> VlBatch:
    """Right-pad token rows; concatenate the images' patches and grids in sample order."""
    ids = [e.input_ids for e in examples]
    inputs = {
        INPUT_IDS: _pad(ids, pad_token_id),
        ATTENTION_MASK: _pad([torch.ones_like(i) for i in ids], 0),
        MM_TOKEN_TYPE_IDS: _pad([e.mm_token_type_ids for e in examples], 0),
    }
    with_images = [e for e in examples if len(e.image_grid_thw)]
    if with_images:
        inputs[PIXEL_VALUES] = torch.cat([e.pixel_values for e in with_images])
        inputs[IMAGE_GRID_THW] = torch.cat([e.image_grid_thw for e in with_images])
    return VlBatch(keys=[e.key for e in examples], components=[e.component for e in examples],
                   epochs=[e.epoch for e in examples], tasks=[e.task for e in examples], inputs=inputs,
                   labels=_pad([e.labels for e in examples], IGNORE_INDEX))


Collate = Callable[[list[RobotExample], list[VlExample]], CorpusBatch]


def make_collate(processor: ProcessorMixin | None, pad_token_id: int, robot_vlm_inputs: bool = True, *,
                 pixels_on_device: bool = False) -> Collate:
    """(robot examples, VL examples) -> CorpusBatch, with either list possibly empty."""

    robot_processor = processor if robot_vlm_inputs else None
    tokens = PromptTokens(robot_processor) if robot_processor is not None and pixels_on_device else None

    def collate(robot: list[RobotExample], vl: list[VlExample]) -> CorpusBatch:
        return CorpusBatch(
            robot=collate_robot(robot, robot_processor, pixels_on_device=pixels_on_device, tokens=tokens)
            if robot else None,
            vl=collate_vl(vl, pad_token_id) if vl else None,
        )

    return collate


@dataclasses.dataclass
class _Pending:
    index: int
    kind: Kind
    example: Any
    state: Any
    """The stream state before this draw, kept while it may become the anchor."""


class Batcher:
    """Groups a stream's examples into batches by `MixPolicy`, and makes every batch's resume record."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config:
        batch_size: int = 32
        """Samples per batch (per rank)."""
        policy: MixPolicy = MixPolicy.MIXED
        """What shares a batch."""

        def __post_init__(self) -> None:
            object.__setattr__(self, "policy", MixPolicy(self.policy))
            if self.batch_size < 1:
                raise ValueError(f"Batcher.Config.batch_size must be >= 1, got {self.batch_size}")

    def __init__(self, config: Config, collate: Collate, state_fn: Callable[[], Any]) -> None:
        self.config = config
        self.collate = collate
        self.state_fn = state_fn
        self.buffers: dict[str, list[_Pending]] = {}
        self.history: collections.deque[tuple[int, str]] = collections.deque()
        """(index, group) of every draw at or after the anchor."""
        self.skip: dict[str, int] = {}
        self.next_index = 0
        self._before: Any = None

    def group(self, kind: Kind) -> str:
        return "all" if self.config.policy is MixPolicy.MIXED else Kind(kind).value

    def load(self, resume: Mapping[str, Any]) -> Any:
        """Take a resume record; returns the stream state to restore before drawing again."""
        self.skip = {group: int(n) for group, n in resume["skip"].items()}
        return resume["stream"]

    def before_draw(self) -> None:
        """Call before each draw from the stream: keeps its state while the draw may start a buffer."""
        needed = self.config.policy is MixPolicy.BY_KIND or not self.buffers.get("all")
        self._before = copy.deepcopy(self.state_fn()) if needed else None

    def draw(self, kind: Kind) -> int | None:
        """Record one draw; its index, or None when it was consumed before a resume (drop it undecoded)."""
        index, group = self.next_index, self.group(kind)
        self.next_index += 1
        self.history.append((index, group))
        if self.skip.get(group, 0) > 0:
            self.skip[group] -= 1
            return None
        return index

    def add(self, index: int, kind: Kind, example: Any) -> list[tuple[CorpusBatch, dict[str, Any]]]:
        """Buffer a decoded example; returns the batches (with resume records) it completed."""
        buffer = self.buffers.setdefault(self.group(kind), [])
        buffer.append(_Pending(index, Kind(kind), example, self._before if not buffer else None))
        if len(buffer) < self.config.batch_size:
            return []
        return [self._emit(self.group(kind))]

    def finish(self) -> list[tuple[CorpusBatch, dict[str, Any]]]:
        """The partial batches left when the stream ends, oldest first."""
        order = sorted((buffer[0].index, group) for group, buffer in self.buffers.items() if buffer)
        return [self._emit(group) for _, group in order]

    def _emit(self, group: str) -> tuple[CorpusBatch, dict[str, Any]]:
        items = self.buffers.pop(group)
        batch = self.collate([p.example for p in items if p.kind is Kind.ROBOT],
                             [p.example for p in items if p.kind is Kind.VL])
        return batch, self._resume()

    def _resume(self) -> dict[str, Any]:
        waiting = [buffer[0] for buffer in self.buffers.values() if buffer]
        if not waiting:
            self.history.clear()
            return {"stream": copy.deepcopy(self.state_fn()), "skip": {}}
        # Only BY_KIND gets here, and only the kind not just emitted can be waiting: its oldest sample is the anchor,
        # and every draw of the other kind since then was consumed. Skips owed from an earlier resume are paid by
        # now: the emitted batch needed draws that come after every draw consumed before that resume's checkpoint.
        (anchor,) = waiting
        while self.history and self.history[0][0] < anchor.index:
            self.history.popleft()
        waiting_group = self.group(anchor.kind)
        skip = collections.Counter(group for _, group in self.history if group != waiting_group)
        return {"stream": copy.deepcopy(anchor.state), "skip": dict(skip)}
