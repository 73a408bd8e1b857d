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


def nms(boxes: np.ndarray, scores: np.ndarray, iou_thr: float) -> list[int]:
    """Indices of `boxes` [N, 4] kept by non-maximum suppression, best score first."""
    order = list(np.argsort(-scores, kind="stable"))
    kept: list[int] = []
    while order:
        first, order = order[0], order[1:]
        kept.append(int(first))
        if order:
            overlaps = box_iou(boxes[[first]], boxes[order])[0]
            order = [i for i, iou in zip(order, overlaps) if iou <= iou_thr]
    return kept


@dataclasses.dataclass(frozen=True)
class FusedBox:
    """One fused cluster: its box, score, and the (model, index) of every member box."""

    box: np.ndarray
    """[4] xyxy, in the units of the input boxes."""
    score: float
    members: tuple[tuple[int, int], ...]


class _Cluster:
    """A growing cluster: the score-weighted (and plain) coordinate sums, the fused box and its area, the members."""

    __slots__ = ("sums", "plain", "total", "box", "area", "members", "models")

    def __init__(self) -> None:
        self.sums = [0.0, 0.0, 0.0, 0.0]
        self.plain = [0.0, 0.0, 0.0, 0.0]
        self.total = 0.0
        self.box: list[float] = []
        self.area = 0.0
        self.members: list[tuple[int, int, float]] = []
        self.models: set[int] = set()

    def add(self, box: list[float], score: float, model: int, index: int) -> None:
        self.sums = [total + score * value for total, value in zip(self.sums, box)]
        self.plain = [total + value for total, value in zip(self.plain, box)]
        self.total += score
        self.members.append((model, index, score))
        # Members that all scored 0 have nothing to weigh by: their plain mean (the reference divides by zero).
        self.box = ([total / self.total for total in self.sums] if self.total > 0 else
                    [total / len(self.members) for total in self.plain])
        self.area = (self.box[2] - self.box[0]) * (self.box[3] - self.box[1])
        self.models.add(model)

    def iou(self, box: list[float], area: float) -> float:
        a = self.box
        inter = max(min(a[2], box[2]) - max(a[0], box[0]), 0.0) * max(min(a[3], box[3]) - max(a[1], box[1]), 0.0)
        union = self.area + area - inter
        return inter / union if union > 0 else 0.0


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
    highest first. Boxes scoring below `skip_box_thr` and boxes of zero area are ignored. A score of 0 is a box
    with no weight (a cluster of such boxes is their plain mean); a NaN score is refused: a detector that gives no
    score needs a stand-in chosen by the caller (the consensus engine's per-detector `unscored` confidence).

    Plain Python floats on purpose: a detector gives a few boxes per phrase, where numpy's per-call overhead costs
    more than the arithmetic.
    """
    weights = [1.0] * len(boxes) if weights is None else [float(w) for w in weights]
    if len(weights) != len(boxes):
        raise ValueError(f"weighted_boxes_fusion: {len(weights)} weights for {len(boxes)} models")
    clusters: list[_Cluster] = []
    for box, score, model, index in _entries(boxes, scores, weights, skip_box_thr):
        area = (box[2] - box[0]) * (box[3] - box[1])
        best, best_iou = None, iou_thr
        for cluster in clusters:
            if one_per_model and model in cluster.models:
                continue
            iou = cluster.iou(box, area)
            if iou > best_iou:
                best, best_iou = cluster, iou
        if best is None:
            best = _Cluster()
            clusters.append(best)
        best.add(box, score, model, index)
    n_models, weight_sum = len(weights), sum(weights)
    fused_scores = [c.total / len(c.members) * min(n_models, len(c.members)) / weight_sum for c in clusters]
    order = np.argsort(np.array(fused_scores))[::-1]  # the reference's order, ties included
    return [FusedBox(box=np.array(clusters[i].box), score=fused_scores[i],
                     members=tuple((m, k) for m, k, _ in clusters[i].members)) for i in order]


def _entries(boxes, scores, weights, skip_box_thr) -> list[tuple[list[float], float, int, int]]:
    """(box, weighted score, model, index) of every usable box, highest weighted score first."""
    entries = []
    for model, (model_boxes, model_scores) in enumerate(zip(boxes, scores, strict=True)):
        as_lists = np.asarray(model_boxes, dtype=np.float64).reshape(-1, 4).tolist()
        for index, (box, score) in enumerate(zip(as_lists, np.asarray(model_scores, dtype=np.float64).tolist())):
            if score != score:  # NaN would fail every comparison and vanish silently
                raise ValueError(f"weighted_boxes_fusion: model {model} box {index} has a NaN score; give boxes "
                                 "without a score an explicit one (0 to weigh nothing)")
            if score >= skip_box_thr and (box[2] - box[0]) * (box[3] - box[1]) > 0:
                entries.append((box, score * weights[model], model, index))
    order = np.argsort(np.array([e[1] for e in entries]))[::-1]  # as the reference sorts, equal scores included
    return [entries[i] for i in order]
