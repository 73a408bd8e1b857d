"""Box and mask overlap, and weighted box fusion (WBF, Solovyev et al. 2021) of several detectors' boxes.

`weighted_boxes_fusion` follows the published algorithm with its "avg" confidence (the reference implementation is
the `ensemble-boxes` package, which a test compares against): boxes are taken in order of weighted score; each joins
the cluster whose current fused box it overlaps most (IoU > `iou_thr`), else starts a new one; a cluster's box is the
score-weighted mean of its members and its score the mean member score, scaled by min(members, models) / sum of
model weights. With `one_per_model`, a cluster takes at most one box from each model: the consensus engine needs
that, because a detector may not vote twice for the same object.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in `a` [N, 4] with every box in `b` [M, 4] (xyxy) -> [N, M]; 0 where the union is empty."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(bottom_right - top_left, 0, None), axis=-1)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=-1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two boolean masks of the same [H, W] shape; 0 when both are empty."""
    if a.shape != b.shape:
        raise ValueError(f"mask_iou: masks of shapes {a.shape} and {b.shape} cannot be compared")
    union = np.count_nonzero(a | b)
    return float(np.count_nonzero(a & b) / union) if union else 0.0


@dataclasses.dataclass(frozen=True)
class FusedBox:
    """One fused cluster: its box, score, and the (model, index) of every member box."""

    box: np.ndarray
    """[4] xyxy, in the units of the input boxes."""
    score: float
    members: tuple[tuple[int, int], ...]


def weighted_boxes_fusion(
    boxes: Sequence[np.ndarray],
    scores: Sequence[np.ndarray],
    *,
    weights: Sequence[float] | None = None,
    iou_thr: float = 0.55,
    skip_box_thr: float = 0.0,
    one_per_model: bool = False,
) -> list[FusedBox]:
    """Fuse per-model boxes (`boxes[m]` [n_m, 4] xyxy, `scores[m]` [n_m]) of one class; clusters by fused score,
    highest first. Boxes scoring below `skip_box_thr` and boxes of zero area are ignored."""
    weights = np.ones(len(boxes)) if weights is None else np.asarray(weights, dtype=np.float64)
    if len(weights) != len(boxes):
        raise ValueError(f"weighted_boxes_fusion: {len(weights)} weights for {len(boxes)} models")
    entries = _entries(boxes, scores, weights, skip_box_thr)
    clusters: list[list[tuple[float, int, int, np.ndarray]]] = []
    fused = np.empty((0, 4))
    for score, model, index, box in entries:
        ious = box_iou(fused, box)[:, 0] if len(fused) else np.empty(0)
        if one_per_model:
            ious[[any(m == model for _, m, _, _ in c) for c in clusters]] = -1.0
        best = int(np.argmax(ious)) if len(ious) else -1
        if best >= 0 and ious[best] > iou_thr:
            clusters[best].append((score, model, index, box))
            fused[best] = _weighted_box(clusters[best])
        else:
            clusters.append([(score, model, index, box)])
            fused = np.vstack([fused, box])
    result = [_fused(cluster, fused[i], weights) for i, cluster in enumerate(clusters)]
    return sorted(result, key=lambda f: -f.score)


def _entries(boxes, scores, weights, skip_box_thr) -> list[tuple[float, int, int, np.ndarray]]:
    """(weighted score, model, index, box) of every usable box, highest weighted score first."""
    entries = []
    for model, (model_boxes, model_scores) in enumerate(zip(boxes, scores, strict=True)):
        model_boxes = np.asarray(model_boxes, dtype=np.float64).reshape(-1, 4)
        for index, (box, score) in enumerate(zip(model_boxes, np.asarray(model_scores, dtype=np.float64))):
            if score < skip_box_thr or (box[2] - box[0]) * (box[3] - box[1]) <= 0:
                continue
            entries.append((float(score) * weights[model], model, index, box))
    order = np.argsort([-e[0] for e in entries], kind="stable")
    return [entries[i] for i in order]


def _weighted_box(cluster: list[tuple[float, int, int, np.ndarray]]) -> np.ndarray:
    scores = np.array([c[0] for c in cluster])
    return (scores[:, None] * np.stack([c[3] for c in cluster])).sum(0) / scores.sum()


def _fused(cluster, box: np.ndarray, weights: np.ndarray) -> FusedBox:
    mean_score = float(np.mean([c[0] for c in cluster]))
    score = mean_score * min(len(weights), len(cluster)) / float(weights.sum())
    return FusedBox(box=np.asarray(box, dtype=np.float64), score=score,
                    members=tuple((model, index) for _, model, index, _ in cluster))
