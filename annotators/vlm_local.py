"""A local Qwen3-VL through transformers: `Qwen3VLForConditionalGeneration.from_pretrained` + `AutoProcessor`.

Requests are grouped by temperature and run in left-padded batches of `batch_size` through `generate`. Greedy
decoding (temperature 0) is deterministic for a given batch. JSON answers are asked for in the prompt only (no
constrained decoding here): `answer_validation` checks them. The model id and revision recorded in provenance come
from the Hugging Face cache path (`models--org--name/snapshots/<commit>`), the config fields, or a digest of the
weights files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import pathlib
import re
from collections.abc import Sequence
from typing import Any

import simplejpeg

from vlaforge.annotators.vlm_client import (
    FinishReason,
    VlmAnswer,
    VlmBackendConfig,
    VlmClient,
    VlmConfigError,
    VlmRequest,
)

logger = logging.getLogger(__name__)

_HUB_SNAPSHOT = re.compile(r"models--([^/]+)--([^/]+)/snapshots/([0-9a-f]{40})")
_DTYPES = ("auto", "float32", "bfloat16", "float16")


class LocalVlm(VlmClient):
    """Qwen3-VL (or any model `AutoProcessor` + `Qwen3VLForConditionalGeneration` load) on this machine."""

    backend = "local"

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(VlmBackendConfig):
        path: str
        """A local checkpoint directory (config.json, safetensors, processor files) or a hub id."""
        model_id: str | None = None
        """The name recorded in provenance; None derives it from the path (hub cache layout or directory name)."""
        revision: str | None = None
        """The revision recorded in provenance; None uses the hub commit, else a digest of the weights."""
        dtype: str = "auto"
        """"auto" (the checkpoint's own dtype), "float32", "bfloat16" or "float16"."""
        device: str = "auto"
        """"auto" (CUDA when available, else CPU), "cpu", "cuda" or "cuda:N"."""
        batch_size: int = 8
        """Requests per `generate` call."""
        max_pixels: int | None = None
        """Cap on pixels per image given to the processor; None keeps the checkpoint's setting."""
        seed: int = 0
        """Seeds sampling (temperature > 0), per batch, so reruns sample the same."""

        def __post_init__(self) -> None:
            if self.dtype not in _DTYPES:
                raise ValueError(f"LocalVlm.Config.dtype must be one of {_DTYPES}, got {self.dtype!r}")
            if self.batch_size < 1:
                raise ValueError(f"LocalVlm.Config.batch_size must be >= 1, got {self.batch_size}")

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.model: Any = None
        self.processor: Any = None
        self.model_id = ""
        self.revision = ""

    def setup(self) -> None:
        if self.model is not None:
            return
        import torch
        from transformers import AutoProcessor, Qwen3VLForConditionalGeneration

        path = self.config.path
        local = pathlib.Path(path).expanduser()
        if (path.startswith((".", "/", "~")) or local.exists()) and not (local / "config.json").is_file():
            raise VlmConfigError(f"{local} is not a checkpoint directory (no config.json); pass the directory "
                                 "save_pretrained / huggingface-cli download wrote")
        device = self.config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = "auto" if self.config.dtype == "auto" else getattr(torch, self.config.dtype)
        try:
            model = Qwen3VLForConditionalGeneration.from_pretrained(path, dtype=dtype, use_safetensors=True)
            processor = AutoProcessor.from_pretrained(path)
        except OSError as error:
            raise VlmConfigError(f"cannot load a Qwen3-VL checkpoint from {path!r}: {error}") from None
        self.model = model.to(device).eval()
        self.processor = processor
        self.processor.tokenizer.padding_side = "left"  # generation appends on the right
        if self.config.max_pixels is not None:
            self.processor.image_processor.max_pixels = self.config.max_pixels
        self.model_id, self.revision = self._identity(local if local.exists() else None)
        logger.info("loaded %s (%s) on %s", self.model_id, self.revision, device)

    def _identity(self, local: pathlib.Path | None) -> tuple[str, str]:
        snapshot = _HUB_SNAPSHOT.search(str(local.resolve())) if local else None
        model_id = self.config.model_id or (f"{snapshot[1]}/{snapshot[2]}" if snapshot else None)
        model_id = model_id or (local.resolve().name if local else self.config.path)
        revision = self.config.revision or (snapshot[3] if snapshot else None)
        revision = revision or getattr(self.model.config, "_commit_hash", None)
        return model_id, revision or (weights_digest(local) if local else "unknown")

    def close(self) -> None:
        self.model, self.processor = None, None

    def generate(self, requests: Sequence[VlmRequest]) -> list[VlmAnswer]:
        if self.model is None:
            raise RuntimeError("LocalVlm.generate before setup(): call setup() once per worker")
        answers: dict[int, VlmAnswer] = {}
        order = sorted(range(len(requests)), key=lambda i: requests[i].temperature)
        for temperature, group in itertools.groupby(order, key=lambda i: requests[i].temperature):
            indices = list(group)
            for start in range(0, len(indices), self.config.batch_size):
                batch = indices[start : start + self.config.batch_size]
                answers.update(zip(batch, self._batch([requests[i] for i in batch], temperature), strict=True))
        return [answers[i] for i in range(len(requests))]

    def _batch(self, requests: list[VlmRequest], temperature: float) -> list[VlmAnswer]:
        """Answers for requests sharing a temperature, in one `generate` call (bad images answered as errors)."""
        decoded, answers = [], {}
        for i, request in enumerate(requests):
            try:
                decoded.append((i, [simplejpeg.decode_jpeg(data, colorspace="RGB") for data in request.images]))
            except ValueError as error:
                answers[i] = self._answer("", FinishReason.ERROR, {}, f"image does not decode as JPEG: {error}")
        if decoded:
            answers.update(zip([i for i, _ in decoded], self._run([requests[i] for i, _ in decoded],
                                                                 [imgs for _, imgs in decoded], temperature)))
        return [answers[i] for i in range(len(requests))]

    def _run(self, requests: list[VlmRequest], images: list[list[Any]], temperature: float) -> list[VlmAnswer]:
        import torch

        texts = [self.processor.apply_chat_template(r.messages, add_generation_prompt=True, tokenize=False)
                 for r in requests]
        flat = [image for per_request in images for image in per_request]
        inputs = self.processor(text=texts, images=flat or None, return_tensors="pt", padding=True)
        inputs = inputs.to(self.model.device)
        stop_ids = self._stop_ids()
        sampling: dict[str, Any] = {"do_sample": False}
        if temperature > 0:
            torch.manual_seed(self.config.seed)
            sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
        with torch.inference_mode():
            output = self.model.generate(
                **inputs, max_new_tokens=max(r.max_new_tokens for r in requests), eos_token_id=stop_ids,
                pad_token_id=self.processor.tokenizer.pad_token_id or stop_ids[0], **sampling,
            )
        prompt_len = inputs["input_ids"].shape[1]
        prompt_tokens = inputs["attention_mask"].sum(dim=1).tolist()
        answers = []
        for row, request in enumerate(requests):
            tokens = output[row, prompt_len:].tolist()[: request.max_new_tokens]
            stop = next((k for k, token in enumerate(tokens) if token in stop_ids), None)
            kept = tokens if stop is None else tokens[:stop]
            text = self.processor.tokenizer.decode(kept, skip_special_tokens=True)
            usage = {"prompt_tokens": int(prompt_tokens[row]), "completion_tokens": len(kept)}
            answers.append(self._answer(text, FinishReason.STOP if stop is not None else FinishReason.LENGTH, usage))
        return answers

    def _stop_ids(self) -> list[int]:
        configured = self.model.generation_config.eos_token_id
        ids = list(configured) if isinstance(configured, list) else [configured] if configured is not None else []
        tokenizer = self.processor.tokenizer
        for token in ("<|im_end|>", "<|endoftext|>"):
            token_id = tokenizer.convert_tokens_to_ids(token)
            if isinstance(token_id, int) and token_id != tokenizer.unk_token_id and token_id not in ids:
                ids.append(token_id)
        if not ids:
            raise VlmConfigError(f"{self.config.path}: neither the generation config nor the tokenizer names an "
                                 "end-of-turn token (<|im_end|>); the checkpoint's tokenizer is incomplete")
        return ids

    def _answer(self, text: str, reason: FinishReason, usage: dict[str, int], error: str | None = None) -> VlmAnswer:
        return VlmAnswer(text=text, model_id=self.model_id, revision=self.revision,
                         usage={"prompt_tokens": 0, "completion_tokens": 0, **usage}, finish_reason=reason,
                         backend=self.backend, error=error)


def weights_digest(directory: pathlib.Path) -> str:
    """`sha256:<16 hex>` over config.json and every safetensors file of a checkpoint (content, in name order)."""
    digest = hashlib.sha256()
    for path in sorted([directory / "config.json", *directory.glob("*.safetensors")]):
        if path.is_file():
            digest.update(path.name.encode())
            with open(path, "rb") as file:
                while chunk := file.read(1 << 24):
                    digest.update(chunk)
    return "sha256:" + digest.hexdigest()[:16]
