"""Grounding DINO and LLMDet (MM-Grounding-DINO weights) through transformers, batched, as one stage.

Each image is prompted with its phrases joined the way Grounding DINO was trained ("red mug. shelf."). Prompts of
different lengths are tokenized with `padding="max_length"` (transformers issues #32206 and #34346: batched
prompts padded to different lengths give wrong logits), and phrases that do not fit one prompt are split over
several. A query's box is assigned to the phrase whose tokens score highest; `box_threshold` applies to that
token score and `text_threshold` to the mean over all the phrase's tokens (so "red" alone does not make a "red
mug"). Boxes of a phrase are then de-duplicated by NMS.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

from vlaforge.annotators.box_fusion import nms
from vlaforge.annotators.grounding_frame import Detection, DetectorRun, GroundingFrame, RunStatus
from vlaforge.annotators.model_runtime import check_runtime, torch_runtime, weights_revision
from vlaforge.pipelines.stage import Stage, StageConfig

logger = logging.getLogger(__name__)

ARCHITECTURES = {
    "grounding_dino": "GroundingDinoForObjectDetection",
    "mm_grounding_dino": "MMGroundingDinoForObjectDetection",
}


class GroundingDinoDetector(Stage):
    """Frames with phrases -> the same frames with one more `DetectorRun` each."""

    pooled = True  # a model: on a cluster, its own actor pool

    @property
    def pool_name(self) -> str:
        return self.config.name

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(StageConfig):
        name: str = "grounding_dino"
        """The detector's name in the audit (unique per recipe)."""
        model: str = "IDEA-Research/grounding-dino-base"
        """A local checkpoint directory or a hub id, loaded with `from_pretrained`."""
        architecture: str = "grounding_dino"
        """"grounding_dino" (GroundingDinoForObjectDetection) or "mm_grounding_dino" (MM-Grounding-DINO, LLMDet)."""
        revision: str | None = None
        """Hub revision to load (and record); None records a digest of local weights."""
        box_threshold: float = 0.35
        """Keep a box when its best phrase token scores at least this."""
        text_threshold: float = 0.25
        """...and the mean score over all that phrase's tokens reaches this."""
        nms_iou: float = 0.7
        """Boxes of one phrase overlapping more than this are duplicates; the best stays."""
        max_per_phrase: int = 5
        """At most this many boxes per phrase per image."""
        batch_size: int = 4
        """Prompts per forward pass."""
        device: str = "auto"
        """"auto" (a GPU when present), "cpu" or "cuda[:N]"."""
        dtype: str = "float32"
        """"float32", "bfloat16" or "float16" (GPU only)."""

        def __post_init__(self) -> None:
            owner = f"GroundingDinoDetector.Config({self.name})"
            if self.architecture not in ARCHITECTURES:
                raise ValueError(f"{owner}.architecture must be one of {sorted(ARCHITECTURES)}, "
                                 f"got {self.architecture!r}")
            for field in ("box_threshold", "text_threshold", "nms_iou"):
                if not 0 <= getattr(self, field) <= 1:
                    raise ValueError(f"{owner}.{field} must be in [0, 1], got {getattr(self, field)}")
            if self.batch_size < 1 or self.max_per_phrase < 1:
                raise ValueError(f"{owner}.batch_size and max_per_phrase must be >= 1")
            check_runtime(owner, self.device, self.dtype)

        def settings(self) -> dict[str, Any]:
            """What provenance records about how this detector ran."""
            keys = ("architecture", "box_threshold", "text_threshold", "nms_iou", "max_per_phrase", "dtype")
            return {key: getattr(self, key) for key in keys}

    def __init__(self, config: "GroundingDinoDetector.Config") -> None:
        super().__init__(config)
        self.model: Any = None
        self.processor: Any = None
        self.revision = ""
        self.max_text_len = 0

    def setup(self) -> None:
        import transformers

        config: GroundingDinoDetector.Config = self.config  # type: ignore[assignment]
        self.device, self.dtype = torch_runtime(config.device, config.dtype)
        model_class = getattr(transformers, ARCHITECTURES[config.architecture])
        self.processor = transformers.AutoProcessor.from_pretrained(config.model, revision=config.revision)
        model = model_class.from_pretrained(config.model, revision=config.revision, use_safetensors=True)  # no pickle
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.max_text_len = int(self.model.config.max_text_len)
        self.revision = weights_revision(config.model, config.revision)

    def __call__(self, batch: list[GroundingFrame]) -> list[GroundingFrame]:
        import torch

        if self.model is None:
            raise RuntimeError(f"{self.config.name}: call setup() before running the stage")  # type: ignore[attr-defined]
        found: dict[int, list[Detection]] = {index: [] for index in range(len(batch))}
        failed: dict[int, str] = {}
        for chunk in self._chunks(batch):
            try:
                results = self._detect([batch[i] for i, _ in chunk], [group for _, group in chunk])
            except torch.OutOfMemoryError as error:  # recorded as this detector's failure; the others go on
                for index, _ in chunk:
                    failed[index] = f"out of memory at batch size {len(chunk)} ({error})"
                continue
            for (index, _), detections in zip(chunk, results):
                found[index].extend(detections)
        for index, frame in enumerate(batch):
            frame.runs.append(self._run(found[index], failed.get(index, "")))
        return batch

    def _chunks(self, batch: list[GroundingFrame]) -> list[list[tuple[int, list[str]]]]:
        """(frame index, phrase group) queries in forward-pass chunks. A chunk holds images of one size only: padding
        a smaller image to a larger one changes what the backbone sees, so results would depend on the batching."""
        by_size: dict[tuple[int, int], list[tuple[int, list[str]]]] = {}
        for index, frame in enumerate(batch):
            for group in self._prompt_groups(frame.queried):
                by_size.setdefault((frame.height, frame.width), []).append((index, group))
        size = self.config.batch_size  # type: ignore[attr-defined]
        return [queries[start : start + size] for queries in by_size.values()
                for start in range(0, len(queries), size)]

    def _run(self, detections: list[Detection], error: str) -> DetectorRun:
        config: GroundingDinoDetector.Config = self.config  # type: ignore[assignment]
        status = RunStatus.FAILED if error else RunStatus.OK
        return DetectorRun(config.name, config.model, self.revision, status, [] if error else detections, error)

    def _prompt_groups(self, phrases: list[str]) -> list[list[str]]:
        """Phrases split into groups whose prompt ("a. b. c.") fits the model's text length with [CLS] and [SEP]."""
        tokenizer = self.processor.tokenizer
        groups: list[list[str]] = []
        used = 2
        for phrase in phrases:
            cost = len(tokenizer(phrase, add_special_tokens=False)["input_ids"]) + 1
            if cost + 2 > self.max_text_len:
                raise ValueError(f"{self.config.name}: phrase {phrase!r} needs {cost} tokens, more than the model's "  # type: ignore[attr-defined]
                                 f"{self.max_text_len - 2}; shorten it (PhraseStage.Config.max_words)")
            if not groups or used + cost > self.max_text_len:
                groups.append([])
                used = 2
            groups[-1].append(phrase)
            used += cost
        return groups

    def _detect(self, frames: list[GroundingFrame], groups: list[list[str]]) -> list[list[Detection]]:
        """One forward pass over (image, phrase group) pairs -> detections per pair."""
        import torch

        texts, spans = zip(*(_prompt(group) for group in groups))
        tokens = self.processor.tokenizer(list(texts), padding="max_length", max_length=self.max_text_len,
                                          return_offsets_mapping=True, return_tensors="pt")
        offsets = tokens.pop("offset_mapping")
        images = self.processor.image_processor([f.pixels for f in frames], return_tensors="pt")
        inputs = {**tokens, **images}
        inputs = {k: v.to(self.device) for k, v in inputs.items()}
        inputs["pixel_values"] = inputs["pixel_values"].to(self.dtype)
        with torch.inference_mode():
            outputs = self.model(**inputs)
        probs = outputs.logits.float().sigmoid().cpu().numpy()  # [B, Q, L]
        boxes = outputs.pred_boxes.float().cpu().numpy()  # [B, Q, 4] cx, cy, w, h relative to the image
        return [self._decode(probs[b], boxes[b], _token_map(offsets[b].numpy(), spans[b]), groups[b], frames[b])
                for b in range(len(frames))]

    def _decode(self, probs: np.ndarray, boxes: np.ndarray, token_map: np.ndarray, phrases: list[str],
                frame: GroundingFrame) -> list[Detection]:
        config: GroundingDinoDetector.Config = self.config  # type: ignore[assignment]
        counts = token_map.sum(1)  # [P]
        best = np.where(token_map[None], probs[:, None, :], 0.0).max(-1)  # [Q, P]
        mean = (probs @ token_map.T) / np.maximum(counts, 1)  # [Q, P]
        phrase = best.argmax(-1)
        score = best[np.arange(len(best)), phrase]
        keep = (score >= config.box_threshold) & (mean[np.arange(len(mean)), phrase] >= config.text_threshold)
        xyxy = _to_pixels(boxes, frame.height, frame.width)
        detections = []
        for p, name in enumerate(phrases):
            chosen = np.flatnonzero(keep & (phrase == p))
            for q in nms(xyxy[chosen], score[chosen], config.nms_iou)[: config.max_per_phrase]:
                detections.append(Detection(name, tuple(float(v) for v in xyxy[chosen[q]]), float(score[chosen[q]])))
        return detections


def _prompt(phrases: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """"a. b." and the character span of each phrase in it."""
    text, spans = "", []
    for phrase in phrases:
        spans.append((len(text), len(text) + len(phrase)))
        text += phrase + ". "
    return text.rstrip(), spans


def _token_map(offsets: np.ndarray, spans: list[tuple[int, int]]) -> np.ndarray:
    """[P, L] bool: token l belongs to phrase p (special tokens, "." and padding belong to none)."""
    token_map = np.zeros((len(spans), len(offsets)), dtype=bool)
    for p, (start, end) in enumerate(spans):
        token_map[p] = (offsets[:, 1] > offsets[:, 0]) & (offsets[:, 0] >= start) & (offsets[:, 1] <= end)
    return token_map


def _to_pixels(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """[Q, 4] relative (cx, cy, w, h) -> [Q, 4] pixel xyxy clipped to the image."""
    cx, cy, w, h = boxes.T
    xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1) * [width, height, width, height]
    return np.clip(xyxy, 0, [width, height, width, height])


def grounding_dino(model: str = "IDEA-Research/grounding-dino-base", **options: Any) -> GroundingDinoDetector.Config:
    """Grounding DINO (the detector half of Grounded SAM)."""
    return GroundingDinoDetector.Config(name="grounding_dino", model=model, architecture="grounding_dino", **options)


def llmdet(model: str = "iSEE-Laboratory/llmdet_large", **options: Any) -> GroundingDinoDetector.Config:
    """LLMDet: MM-Grounding-DINO weights co-trained with an LLM; inference is MM-Grounding-DINO's."""
    return GroundingDinoDetector.Config(name="llmdet", model=model, architecture="mm_grounding_dino", **options)
