"""The VLM half of the model: Qwen3-VL, run once on images + instruction, exposing its last layers' KV cache."""

from __future__ import annotations

import contextlib
import dataclasses
import os
from collections.abc import Iterator, Mapping

import torch
from torch import nn
from transformers import Qwen3VLConfig, Qwen3VLForConditionalGeneration

# Keys of a processed VLM batch, as Qwen3VLProcessor returns them.
INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
MM_TOKEN_TYPE_IDS = "mm_token_type_ids"
PIXEL_VALUES = "pixel_values"
IMAGE_GRID_THW = "image_grid_thw"


@dataclasses.dataclass(frozen=True, kw_only=True)
class AttentionGeometry:
    """The VLM text tower's attention shape, which every DiT layer must share to read its KV cache."""

    num_layers: int
    """Decoder layers of the language model."""
    hidden_size: int
    """Width of the language model's residual stream (and of its token embeddings)."""
    num_heads: int
    """Query heads of the language model."""
    num_kv_heads: int
    """Key/value heads (grouped-query attention)."""
    head_dim: int
    """Width of one head."""
    rope_theta: float
    """RoPE base of the language model."""
    rms_norm_eps: float
    """Epsilon of its RMSNorms, reused by the DiT's query/key norms."""


@dataclasses.dataclass(frozen=True)
class VLMContext:
    """What the DiT conditions on: the VLM's keys and values of its last L layers, and where the sequence ends."""

    keys: tuple[torch.Tensor, ...]
    """Per DiT layer, the matching VLM layer's rotated, normed keys [B, H_kv, S_vlm, head_dim]."""
    values: tuple[torch.Tensor, ...]
    """Per DiT layer, the matching VLM layer's values [B, H_kv, S_vlm, head_dim]."""
    valid: torch.Tensor
    """[B, S_vlm] true for real tokens, false for padding."""
    next_position: torch.Tensor
    """[B] the first RoPE position after each sample's last valid token: where the DiT sequence starts."""

    def repeat(self, times: int) -> "VLMContext":
        """Each sample's context `times` times in a row ([B·times, ...]): several noise draws of a sample share one
        VLM forward pass (`FlowMatchingConfig.training_repeat`)."""
        if times == 1:
            return self
        return VLMContext(keys=tuple(k.repeat_interleave(times, dim=0) for k in self.keys),
                          values=tuple(v.repeat_interleave(times, dim=0) for v in self.values),
                          valid=self.valid.repeat_interleave(times, dim=0),
                          next_position=self.next_position.repeat_interleave(times, dim=0))

    def select(self, rows: torch.Tensor) -> "VLMContext":
        """The context of the samples `rows` (indices [R] or a boolean mask [B])."""
        return VLMContext(keys=tuple(k[rows] for k in self.keys), values=tuple(v[rows] for v in self.values),
                          valid=self.valid[rows], next_position=self.next_position[rows])


class VLMBackbone(nn.Module):
    """Qwen3-VL plus the bookkeeping the DiT and the Choice Policies head need.

    `model` is a transformers `Qwen3VLForConditionalGeneration`; the DiT layer i reads VLM layer
    `num_layers - num_kv_layers + i`.
    """

    def __init__(self, model: Qwen3VLForConditionalGeneration, num_kv_layers: int = 16) -> None:
        super().__init__()
        layers = model.config.text_config.num_hidden_layers
        if not 1 <= num_kv_layers <= layers:
            raise ValueError(f"num_kv_layers must be in [1, {layers}] for this VLM, got {num_kv_layers}")
        self.model = model
        self.num_kv_layers = num_kv_layers

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        *,
        num_kv_layers: int = 16,
        dtype: torch.dtype | None = None,
        attn_implementation: str = "sdpa",
    ) -> "VLMBackbone":
        """Load Qwen3-VL from a local directory or a hub id, the way production does (safetensors only: no pickle)."""
        model = Qwen3VLForConditionalGeneration.from_pretrained(
            name_or_path, dtype=dtype, attn_implementation=attn_implementation, use_safetensors=True
        )
        return cls(model, num_kv_layers)

    @classmethod
    def from_config(cls, config: Qwen3VLConfig, *, num_kv_layers: int = 16) -> "VLMBackbone":
        """A randomly initialised Qwen3-VL (tiny tests, or the report-scale shape on the meta device)."""
        return cls(Qwen3VLForConditionalGeneration(config), num_kv_layers)

    def set_activation_checkpointing(self, enabled: bool) -> None:
        """Recompute activations in the backward pass instead of keeping them: the vision tower's blocks always,
        the language model's layers except while `encode` fills the KV cache the DiT reads (transformers drops the
        cache of a checkpointed layer, so those layers keep their activations there; the release checkpoints the
        vision tower only)."""
        for tower in (self.model.model.visual, self.model.model.language_model):
            if enabled:
                tower.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                tower.activation_checkpointing_disable()

    @contextlib.contextmanager
    def _text_layers_keep_cache(self) -> Iterator[None]:
        """Turn the language model's layer checkpointing off for one call that needs their KV cache."""
        layers = [m for m in self.model.model.language_model.modules() if getattr(m, "gradient_checkpointing", False)]
        for layer in layers:
            layer.gradient_checkpointing = False
        try:
            yield
        finally:
            for layer in layers:
                layer.gradient_checkpointing = True

    @property
    def geometry(self) -> AttentionGeometry:
        text = self.model.config.text_config
        return AttentionGeometry(
            num_layers=text.num_hidden_layers,
            hidden_size=text.hidden_size,
            num_heads=text.num_attention_heads,
            num_kv_heads=text.num_key_value_heads,
            head_dim=text.head_dim,
            rope_theta=float(text.rope_parameters["rope_theta"]),
            rms_norm_eps=text.rms_norm_eps,
        )

    def position_ids(self, inputs: Mapping[str, torch.Tensor], input_ids: torch.Tensor | None = None) -> torch.Tensor:
        """M-RoPE positions [3, B, S], computed here so no state is left on the HF model between calls."""
        input_ids = inputs[INPUT_IDS] if input_ids is None else input_ids
        types = inputs.get(MM_TOKEN_TYPE_IDS)
        types = torch.zeros_like(input_ids) if types is None else _pad_right(types, input_ids.shape[1], 0)
        mask = _pad_right(inputs[ATTENTION_MASK], input_ids.shape[1], 1)
        positions, _ = self.model.model.get_rope_index(
            input_ids, mm_token_type_ids=types, image_grid_thw=inputs.get(IMAGE_GRID_THW), attention_mask=mask
        )
        return positions

    def encode(self, inputs: Mapping[str, torch.Tensor]) -> VLMContext:
        """Run images + instruction once; return the KV cache of the last `num_kv_layers` layers."""
        positions = self.position_ids(inputs)
        with self._text_layers_keep_cache():
            output = self.model.model(
                input_ids=inputs[INPUT_IDS],
                attention_mask=inputs[ATTENTION_MASK],
                position_ids=positions,
                pixel_values=inputs.get(PIXEL_VALUES),
                image_grid_thw=inputs.get(IMAGE_GRID_THW),
                mm_token_type_ids=inputs.get(MM_TOKEN_TYPE_IDS),
                use_cache=True,
            )
        cache_layers = output.past_key_values.layers[-self.num_kv_layers :]
        valid = inputs[ATTENTION_MASK].bool()
        last = positions.amax(dim=0).masked_fill(~valid, -1).amax(dim=-1)
        return VLMContext(
            keys=tuple(layer.keys for layer in cache_layers),
            values=tuple(layer.values for layer in cache_layers),
            valid=valid,
            next_position=last + 1,
        )

    def hidden_of_appended(self, inputs: Mapping[str, torch.Tensor], appended: torch.Tensor) -> torch.Tensor:
        """Run the VLM with extra embeddings [B, E, D] after its input; return their last hidden states [B, E, D].

        The extra tokens come after any right padding, which the attention mask hides, and take the RoPE positions
        that follow each sample's last valid token, as text tokens would.
        """
        input_ids = inputs[INPUT_IDS]
        embeds = self.model.model.get_input_embeddings()(input_ids)
        embeds = torch.cat((embeds, appended.to(embeds.dtype)), dim=1)
        # Placeholder ids only size the position computation; the embeddings above are what the model reads.
        extended_ids = _pad_right(input_ids, embeds.shape[1], self.model.config.text_config.vocab_size - 1)
        mask = _pad_right(inputs[ATTENTION_MASK], embeds.shape[1], 1)
        output = self.model.model(
            inputs_embeds=embeds,
            attention_mask=mask,
            position_ids=self.position_ids(inputs, extended_ids),
            pixel_values=inputs.get(PIXEL_VALUES),
            image_grid_thw=inputs.get(IMAGE_GRID_THW),
        )
        return output.last_hidden_state[:, -appended.shape[1] :]

    def next_token_loss(self, inputs: Mapping[str, torch.Tensor], labels: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the VL co-training samples (labels [B, S], -100 where not supervised)."""
        positions = self.position_ids(inputs)
        return self.model(**dict(inputs), position_ids=positions, labels=labels).loss

    def save_pretrained(self, directory: str | os.PathLike) -> None:
        """Write the HF checkpoint (config.json + safetensors) that `from_pretrained` reads back."""
        self.model.save_pretrained(directory, safe_serialization=True)


def _pad_right(values: torch.Tensor, length: int, fill: int) -> torch.Tensor:
    """[B, S] -> [B, length], filled with `fill` on the right."""
    extra = length - values.shape[1]
    if extra == 0:
        return values
    return torch.cat((values, values.new_full((values.shape[0], extra), fill)), dim=1)
