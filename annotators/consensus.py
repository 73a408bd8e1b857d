"""Cross-validated consensus of several grounding detectors, per image and phrase.

For each phrase, the boxes of every detector that ran are clustered (weighted box fusion, at most one box per
detector per cluster, IoU > `match_iou`): a cluster is one candidate object. Its voters are the detectors in it.
Among the voters, the largest group whose every pair agrees (box IoU >= `box_iou` and, with masks, SAM mask IoU
>= `mask_iou`) decides:

- accepted: at least `min_votes` detectors agree (and the fused score reaches `min_score`);
- needs review: the agreement falls short by less than `review_margin` (borderline IoU), a voter has no mask, or
  too few detectors ran (others failed) for a quorum although every one that ran agrees;
- rejected: one detector alone, voters that disagree, a phrase asked as a negative (the object is absent by
  design: any box is a hallucination), or a fused score below `min_score`.

Every threshold is a field of `ConsensusStage.Config`; its hash is stored with every decision.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
from typing import Any

import numpy as np

from vlaforge.annotators.audit_table import AuditTable, candidate_row, frame_row
from vlaforge.annotators.box_fusion import mask_iou, weighted_boxes_fusion
from vlaforge.annotators.grounding_frame import (
    Candidate,
    Decision,
    DecisionReason,
    DetectorRun,
    GroundingFrame,
    PairAgreement,
    RunStatus,
    Vote,
)
from vlaforge.pipelines.stage import Stage, StageConfig


class ConsensusStage(Stage):
    """Frames with detector runs -> the same frames with `candidates` decided; audit rows via `take_tables()`."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(StageConfig):
        min_votes: int = 2
        """k: detectors that must agree for a candidate to be accepted."""
        match_iou: float = 0.3
        """Boxes of one phrase overlapping more than this are the same candidate (WBF clustering)."""
        box_iou: float = 0.6
        """Two voters agree when their boxes overlap at least this much..."""
        mask_iou: float | None = 0.6
        """...and their SAM masks at least this much; None judges boxes only (no SAM stage)."""
        review_margin: float = 0.1
        """Agreement within this much below a threshold is borderline: needs review instead of rejected."""
        min_score: float = 0.0
        """Fused (WBF) score below which even an agreed candidate is rejected."""
        detector_weights: tuple[tuple[str, float], ...] = ()
        """(detector, weight) pairs for fusion; unlisted detectors weigh 1."""
        keep_images: str = "flagged"
        """Which images the frames table keeps for the report's gallery: "flagged" (any rejected or needs-review
        candidate), "all", or "none"."""

        def __post_init__(self) -> None:
            if self.min_votes < 1:
                raise ValueError(f"ConsensusStage.Config.min_votes must be >= 1, got {self.min_votes}")
            for name in ("match_iou", "box_iou", "mask_iou", "review_margin"):
                value = getattr(self, name)
                if value is not None and not 0 <= value <= 1:
                    raise ValueError(f"ConsensusStage.Config.{name} must be in [0, 1], got {value}")
            if any(weight <= 0 for _, weight in self.detector_weights):
                raise ValueError(f"ConsensusStage.Config.detector_weights must be > 0, got {self.detector_weights}")
            if self.keep_images not in ("flagged", "all", "none"):
                raise ValueError(f"ConsensusStage.Config.keep_images must be flagged|all|none, got {self.keep_images!r}")

        def as_dict(self) -> dict[str, Any]:
            return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}

        def digest(self) -> str:
            """A short hash of every threshold: two runs with the same hash decided by the same rules."""
            text = json.dumps(self.as_dict(), sort_keys=True, default=list)
            return hashlib.sha256(text.encode()).hexdigest()[:12]

    def __init__(self, config: "ConsensusStage.Config") -> None:
        super().__init__(config)
        self.rows: dict[str, list[dict[str, Any]]] = {}

    def __call__(self, batch: list[GroundingFrame]) -> list[GroundingFrame]:
        config: ConsensusStage.Config = self.config  # type: ignore[assignment]
        digest, settings = config.digest(), json.dumps(config.as_dict(), sort_keys=True, default=list)
        for frame in batch:
            frame.candidates = decide_frame(frame, config)
            flagged = any(c.decision != Decision.ACCEPTED for c in frame.candidates)
            keep = config.keep_images == "all" or (config.keep_images == "flagged" and flagged)
            self.rows.setdefault(AuditTable.CANDIDATES.value, []).extend(
                candidate_row(frame, c, digest, settings) for c in frame.candidates)
            self.rows.setdefault(AuditTable.FRAMES.value, []).append(frame_row(frame, digest, keep_image=keep))
        return batch

    def take_tables(self) -> dict[str, list[dict[str, Any]]]:
        """The audit rows gathered since the last call (empty tables left out: the job writes no part for them)."""
        rows, self.rows = self.rows, {}
        return {name: table for name, table in rows.items() if table}


def decide_frame(frame: GroundingFrame, config: ConsensusStage.Config) -> list[Candidate]:
    """Every candidate object of one image, decided. Pure: the same frame and config give the same answer."""
    ran = [run for run in frame.runs if run.status == RunStatus.OK]
    failed = {run.detector: run.error for run in frame.runs if run.status == RunStatus.FAILED}
    weights = dict(config.detector_weights)
    digest = config.digest()
    candidates = []
    for phrase in frame.queried:
        per_run = [[d for d in run.detections if d.phrase == phrase] for run in ran]
        clusters = weighted_boxes_fusion(
            [np.array([d.box for d in dets], dtype=np.float64).reshape(-1, 4) for dets in per_run],
            [np.array([d.score for d in dets]) for dets in per_run],
            weights=[weights.get(run.detector, 1.0) for run in ran] or None,
            iou_thr=config.match_iou, one_per_model=True,
        ) if ran else []
        for cluster in clusters:
            votes = [Vote(ran[m].detector, per_run[m][i]) for m, i in cluster.members]
            candidates.append(_candidate(frame, phrase, votes, ran, failed, config, digest))
    return candidates


def _candidate(frame: GroundingFrame, phrase: str, votes: list[Vote], ran: list[DetectorRun],
               failed: dict[str, str], config: ConsensusStage.Config, digest: str) -> Candidate:
    votes = sorted(votes, key=lambda v: v.detector)
    pairs = _pairs(votes)
    agreeing = _largest_group(votes, pairs, config.box_iou, config.mask_iou)
    members = agreeing if len(agreeing) >= config.min_votes else votes
    box, score = _fuse(members, config)
    mask = _majority_mask([v.detection.mask for v in members])
    candidate = Candidate(
        candidate_id="", phrase=phrase, negative=phrase in frame.negatives and phrase not in frame.phrases,
        votes=votes, pairs=pairs, agreeing=[v.detector for v in agreeing], fused_box=box, fused_score=score,
        fused_mask=mask, decision=Decision.REJECTED, reason=DecisionReason.SINGLE_DETECTOR, detail="",
        detectors_total=len(frame.runs), detectors_ran=len(ran), failed=failed, config_hash=digest,
    )
    candidate.decision, candidate.reason = _decide(candidate, votes, pairs, config)
    candidate.detail = _detail(candidate)
    key = f"{frame.image_key}|{phrase}|{[round(v, 1) for v in box]}|{candidate.config_hash}"
    candidate.candidate_id = hashlib.sha256(key.encode()).hexdigest()[:16]
    return candidate


def _pairs(votes: list[Vote]) -> list[PairAgreement]:
    pairs = []
    for a, b in itertools.combinations(votes, 2):
        iou = _pair_iou(a.detection.box, b.detection.box)
        masks = (a.detection.mask, b.detection.mask)
        m_iou = mask_iou(*masks) if all(m is not None for m in masks) else None
        pairs.append(PairAgreement(a.detector, b.detector, iou, m_iou))
    return pairs


def _pair_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """IoU of two xyxy boxes (plain floats: for one pair this beats numpy's call overhead)."""
    inter = max(min(a[2], b[2]) - max(a[0], b[0]), 0.0) * max(min(a[3], b[3]) - max(a[1], b[1]), 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _agree(pair: PairAgreement, box_thr: float, mask_thr: float | None) -> bool:
    if pair.box_iou < box_thr:
        return False
    return mask_thr is None or (pair.mask_iou is not None and pair.mask_iou >= mask_thr)


def _largest_group(votes: list[Vote], pairs: list[PairAgreement], box_thr: float,
                   mask_thr: float | None) -> list[Vote]:
    """The largest set of voters agreeing pairwise (ties: the highest total score). Detectors are few (N <= ~5),
    so every subset is tried."""
    by_pair = {(p.a, p.b): p for p in pairs}
    for size in range(len(votes), 1, -1):
        groups = [g for g in itertools.combinations(votes, size)
                  if all(_agree(by_pair[(a.detector, b.detector)], box_thr, mask_thr)
                         for a, b in itertools.combinations(g, 2))]
        if groups:
            return list(max(groups, key=lambda g: sum(v.detection.score for v in g)))
    return [max(votes, key=lambda v: v.detection.score)]


def _decide(c: Candidate, votes: list[Vote], pairs: list[PairAgreement],
            config: ConsensusStage.Config) -> tuple[Decision, DecisionReason]:
    k = config.min_votes
    if c.negative:
        return Decision.REJECTED, DecisionReason.NEGATIVE_PHRASE
    if len(c.agreeing) >= k:
        if c.fused_score < config.min_score:
            return Decision.REJECTED, DecisionReason.LOW_SCORE
        return Decision.ACCEPTED, DecisionReason.AGREED
    margin = config.review_margin
    relaxed_mask = None if config.mask_iou is None else max(config.mask_iou - margin, 0.0)
    if len(_largest_group(votes, pairs, max(config.box_iou - margin, 0.0), relaxed_mask)) >= k:
        return Decision.NEEDS_REVIEW, _borderline_reason(pairs, config)
    if config.mask_iou is not None and len(votes) >= k and any(p.mask_iou is None for p in pairs):
        return Decision.NEEDS_REVIEW, DecisionReason.MISSING_MASK
    if c.detectors_ran < k and len(c.agreeing) == len(votes) == c.detectors_ran:
        return Decision.NEEDS_REVIEW, DecisionReason.QUORUM_UNREACHABLE
    if len(votes) == 1:
        return Decision.REJECTED, DecisionReason.SINGLE_DETECTOR
    if any(p.box_iou < config.box_iou for p in pairs):
        return Decision.REJECTED, DecisionReason.BOX_DISAGREEMENT
    return Decision.REJECTED, DecisionReason.MASK_DISAGREEMENT


def _borderline_reason(pairs: list[PairAgreement], config: ConsensusStage.Config) -> DecisionReason:
    if any(p.box_iou < config.box_iou for p in pairs):
        return DecisionReason.BORDERLINE_BOX
    return DecisionReason.BORDERLINE_MASK


def _fuse(votes: list[Vote], config: ConsensusStage.Config) -> tuple[tuple[float, float, float, float], float]:
    """The WBF box and score of these votes taken as one cluster, each vote a model of its own: the box is the mean
    weighted by score x detector weight, the score their sum over the sum of the voters' weights."""
    weights = dict(config.detector_weights)
    model_weights = [weights.get(v.detector, 1.0) for v in votes]
    weighted = [v.detection.score * w for v, w in zip(votes, model_weights)]
    total = sum(weighted)
    if total <= 0:  # every voter scored 0: nothing to weigh by, so the plain mean
        return tuple(sum(v.detection.box[i] for v in votes) / len(votes) for i in range(4)), 0.0  # type: ignore
    box = tuple(sum(w * v.detection.box[i] for w, v in zip(weighted, votes)) / total for i in range(4))
    return box, total / sum(model_weights)  # type: ignore[return-value]


def _majority_mask(masks: list[np.ndarray | None]) -> np.ndarray | None:
    """Pixels inside more than half of the masks; None when any is missing."""
    if not masks or any(m is None for m in masks):
        return None
    if len(masks) == 1:
        return masks[0]
    if len(masks) == 2:
        return masks[0] & masks[1]
    return np.sum(np.stack(masks), axis=0, dtype=np.int16) * 2 > len(masks)


def _detail(c: Candidate) -> str:
    """One sentence an auditor reads: who voted, how well they agree, who failed."""
    voters = ", ".join(v.detector for v in c.votes)
    parts = [f"{len(c.agreeing)} of {c.detectors_total} detectors agree ({', '.join(c.agreeing)})",
             f"voters: {voters}"]
    if c.box_iou is not None:
        parts.append(f"min box IoU {c.box_iou:.2f}")
    if c.mask_iou is not None:
        parts.append(f"min mask IoU {c.mask_iou:.2f}")
    parts += [f"{name} failed: {error}" for name, error in sorted(c.failed.items())]
    return "; ".join(parts)
