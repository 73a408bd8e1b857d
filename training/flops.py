"""How much arithmetic a training step does, and how much one device could do: the MFU estimate's two halves.

A step's model FLOPs are counted from parameters and tokens, the usual way (2 per parameter per token forward, 4
more backward where the parameters train), per tower: the VLM's language model over its text and image tokens, its
vision tower over the image patches, the DiT over its (2 + T) tokens per noise draw. Attention's quadratic term,
the error-weighting sampling pass and activation recomputation are left out: the estimate is of useful work, so
MFU falls when checkpointing recomputes.
"""

from __future__ import annotations

import dataclasses

from torch import nn

PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "RTX 4090": 165.0, "A10G": 70.0}
"""Dense bf16 tensor-core peaks (NVIDIA's data sheets, SXM parts), by a name `torch.cuda.get_device_name` contains."""


@dataclasses.dataclass(frozen=True)
class ParamCounts:
    """Parameters per tower (embedding tables excluded: a lookup is not a matmul)."""

    text: int
    vision: int
    dit: int
    head: int
    """Step 1's Choice Policies head (0 in other phases)."""

    @classmethod
    def of(cls, model: nn.Module, dit: nn.Module, vlm_text: nn.Module, vlm_vision: nn.Module,
           head: nn.Module | None) -> "ParamCounts":
        def count(module: nn.Module | None) -> int:
            if module is None:
                return 0
            embeddings = sum(p.numel() for m in module.modules() if isinstance(m, nn.Embedding) for p in m.parameters())
            return sum(p.numel() for p in module.parameters()) - embeddings

        return cls(text=count(vlm_text), vision=count(vlm_vision), dit=count(dit), head=count(head))


@dataclasses.dataclass(frozen=True)
class StepWork:
    """What one micro batch ran through the model."""

    vlm_tokens: int
    """Text and image tokens through the language model (robot prompts, step 1's appended tokens, VL samples)."""
    vision_patches: int
    """Patches through the vision tower."""
    dit_tokens: int
    """DiT tokens: draws (samples × training_repeat) × (2 + T)."""


def step_flops(counts: ParamCounts, work: StepWork, *, trains_vlm: bool, trains_dit: bool) -> float:
    """Model FLOPs of one micro batch: 2·N·tokens forward, 6·N·tokens where the tower trains."""
    vlm = 6 if trains_vlm else 2
    dit = 6 if trains_dit else 2
    return (vlm * (counts.text + counts.head) * work.vlm_tokens + vlm * counts.vision * work.vision_patches
            + (dit * counts.dit * work.dit_tokens if work.dit_tokens else 0))


def peak_tflops(device_name: str | None, bf16: bool) -> float | None:
    """One device's dense bf16 peak from its name, or None (unknown GPU, the CPU, or fp32)."""
    if device_name is None or not bf16:
        return None
    return next((peak for name, peak in PEAK_BF16_TFLOPS.items() if name in device_name), None)
