"""The inference policy: raw observation in, a chunk of robot-unit actions out; saved and loaded as one directory.

A saved policy directory holds:
- `policy.json`: the VLA config (DiT, flow matching, prefix, mask kind) and the format version;
- `dit.safetensors`: the DiT's weights;
- `norm_stats.json`: the `Normalize` the loader trained with (statistics per embodiment, in the pipelines' layout);
- `vlm/`: a complete Hugging Face Qwen3-VL checkpoint (config.json, safetensors) with its processor and tokenizer,
  which `Qwen3VLForConditionalGeneration.from_pretrained` and `AutoProcessor.from_pretrained` read on their own.
Nothing is pickled: weights go through safetensors, and loading refuses pickle-based `.bin` weights.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
from collections.abc import Sequence

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoProcessor, ProcessorMixin

from vlaforge.training.data.normalization import Normalize
from vlaforge.training.model.vla import VLAConfig, VLAModel
from vlaforge.training.model.vlm import VLMBackbone

POLICY_CONFIG = "policy.json"
DIT_WEIGHTS = "dit.safetensors"
NORM_STATS = "norm_stats.json"
VLM_DIR = "vlm"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
"""Version 1 named the action chunk `chunk_length` (read as `chunk_len`)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Observation:
    """What the robot gives the policy at one control tick."""

    images: Sequence[np.ndarray]
    """One [H, W, 3] uint8 frame per camera, in the embodiment's camera order."""
    instruction: str
    """The language instruction."""
    state: np.ndarray
    """[D_s] proprioceptive state in robot units (native dimensions)."""
    embodiment: str
    """Key of the normalization statistics (the robot type)."""


class Policy:
    """A VLA model with its processor and the normalization it was trained with."""

    def __init__(self, model: VLAModel, processor: ProcessorMixin, normalize: Normalize) -> None:
        self.model = model.eval()
        self.processor = processor
        self.normalize = normalize
        widths = (model.config.dit.state_dim, model.config.dit.action_dim)
        for name in normalize.embodiments:
            dims = (normalize.state_dim(name), normalize.action_dim(name))
            if dims[0] > widths[0] or dims[1] > widths[1]:
                raise ValueError(f"embodiment {name!r} has {dims} state/action dims, more than the model's {widths}")

    @property
    def chunk_len(self) -> int:
        return self.model.config.dit.chunk_len

    def vlm_inputs(self, observation: Observation) -> dict[str, torch.Tensor]:
        """The processor's tensors for the images and instruction of one observation (batch of 1)."""
        content = [{"type": "image"} for _ in observation.images]
        content.append({"type": "text", "text": observation.instruction})
        text = self.processor.apply_chat_template([{"role": "user", "content": content}], tokenize=False)
        images = list(observation.images) or None
        device = self.model.dit.sink.device
        return {k: v.to(device) for k, v in self.processor(text=[text], images=images, return_tensors="pt").items()}

    def infer(
        self,
        observation: Observation,
        *,
        prefix: np.ndarray | None = None,
        generator: torch.Generator | None = None,
    ) -> np.ndarray:
        """A chunk [T, D_a] of actions in robot units.

        `prefix` [Δtc, D_a], in robot units, is the actions already committed for the chunk's first Δtc steps
        (asynchronous execution); the chunk starts with exactly them. `generator` seeds the initial noise.
        """
        embodiment = observation.embodiment
        state, _ = Normalize.pad(self.normalize.normalize_state(embodiment, observation.state),
                                 self.model.config.dit.state_dim)
        width, action_dim = self.model.config.dit.action_dim, self.normalize.action_dim(embodiment)
        _, action_mask = Normalize.pad(np.zeros(action_dim, dtype=np.float32), width)
        device = self.model.dit.sink.device
        noise = torch.randn(1, self.chunk_len, width, generator=generator).to(device)
        prefix_chunk, prefix_lengths = self._prefix_tensors(prefix, embodiment, width, device)
        chunk = self.model.sample_actions(
            self.vlm_inputs(observation),
            torch.from_numpy(state)[None].to(device),
            torch.from_numpy(action_mask)[None].to(device),
            noise,
            prefix_chunk,
            prefix_lengths,
        )
        actions = self.normalize.unnormalize_actions(embodiment, chunk[0, :, :action_dim].cpu().numpy())
        if prefix is not None:
            # The sampler holds the prefix fixed in normalized space; restore the caller's exact values rather than
            # their float round trip through the normalization.
            actions[: len(prefix)] = prefix
        return actions

    def _prefix_tensors(self, prefix, embodiment, width, device) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """The prefix as a padded normalized chunk [1, T, A] and its length [1], or (None, None)."""
        if prefix is None or len(prefix) == 0:
            return None, None
        prefix = np.asarray(prefix, dtype=np.float32)
        action_dim = self.normalize.action_dim(embodiment)
        if prefix.ndim != 2 or prefix.shape[1] != action_dim or len(prefix) >= self.chunk_len:
            raise ValueError(f"prefix must be [Δtc < {self.chunk_len}, {action_dim}], got {prefix.shape}")
        padded, _ = Normalize.pad(self.normalize.normalize_actions(embodiment, prefix), width)
        chunk = np.zeros((1, self.chunk_len, width), dtype=np.float32)
        chunk[0, : len(prefix)] = padded
        return torch.from_numpy(chunk).to(device), torch.tensor([len(prefix)], device=device)

    def save_pretrained(self, directory: str | os.PathLike) -> pathlib.Path:
        """Write the policy directory described in this module's docstring."""
        directory = pathlib.Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.model.vlm.save_pretrained(directory / VLM_DIR)
        self.processor.save_pretrained(directory / VLM_DIR)
        state = {name: tensor.detach().contiguous().cpu() for name, tensor in self.model.dit.state_dict().items()}
        save_file(state, directory / DIT_WEIGHTS, metadata={"format": "vlaforge-dit"})
        self.normalize.save(directory / NORM_STATS)
        document = {"format_version": FORMAT_VERSION, "vla": self.model.config.to_dict()}
        (directory / POLICY_CONFIG).write_text(json.dumps(document, indent=1))
        return directory

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike, *, dtype: torch.dtype | None = None, device: str | torch.device = "cpu"
    ) -> "Policy":
        """Load a directory written by `save_pretrained`, through the VLM's own `from_pretrained`."""
        directory = pathlib.Path(directory)
        document = json.loads((directory / POLICY_CONFIG).read_text())
        if document.get("format_version") not in READABLE_VERSIONS:
            raise ValueError(f"{directory / POLICY_CONFIG}: format_version {document.get('format_version')!r}, "
                             f"this code reads {' and '.join(map(str, READABLE_VERSIONS))}")
        config = VLAConfig.from_dict(document["vla"])
        vlm = VLMBackbone.from_pretrained(directory / VLM_DIR, num_kv_layers=config.dit.num_layers, dtype=dtype)
        model = VLAModel(vlm, config)
        model.dit.load_state_dict(load_file(directory / DIT_WEIGHTS), strict=True)
        model.to(device=device, dtype=dtype) if dtype is not None else model.to(device)
        processor = AutoProcessor.from_pretrained(directory / VLM_DIR)
        return cls(model, processor, Normalize.load(directory / NORM_STATS))
