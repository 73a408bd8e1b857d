"""A VL sample from a shard -> Qwen3-VL inputs with next-token labels on the assistant's turns only.

The sample's `<i>.jpg` images and `conversation.json` (Hugging Face chat format) go through the processor's own chat
template and `__call__`, so the tokens are exactly what the model sees at inference:
input_ids, attention_mask, mm_token_type_ids [S], pixel_values [P, C·t·p·p], image_grid_thw [N_img, 3].
Labels equal input_ids on each assistant turn's content and its closing `<|im_end|>` (so the model learns to stop),
and -100 everywhere else: system and user turns, the image tokens, and the `<|im_start|>assistant\\n` headers.
Content that starts with a newline loses that newline from supervision (it merges into the header's newline token).

Frames much larger than what the image processor resizes to are decoded at a reduced DCT scale first.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import simplejpeg
import torch
from transformers import AutoProcessor, ProcessorMixin
from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

from vlaforge.datasets.drops import DropReason
from vlaforge.datasets.schema import ChatRole, VlMetaField, VlSampleKey
from vlaforge.pipelines.shards.reader import StreamField
from vlaforge.pipelines.vl_samples import VlSampleError, check_conversation
from vlaforge.training.data.bad_samples import BadSampleError

IGNORE_INDEX = -100
"""Label of a position that carries no loss (the value transformers' cross-entropy ignores)."""
TURN_START, TURN_END = "<|im_start|>", "<|im_end|>"


@dataclasses.dataclass(frozen=True)
class VlExample:
    """One VL sample, tokenized; tensors have no batch dimension."""

    key: str
    component: str
    epoch: int
    """The component's epoch this sample was drawn in (0 when read outside a corpus stream)."""
    task: str
    input_ids: torch.Tensor
    """[S] int64."""
    mm_token_type_ids: torch.Tensor
    """[S] int64: 1 on image tokens, 0 on text."""
    labels: torch.Tensor
    """[S] int64: input_ids on assistant content, IGNORE_INDEX elsewhere."""
    pixel_values: torch.Tensor
    """[P, C·t·p·p] float32 patches of all the sample's images."""
    image_grid_thw: torch.Tensor
    """[N_img, 3] int64 patch grid (t, h, w) of each image."""


def supervised_positions(input_ids: Sequence[int], start_id: int, end_id: int,
                         headers: Sequence[Sequence[int]], newline_ids: frozenset[int]) -> np.ndarray:
    """[S] bool: the content and closing token of every turn whose header (`start_id` + one of `headers`) matches.

    A turn runs from the token after its header's newline to its `end_id` inclusive (to the end of the sequence
    when unterminated). `newline_ids` are the tokens that can follow a header (a newline, possibly merged with the
    content's own leading newlines).
    """
    ids = np.asarray(input_ids)
    mask = np.zeros(len(ids), dtype=bool)
    ends = np.flatnonzero(ids == end_id)
    for start in np.flatnonzero(ids == start_id):
        for header in headers:
            body = start + 1 + len(header)
            if list(ids[start + 1:body]) != list(header) or body >= len(ids):
                continue
            if int(ids[body]) not in newline_ids:
                raise ValueError(f"the chat template puts token {int(ids[body])} after a role header, not a newline; "
                                 f"this label masking expects Qwen's '<|im_start|>role\\n' layout")
            later = ends[ends > body]
            mask[body + 1:(later[0] + 1 if len(later) else len(ids))] = True
    return mask


class VlSampleTransform:
    """Maps a raw VL sample dict (members undecoded bytes) to a `VlExample`. Call `setup()` once per worker."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config:
        processor: str
        """Directory or hub id of the Qwen3-VL processor, loaded with `AutoProcessor.from_pretrained`."""
        max_length: int = 4096
        """A sample with more tokens is quarantined (truncating would cut image tokens or the answer)."""
        trained_roles: tuple[str, ...] = (ChatRole.ASSISTANT.value,)
        """Roles whose turns carry labels."""
        reduced_decode: bool = True
        """Decode JPEGs at 1/2, 1/4 or 1/8 scale when still at least the processor's target size."""

        def __post_init__(self) -> None:
            if not self.processor:
                raise ValueError("VlSampleTransform.Config.processor must name a processor directory or hub id")
            if self.max_length < 8:
                raise ValueError(f"VlSampleTransform.Config.max_length must be >= 8, got {self.max_length}")
            roles = {role.value for role in ChatRole}
            if not self.trained_roles or not set(self.trained_roles) <= roles:
                raise ValueError(f"VlSampleTransform.Config.trained_roles must be among {sorted(roles)}, "
                                 f"got {self.trained_roles}")

        def build(self) -> "VlSampleTransform":
            return VlSampleTransform(self)

    def __init__(self, config: Config, processor: ProcessorMixin | None = None) -> None:
        self.config = config
        self.processor = processor
        if processor is not None:
            self._prepare()

    def setup(self) -> None:
        """Load the processor (once per worker)."""
        if self.processor is None:
            self.processor = AutoProcessor.from_pretrained(os.fspath(self.config.processor))
            self._prepare()

    @property
    def pad_token_id(self) -> int:
        tokenizer = self.processor.tokenizer
        return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def _prepare(self) -> None:
        tokenizer = self.processor.tokenizer
        self._start_id, self._end_id = tokenizer.convert_tokens_to_ids([TURN_START, TURN_END])
        self._headers = [tokenizer.encode(role, add_special_tokens=False) for role in self.config.trained_roles]
        self._newlines = frozenset(i for text in ("\n", "\n\n", "\n\n\n")
                                   for i in tokenizer.encode(text, add_special_tokens=False)[:1])
        images = self.processor.image_processor
        size = getattr(images, "size", None) or {}
        self._resize = None
        if hasattr(images, "patch_size") and hasattr(images, "merge_size") and size.get("longest_edge"):
            self._resize = (images.patch_size * images.merge_size, size["shortest_edge"], size["longest_edge"])

    def __call__(self, sample: Mapping[str, Any]) -> VlExample:
        if self.processor is None:
            raise RuntimeError("VlSampleTransform.setup() must run before the transform is called")
        key, url = sample.get(VlSampleKey.KEY.value, "?"), sample.get(StreamField.URL.value, "?")
        conversation = self._json(sample, VlSampleKey.CONVERSATION.value, key, url)
        meta = self._json(sample, VlSampleKey.META.value, key, url)
        images = self._images(sample, key, url)
        try:
            check_conversation(key, conversation, len(images))
        except VlSampleError as error:
            raise BadSampleError(url=url, key=key, reason=DropReason.BAD_RECORD,
                                 message=f"{error}; fix the generator that wrote it") from None
        text = self.processor.apply_chat_template(conversation, tokenize=False)
        inputs = self.processor(text=[text], images=images or None, return_tensors="pt")
        ids = inputs["input_ids"][0]
        if len(ids) > self.config.max_length:
            raise BadSampleError(url=url, key=key, reason=DropReason.TOO_MANY_TOKENS,
                                 message=f"{len(ids)} tokens exceed max_length {self.config.max_length}; raise "
                                         "VlSampleTransform.Config.max_length (CorpusLoader.Config.vl_max_length) "
                                         "or shrink the images")
        mask = torch.from_numpy(supervised_positions(ids.tolist(), self._start_id, self._end_id, self._headers,
                                                     self._newlines))
        return VlExample(
            key=key, component=sample.get(StreamField.COMPONENT.value, ""),
            epoch=int(sample.get(StreamField.EPOCH.value, 0)),
            task=meta.get(VlMetaField.TASK.value, ""),
            input_ids=ids, mm_token_type_ids=inputs["mm_token_type_ids"][0],
            labels=torch.where(mask, ids, torch.full_like(ids, IGNORE_INDEX)),
            pixel_values=inputs.get("pixel_values", torch.zeros(0, 0)),
            image_grid_thw=inputs.get("image_grid_thw", torch.zeros(0, 3, dtype=torch.long)),
        )

    @staticmethod
    def _json(sample: Mapping[str, Any], member: str, key: str, url: str) -> Any:
        raw = sample.get(member)
        if raw is None:
            raise BadSampleError(url=url, key=key, reason=DropReason.BAD_RECORD,
                                 message=f"{member} is missing; rewrite the shard")
        if not isinstance(raw, (bytes, str)):
            return raw
        try:
            return json.loads(raw)
        except ValueError as error:
            raise BadSampleError(url=url, key=key, reason=DropReason.BAD_RECORD,
                                 message=f"{member} is not JSON ({error}); rewrite the shard") from None

    def _images(self, sample: Mapping[str, Any], key: str, url: str) -> list[np.ndarray]:
        images = []
        while (data := sample.get(VlSampleKey.image(len(images)))) is not None:
            try:
                images.append(self._decode(data))
            except ValueError as error:
                raise BadSampleError(url=url, key=key, reason=DropReason.BAD_IMAGE,
                                     message=f"{VlSampleKey.image(len(images))} does not decode ({error}); "
                                             f"regenerate the sample") from None
        return images

    def _decode(self, data: bytes) -> np.ndarray:
        if not (self.config.reduced_decode and self._resize):
            return simplejpeg.decode_jpeg(data, colorspace="RGB")
        height, width, _, _ = simplejpeg.decode_jpeg_header(data)
        factor, min_pixels, max_pixels = self._resize
        target = smart_resize(height, width, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels)
        # smart_resize is not scale-invariant (it rounds to multiples of `factor`), so a reduced scale is taken only
        # when the processor would resize the smaller frame to the same grid: the tokens stay those of a full decode.
        for divisor in (8, 4, 2):
            size = (math.ceil(height / divisor), math.ceil(width / divisor))
            if size[0] >= target[0] and size[1] >= target[1] and smart_resize(
                    *size, factor=factor, min_pixels=min_pixels, max_pixels=max_pixels) == target:
                return simplejpeg.decode_jpeg(data, colorspace="RGB", min_height=size[0], min_width=size[1],
                                              min_factor=2)
        return simplejpeg.decode_jpeg(data, colorspace="RGB")
