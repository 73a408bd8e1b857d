"""A tiny random-weight Qwen3-VL checkpoint on disk, for tests, benchmarks and demos of the VLM code paths.

Written with `save_pretrained` (safetensors, config, processor with the real offline Qwen3 tokenizer and a Qwen3-VL
chat template), so the production loader reads it through `from_pretrained` exactly as it reads a real checkpoint.
Its answers are gibberish: use it for plumbing (shapes, batching, provenance, determinism), not for content.
"""

from __future__ import annotations

import pathlib


def write_tiny_qwen3_vl(directory: str | pathlib.Path, *, seed: int = 0, max_side: int = 64) -> pathlib.Path:
    """Save a tiny Qwen3-VL and its processor (images capped at max_side² pixels) under `directory`."""
    import torch
    from transformers import Qwen3VLForConditionalGeneration

    from vlaforge.training.model import presets

    directory = pathlib.Path(directory)
    torch.manual_seed(seed)
    Qwen3VLForConditionalGeneration(presets.qwen3_vl_tiny()).save_pretrained(directory)
    presets.tiny_processor(max_side=max_side).save_pretrained(directory)
    return directory
