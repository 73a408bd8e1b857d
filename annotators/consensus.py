"""Cross-validated consensus of several grounding detectors, per image and phrase.

For each phrase, the boxes of every detector that ran are clustered (weighted box fusion, at most one box per
detector per cluster, IoU > `match_iou`): a cluster is one candidate object. Its voters are the detectors in it.
Scores are never compared across detectors: each detector's `ScoreRule` (`detector_scores.py`) tests its own raw
score and calibrates it into a confidence in [0, 1], which weighs its box in fusion. Among the voters that pass
their score test, the largest group whose every pair agrees (box IoU >= `box_iou` and, when masks are judged, SAM
mask IoU >= `mask_iou`) decides:

- accepted: at least `min_votes` detectors agree (and the fused confidence reaches `min_score`);
- needs review: the agreement falls short by less than `review_margin` (borderline IoU), a voter has no mask, or
  too few detectors ran (others failed) for a quorum although every one that ran agrees;
- rejected: one detector alone, voters that disagree, a phrase asked as a negative (the object is absent by
  design: any box is a hallucination), or boxes that would agree but fail their detectors' score tests or
  `min_score` (low score).

With `mask_iou` None (no masker ran: box-only consensus) agreement is judged on boxes alone. The largest agreeing
group is a maximum clique of the agreement graph, found by Bron-Kerbosch with pivoting (at most 3^(n/3) maximal
cliques for n voters, so 16 detectors cost about 350 of them, not 65,536 subsets) under a budget of
`max_group_search` steps, past which a greedy group is taken (and the audit sentence says so).

A reviewer's decision (`reviews`, imported by `vlaforge report import-review`) overrides the consensus for its
candidate: decided by a person, recorded with who and when, used by the sample builder like any decision.
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
from vlaforge.annotators.detector_scores import ScoreRule, rule_for, score_rules
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
from vlaforge.annotators.review_decisions import ReviewBook
from vlaforge.pipelines.stage import Stage, StageConfig

DIGEST_EXCLUDES = frozenset({"keep_images", "accepted_images", "reviews"})
"""Config fields that do not change how a candidate is decided by the detectors (so not in the digest, which
candidate ids hash): which images the report keeps, and the reviewers' overrides applied on top."""


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
        """...and their SAM masks at least this much; None judges boxes only (no masker ran)."""
        review_margin: float = 0.1
        """Agreement within this much below a threshold is borderline: needs review instead of rejected."""
        min_score: float = 0.0
        """Fused confidence (calibrated scores, WBF) below which even an agreed candidate is rejected."""
        detector_weights: tuple[tuple[str, float], ...] = ()
        """(detector, weight) pairs for fusion; unlisted detectors weigh 1."""
        detector_scores: tuple[ScoreRule, ...] = ()
        """One `ScoreRule` per detector (its own score test and calibration); unlisted detectors have no test and
        an identity calibration. Dicts are accepted (JSON recipes)."""
        max_group_search: int = 100_000
        """Steps of the agreeing-group search per candidate before it settles for a greedy group."""
        keep_images: str = "flagged"
        """Which images the frames table keeps for the report's gallery and review exports: "flagged" (any rejected
        or needs-review candidate, plus the `accepted_images` sample), "all", or "none"."""
        accepted_images: float = 0.05
        """With "flagged": the share of images with only accepted candidates kept too, so the report shows what was
        accepted (chosen by a hash of the image key: the same images on every rerun)."""
        reviews: str | None = None
        """A reviews table (`reviews.parquet`, from `vlaforge report import-review`) whose decisions override the
        consensus for their candidates; None: none."""

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
            if not 0 <= self.accepted_images <= 1:
                raise ValueError(f"ConsensusStage.Config.accepted_images must be in [0, 1], got {self.accepted_images}")
            if self.max_group_search < 1:
                raise ValueError(f"ConsensusStage.Config.max_group_search must be >= 1, got {self.max_group_search}")
            object.__setattr__(self, "detector_scores",
                               score_rules(self.detector_scores, "ConsensusStage.Config.detector_scores"))

        def as_dict(self) -> dict[str, Any]:
            values = {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}
            values["detector_scores"] = [rule.as_dict() for rule in self.detector_scores]
            return values

        def digest(self) -> str:
            """A short hash of every threshold: two runs with the same hash decided by the same rules."""
            rules = {k: v for k, v in self.as_dict().items() if k not in DIGEST_EXCLUDES}
            text = json.dumps(rules, sort_keys=True, default=list)
            return hashlib.sha256(text.encode()).hexdigest()[:12]

    config: Config

    def __init__(self, config: "ConsensusStage.Config") -> None:
        super().__init__(config)
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.reviews: ReviewBook | None = None

    def setup(self) -> None:
        if self.config.reviews and self.reviews is None:
            self.reviews = ReviewBook.load(self.config.reviews)

    def __call__(self, batch: list[GroundingFrame]) -> list[GroundingFrame]:
        self.setup()
        config = self.config
        digest, settings = config.digest(), json.dumps(config.as_dict(), sort_keys=True, default=list)
        for frame in batch:
            frame.candidates = decide_frame(frame, config)
            if self.reviews is not None:
                self.reviews.apply(frame.candidates)
            keep = _keeps_image(frame, config)
            self.rows.setdefault(AuditTable.CANDIDATES.value, []).extend(
                candidate_row(frame, c, digest, settings) for c in frame.candidates)
            self.rows.setdefault(AuditTable.FRAMES.value, []).append(frame_row(frame, digest, keep_image=keep))
        return batch

    def take_tables(self) -> dict[str, list[dict[str, Any]]]:
        """The audit rows gathered since the last call (empty tables left out: the job writes no part for them)."""
        rows, self.rows = self.rows, {}
        return {name: table for name, table in rows.items() if table}


def _keeps_image(frame: GroundingFrame, config: ConsensusStage.Config) -> bool:
    """Whether the frames table keeps this image's JPEG (see `keep_images`, `accepted_images`)."""
    if config.keep_images != "flagged":
        return config.keep_images == "all"
    if any(c.decision != Decision.ACCEPTED for c in frame.candidates):
        return True
    draw = int.from_bytes(hashlib.sha256(f"{frame.dataset}|{frame.image_key}".encode()).digest()[:8], "big")
    return bool(frame.candidates) and draw < config.accepted_images * 2**64


def decide_frame(frame: GroundingFrame, config: ConsensusStage.Config) -> list[Candidate]:
    """Every candidate object of one image, decided. Pure: the same frame and config give the same answer."""
    ran = [run for run in frame.runs if run.status == RunStatus.OK]
    failed = {run.detector: run.error for run in frame.runs if run.status == RunStatus.FAILED}
    weights = dict(config.detector_weights)
    rules = {rule.detector: rule for rule in config.detector_scores}
    digest = config.digest()
    candidates = []
    for phrase in frame.queried:
        per_run = [[d for d in run.detections if d.phrase == phrase] for run in ran]
        confidences = [[rule_for(rules, run.detector).confidence(d.score) for d in dets]
                       for run, dets in zip(ran, per_run)]
        clusters = weighted_boxes_fusion(
            [np.array([d.box for d in dets], dtype=np.float64).reshape(-1, 4) for dets in per_run],
            [np.array(values, dtype=np.float64) for values in confidences],
            weights=[weights.get(run.detector, 1.0) for run in ran] or None,
            iou_thr=config.match_iou, one_per_model=True,
        ) if ran else []
        for cluster in clusters:
            votes = [_vote(ran[m].detector, per_run[m][i], confidences[m][i], rule_for(rules, ran[m].detector))
                     for m, i in cluster.members]
            candidates.append(_candidate(frame, phrase, votes, ran, failed, config, digest))
    return candidates


def _vote(detector: str, detection: Any, confidence: float, rule: ScoreRule) -> Vote:
    return Vote(detector, detection, confidence=confidence, passed=rule.passes(detection.score))


def _candidate(frame: GroundingFrame, phrase: str, votes: list[Vote], ran: list[DetectorRun],
               failed: dict[str, str], config: ConsensusStage.Config, digest: str) -> Candidate:
    votes = sorted(votes, key=lambda v: v.detector)
    pairs = _pairs(votes)
    search = _GroupSearch(votes, pairs, config.max_group_search)
    passing = [v for v in votes if v.passed]
    agreeing = search.largest(passing, config.box_iou, config.mask_iou)
    box_agreeing = search.largest(passing, config.box_iou, None)
    members = agreeing if len(agreeing) >= config.min_votes else votes
    box, score = _fuse(members, config)
    mask = _majority_mask([v.detection.mask for v in members])
    candidate = Candidate(
        candidate_id="", phrase=phrase, negative=phrase in frame.negatives and phrase not in frame.phrases,
        votes=votes, pairs=pairs, agreeing=[v.detector for v in agreeing], fused_box=box, fused_score=score,
        fused_mask=mask, decision=Decision.REJECTED, reason=DecisionReason.SINGLE_DETECTOR, detail="",
        detectors_total=len(frame.runs), detectors_ran=len(ran), failed=failed, config_hash=digest,
        box_agreeing=[v.detector for v in box_agreeing],
    )
    candidate.decision, candidate.reason = _decide(candidate, votes, search, config)
    candidate.detail = _detail(candidate, config, search.greedy)
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


class _GroupSearch:
    """The largest group of voters agreeing pairwise: a maximum clique of the agreement graph (ties: the highest
    total confidence, then the first in detector order), by Bron-Kerbosch with pivoting over bit sets."""

    def __init__(self, votes: list[Vote], pairs: list[PairAgreement], budget: int) -> None:
        self.votes = votes
        self.index = {v.detector: i for i, v in enumerate(votes)}
        self.pairs = pairs
        self.budget = budget
        self.greedy = False
        """Whether any search ran out of budget and took a greedy group."""

    def largest(self, among: list[Vote], box_thr: float, mask_thr: float | None) -> list[Vote]:
        if not among:
            return []
        nodes = [self.index[v.detector] for v in among]
        neighbours = {i: 0 for i in nodes}
        allowed = sum(1 << i for i in nodes)
        for pair in self.pairs:
            a, b = self.index[pair.a], self.index[pair.b]
            if (allowed >> a) & 1 and (allowed >> b) & 1 and _agree(pair, box_thr, mask_thr):
                neighbours[a] |= 1 << b
                neighbours[b] |= 1 << a
        best = self._clique(neighbours, allowed)
        if best is None:
            self.greedy = True
            best = self._greedy(neighbours, nodes)
        return [self.votes[i] for i in range(len(self.votes)) if (best >> i) & 1]

    def _key(self, clique: int) -> tuple[int, float, tuple[int, ...]]:
        members = [i for i in range(len(self.votes)) if (clique >> i) & 1]
        return (len(members), sum(self.votes[i].confidence for i in members), tuple(-i for i in members))

    def _clique(self, neighbours: dict[int, int], allowed: int) -> int | None:
        """The best maximal clique, or None when the budget runs out first."""
        best, steps = 0, 0
        stack = [(0, allowed, 0)]  # (R, P, X) as bit sets
        while stack:
            steps += 1
            if steps > self.budget:
                return None
            r, p, x = stack.pop()
            if not p and not x:
                if self._key(r) > self._key(best):
                    best = r
                continue
            if _popcount(r) + _popcount(p) < _popcount(best):
                continue  # cannot beat the best size found
            pivot = max(_bits(p | x), key=lambda u: _popcount(p & neighbours[u]))
            for v in _bits(p & ~neighbours[pivot]):
                stack.append((r | 1 << v, p & neighbours[v], x & neighbours[v]))
                p &= ~(1 << v)
                x |= 1 << v
        return best

    def _greedy(self, neighbours: dict[int, int], nodes: list[int]) -> int:
        """Most-connected first, each joining when it agrees with every member so far."""
        order = sorted(nodes, key=lambda i: (-_popcount(neighbours[i]), -self.votes[i].confidence, i))
        clique = 0
        for i in order:
            if clique & ~neighbours[i] == 0:
                clique |= 1 << i
        return clique


def _bits(mask: int) -> list[int]:
    return [i for i in range(mask.bit_length()) if (mask >> i) & 1]


def _popcount(mask: int) -> int:
    return bin(mask).count("1")


def _decide(c: Candidate, votes: list[Vote], search: _GroupSearch,
            config: ConsensusStage.Config) -> tuple[Decision, DecisionReason]:
    k = config.min_votes
    if c.negative:
        return Decision.REJECTED, DecisionReason.NEGATIVE_PHRASE
    if len(c.agreeing) >= k:
        if c.fused_score < config.min_score:
            return Decision.REJECTED, DecisionReason.LOW_SCORE
        return Decision.ACCEPTED, DecisionReason.AGREED
    passing = [v for v in votes if v.passed]
    if len(search.largest(votes, config.box_iou, config.mask_iou)) >= k:
        return Decision.REJECTED, DecisionReason.LOW_SCORE  # they would agree, but some fail their score tests
    margin = config.review_margin
    relaxed_mask = None if config.mask_iou is None else max(config.mask_iou - margin, 0.0)
    if len(search.largest(passing, max(config.box_iou - margin, 0.0), relaxed_mask)) >= k:
        return Decision.NEEDS_REVIEW, _borderline_reason(c.pairs, config)
    if config.mask_iou is not None and len(c.box_agreeing) >= k and any(
            v.detection.mask is None for v in c.votes if v.detector in c.box_agreeing):
        return Decision.NEEDS_REVIEW, DecisionReason.MISSING_MASK
    if c.detectors_ran < k and len(c.agreeing) == len(votes) == c.detectors_ran:
        return Decision.NEEDS_REVIEW, DecisionReason.QUORUM_UNREACHABLE
    if len(votes) == 1:
        return Decision.REJECTED, DecisionReason.SINGLE_DETECTOR
    if any(p.box_iou < config.box_iou for p in c.pairs):
        return Decision.REJECTED, DecisionReason.BOX_DISAGREEMENT
    return Decision.REJECTED, DecisionReason.MASK_DISAGREEMENT


def _borderline_reason(pairs: list[PairAgreement], config: ConsensusStage.Config) -> DecisionReason:
    if any(p.box_iou < config.box_iou for p in pairs):
        return DecisionReason.BORDERLINE_BOX
    return DecisionReason.BORDERLINE_MASK


def _fuse(votes: list[Vote], config: ConsensusStage.Config) -> tuple[tuple[float, float, float, float], float]:
    """The WBF box and score of these votes taken as one cluster, each vote a model of its own: the box is the mean
    weighted by confidence x detector weight, the score their sum over the sum of the voters' weights (in [0, 1],
    since confidences are)."""
    weights = dict(config.detector_weights)
    model_weights = [weights.get(v.detector, 1.0) for v in votes]
    weighted = [v.confidence * w for v, w in zip(votes, model_weights)]
    total = sum(weighted)
    if total <= 0:  # every voter has confidence 0: nothing to weigh by, so the plain mean
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


def _detail(c: Candidate, config: ConsensusStage.Config, greedy: bool) -> str:
    """One sentence an auditor reads: who agrees on the box and on the mask, who failed a score test, who failed."""
    # With min_votes 1 one detector's box is enough, and the sentence must say so rather than "no two agree".
    alone = len(c.box_agreeing) == 1 and config.min_votes == 1
    boxes = c.box_agreeing if len(c.box_agreeing) > 1 or alone else []
    if alone:
        opening = (f"1 of {c.detectors_total} detectors boxes it ({boxes[0]}), and min_votes 1 takes a single "
                   "detector's box")
    elif boxes:
        opening = f"{len(boxes)} of {c.detectors_total} detectors agree on the box ({', '.join(boxes)})"
    else:
        opening = f"no two of {c.detectors_total} detectors agree on the box"
    parts = [opening, f"voters: {', '.join(v.detector for v in c.votes)}"]
    if config.mask_iou is None:
        parts.append("masks not judged (box-only consensus)")
    elif boxes:
        unmasked = [v.detector for v in c.votes if v.detector in boxes and v.detection.mask is None]
        if unmasked:
            parts.append(f"masks missing for {', '.join(unmasked)}")
        else:
            parts.append("its mask is kept" if alone else f"{len(c.agreeing)} of them agree on the mask"
                         if len(c.agreeing) > 1 else "their masks do not agree")
    if c.box_iou is not None:
        parts.append(f"min box IoU {c.box_iou:.2f}")
    if c.mask_iou is not None:
        parts.append(f"min mask IoU {c.mask_iou:.2f}")
    low = [v.detector for v in c.votes if not v.passed]
    if low:
        parts.append(f"below their score threshold: {', '.join(low)}")
    if greedy:
        parts.append(f"group search stopped at {config.max_group_search} steps: the group is greedy")
    parts += [f"{name} failed: {error}" for name, error in sorted(c.failed.items())]
    return "; ".join(parts)
