"""OWLv2 and OWL-ViT (Google's open-vocabulary detectors) through transformers, batched, as one stage.

A third family beside Grounding DINO and its LLMDet weights: a CLIP-style image-text matcher with a box per image
patch, trained apart from Grounding DINO, so its mistakes are not Grounding DINO's and the consensus
cross-validates something. Each phrase is one text query ("a photo of a red mug"); a patch's box is assigned to its
best-scoring query, kept at `box_threshold` (OWL scores run far lower than Grounding DINO's: compare them through the
consensus's per-detector score rules, never directly), and de-duplicated per phrase by NMS.

Geometry: OWLv2 pads each image to a square at the bottom and right before resizing, so its boxes are relative to
that square (scaled by the long side); OWL-ViT resizes without padding, so its boxes are relative to the image.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from vlaforge.annotators.box_fusion import nms
from vlaforge.annotators.grounding_frame import Detection, DetectorRun, GroundingFrame, RunStatus
from vlaforge.annotators.model_runtime import check_runtime, torch_runtime, weights_revision
from vlaforge.pipelines.stage import Stage, StageConfig

ARCHITECTURES = {"owlv2": ("Owlv2ForObjectDetection", "Owlv2Processor"),
                 "owlvit": ("OwlViTForObjectDetection", "OwlViTProcessor")}


class OwlDetector(Stage):
    """Frames with phrases -> the same frames with one more `DetectorRun` each."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(StageConfig):
        name: str = "owlv2"
        """The detector's name in the audit (unique per recipe)."""
        model: str = "google/owlv2-base-patch16-ensemble"
        """A local checkpoint directory or a hub id, loaded with `from_pretrained`."""
        architecture: str = "owlv2"
        """"owlv2" (Owlv2ForObjectDetection) or "owlvit" (OwlViTForObjectDetection)."""
        revision: str | None = None
        """Hub revision to load (and record); None records a digest of local weights."""
        text_template: str = "a photo of a {phrase}"
        """How a phrase becomes a text query (the prompt OWL's authors use)."""
        box_threshold: float = 0.1
        """Keep a box whose best query scores at least this (OWL's own scale)."""
        nms_iou: float = 0.5
        """Boxes of one phrase overlapping more than this are duplicates; the best stays."""
        max_per_phrase: int = 5
        """At most this many boxes per phrase per image."""
        batch_size: int = 4
        """Images per forward pass."""
        device: str = "auto"
        """"auto" (a GPU when present), "cpu" or "cuda[:N]"."""
        dtype: str = "float32"
        """"float32", "bfloat16" or "float16" (GPU only)."""

        def __post_init__(self) -> None:
            owner = f"OwlDetector.Config({self.name})"
            if self.architecture not in ARCHITECTURES:
                raise ValueError(f"{owner}.architecture must be one of {sorted(ARCHITECTURES)}, "
                                 f"got {self.architecture!r}")
            if "{phrase}" not in self.text_template:
                raise ValueError(f"{owner}.text_template must contain {{phrase}}, got {self.text_template!r}")
            for field in ("box_threshold", "nms_iou"):
                if not 0 <= getattr(self, field) <= 1:
                    raise ValueError(f"{owner}.{field} must be in [0, 1], got {getattr(self, field)}")
            if self.batch_size < 1 or self.max_per_phrase < 1:
                raise ValueError(f"{owner}.batch_size and max_per_phrase must be >= 1")
            check_runtime(owner, self.device, self.dtype)

        def settings(self) -> dict[str, Any]:
            """What provenance records about how this detector ran."""
            keys = ("architecture", "text_template", "box_threshold", "nms_iou", "max_per_phrase", "dtype")
            return {key: getattr(self, key) for key in keys}

    config: Config

    def __init__(self, config: "OwlDetector.Config") -> None:
        super().__init__(config)
        self.model: Any = None
        self.processor: Any = None
        self.revision = ""

    def setup(self) -> None:
        import transformers

        config = self.config
        self.device, self.dtype = torch_runtime(config.device, config.dtype)
        model_name, processor_name = ARCHITECTURES[config.architecture]
        self.processor = getattr(transformers, processor_name).from_pretrained(config.model, revision=config.revision)
        model = getattr(transformers, model_name).from_pretrained(config.model, revision=config.revision,
                                                                  use_safetensors=True)  # no pickle
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.revision = weights_revision(config.model, config.revision)

    def __call__(self, batch: list[GroundingFrame]) -> list[GroundingFrame]:
        import torch

        if self.model is None:
            raise RuntimeError(f"{self.config.name}: call setup() before running the stage")
        size = self.config.batch_size
        for start in range(0, len(batch), size):
            chunk = [f for f in batch[start : start + size] if f.queried]
            try:
                found = self._detect(chunk) if chunk else []
                runs = [self._run(detections, "") for detections in found]
            except torch.OutOfMemoryError as error:  # this detector's failure for these images; the others go on
                runs = [self._run([], f"out of memory at batch size {len(chunk)} ({error})") for _ in chunk]
            by_frame = dict(zip(map(id, chunk), runs))
            for frame in batch[start : start + size]:
                frame.runs.append(by_frame.get(id(frame)) or self._run([], ""))
        return batch

    def _run(self, detections: list[Detection], error: str) -> DetectorRun:
        status = RunStatus.FAILED if error else RunStatus.OK
        return DetectorRun(self.config.name, self.config.model, self.revision, status, detections, error)

    def _detect(self, frames: list[GroundingFrame]) -> list[list[Detection]]:
        """One forward pass over images with their phrases as text queries -> detections per image."""
        import torch

        texts = [[self.config.text_template.format(phrase=p) for p in f.queried] for f in frames]
        inputs = self.processor(text=texts, images=[f.pixels for f in frames], return_tensors="pt", truncation=True)
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        probs = outputs.logits.float().sigmoid().cpu().numpy()  # [B, patches, queries]
        boxes = outputs.pred_boxes.float().cpu().numpy()  # [B, patches, 4] cx, cy, w, h relative
        return [self._decode(probs[b, :, : len(f.queried)], boxes[b], f) for b, f in enumerate(frames)]

    def _decode(self, probs: np.ndarray, boxes: np.ndarray, frame: GroundingFrame) -> list[Detection]:
        config = self.config
        query = probs.argmax(-1)
        score = probs[np.arange(len(probs)), query]
        xyxy = self._to_pixels(boxes, frame.height, frame.width)
        detections = []
        for q, phrase in enumerate(frame.queried):
            chosen = np.flatnonzero((score >= config.box_threshold) & (query == q))
            for k in nms(xyxy[chosen], score[chosen], config.nms_iou)[: config.max_per_phrase]:
                i = chosen[k]
                detections.append(Detection(phrase, tuple(float(v) for v in xyxy[i]), float(score[i])))
        return detections

    def _to_pixels(self, boxes: np.ndarray, height: int, width: int) -> np.ndarray:
        """[P, 4] relative (cx, cy, w, h) -> [P, 4] pixel xyxy clipped to the image."""
        scale_x, scale_y = (max(height, width),) * 2 if self.config.architecture == "owlv2" else (width, height)
        cx, cy, w, h = boxes.T
        xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1) * [scale_x, scale_y,
                                                                                       scale_x, scale_y]
        return np.clip(xyxy, 0, [width, height, width, height])
