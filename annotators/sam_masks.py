"""SAM masks for every candidate box, so detectors' agreement is judged on pixels too.

Each detector's box prompts SAM on its own; two detectors that boxed the same object get near-identical masks,
two that boxed different things do not, even when their boxes overlap. Image embeddings (the expensive part) are
computed once per image and shared by all of that image's boxes.

Two backends load two checkpoint formats: `transformers` (`SamModel.from_pretrained`, a directory or hub id; image
embeddings in batches) and `segment_anything` (Meta's package and its original `.pth` files, `sam_original.py`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from vlaforge.annotators.grounding_frame import Detection, GroundingFrame, RunStatus
from vlaforge.annotators.model_runtime import check_runtime, file_revision, torch_runtime, weights_revision
from vlaforge.pipelines.stage import Stage, StageConfig

BACKENDS = ("transformers", "segment_anything")


class SamMasker(Stage):
    """Frames with detector runs -> the same frames with `mask` set on every detection of every run that is OK."""

    pooled = True  # a model: on a cluster, its own actor pool

    @property
    def pool_name(self) -> str:
        return "sam"

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(StageConfig):
        model: str = "facebook/sam-vit-base"
        """transformers: a local checkpoint directory or a hub id (`SamModel.from_pretrained`); segment_anything:
        the path of an original `.pth` (e.g. sam_vit_b_01ec64.pth)."""
        backend: str = "transformers"
        """"transformers" or "segment_anything" (Meta's package, original checkpoints)."""
        decoder_heads: int = 8
        """segment_anything: attention heads of the mask decoder (8 in every released SAM; not in the weights)."""
        revision: str | None = None
        """Hub revision to load (and record); None records a digest of local weights."""
        batch_size: int = 4
        """Images per image-encoder pass."""
        max_boxes_per_pass: int = 64
        """Boxes prompted at once (bounds the mask decoder's memory on crowded images)."""
        mask_threshold: float = 0.0
        """Logit above which a pixel is in the mask."""
        device: str = "auto"
        """"auto" (a GPU when present), "cpu" or "cuda[:N]"."""
        dtype: str = "float32"
        """"float32", "bfloat16" or "float16" (GPU only)."""

        def __post_init__(self) -> None:
            if self.backend not in BACKENDS:
                raise ValueError(f"SamMasker.Config.backend must be one of {BACKENDS}, got {self.backend!r}")
            if self.backend == "segment_anything" and self.dtype != "float32":
                raise ValueError(f"SamMasker.Config.dtype: the segment_anything backend runs float32, got "
                                 f"{self.dtype!r}")
            if self.batch_size < 1 or self.max_boxes_per_pass < 1:
                raise ValueError(f"SamMasker.Config.batch_size and max_boxes_per_pass must be >= 1, got "
                                 f"{self.batch_size} and {self.max_boxes_per_pass}")
            check_runtime("SamMasker.Config", self.device, self.dtype)

    def __init__(self, config: "SamMasker.Config") -> None:
        super().__init__(config)
        self.model: Any = None
        self.processor: Any = None
        self.original: Any = None
        self.revision = ""

    def setup(self) -> None:
        config: SamMasker.Config = self.config  # type: ignore[assignment]
        self.device, self.dtype = torch_runtime(config.device, config.dtype)
        if config.backend == "segment_anything":
            from vlaforge.annotators.sam_original import OriginalSam, load_sam_checkpoint

            self.model = load_sam_checkpoint(config.model, decoder_heads=config.decoder_heads)
            self.original = OriginalSam(self.model, self.device, config.max_boxes_per_pass, config.mask_threshold)
            self.revision = config.revision or file_revision(config.model)
            return
        from transformers import AutoProcessor, SamModel

        self.processor = AutoProcessor.from_pretrained(config.model, revision=config.revision)
        model = SamModel.from_pretrained(config.model, revision=config.revision, use_safetensors=True)  # no pickle
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.revision = weights_revision(config.model, config.revision)

    def __call__(self, batch: list[GroundingFrame]) -> list[GroundingFrame]:
        if self.model is None:
            raise RuntimeError("SamMasker: call setup() before running the stage")
        todo = [frame for frame in batch if _detections(frame)]
        if self.original is not None:
            for frame in todo:
                detections = _detections(frame)
                masks = self.original.masks(frame.pixels, np.array([d.box for d in detections], np.float64))
                for detection, mask in zip(detections, masks):
                    detection.mask = mask
            return batch
        size = self.config.batch_size  # type: ignore[attr-defined]
        for start in range(0, len(todo), size):
            self._mask_images(todo[start : start + size])
        return batch

    def _mask_images(self, frames: list[GroundingFrame]) -> None:
        import torch

        inputs = self.processor(images=[f.pixels for f in frames], return_tensors="pt")
        with torch.inference_mode():
            embeddings = self.model.get_image_embeddings(inputs["pixel_values"].to(self.device, self.dtype))
        for i, frame in enumerate(frames):
            original, reshaped = inputs["original_sizes"][i : i + 1], inputs["reshaped_input_sizes"][i : i + 1]
            self._mask_boxes(embeddings[i : i + 1], _detections(frame), original, reshaped)

    def _mask_boxes(self, embedding: Any, detections: list[Detection], original: Any, reshaped: Any) -> None:
        """Prompt SAM with each detection's box and store the [H, W] bool mask on it."""
        import torch

        (old_h, old_w), (new_h, new_w) = original[0].tolist(), reshaped[0].tolist()
        scale = np.array([new_w / old_w, new_h / old_h, new_w / old_w, new_h / old_h])
        step = self.config.max_boxes_per_pass  # type: ignore[attr-defined]
        for start in range(0, len(detections), step):
            chunk = detections[start : start + step]
            boxes = torch.tensor(np.array([d.box for d in chunk]) * scale, dtype=self.dtype, device=self.device)
            with torch.inference_mode():
                outputs = self.model(image_embeddings=embedding, input_boxes=boxes[None], multimask_output=False)
            (masks,) = self.processor.post_process_masks(
                outputs.pred_masks.float().cpu(), original, reshaped,
                mask_threshold=self.config.mask_threshold)  # type: ignore[attr-defined]
            for detection, mask in zip(chunk, masks[:, 0].numpy()):  # [n, 1, H, W] -> [H, W] each
                detection.mask = mask.astype(bool)


def _detections(frame: GroundingFrame) -> list[Detection]:
    return [d for run in frame.runs if run.status == RunStatus.OK for d in run.detections]
