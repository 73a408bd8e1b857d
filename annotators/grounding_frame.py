"""The record that flows between the grounding stages: one camera image of one robot step, and what each stage
learned about it.

`FrameSelector` makes it from an episode, `PhraseStage` fills `phrases` and `negatives`, each detector appends a
`DetectorRun`, `SamMasker` sets each detection's mask, `ConsensusStage` sets `candidates`, and
`GroundingSampleBuilder` turns the accepted ones into VL samples. The consensus record types (`Candidate`, its
`Vote`s and `Decision`) live here too, so the audit table and the sample builder read them without the engine.
"""

from __future__ import annotations

import dataclasses
import enum
import functools

import numpy as np

from vlaforge.datasets.schema import safe_key_part, sample_key


class RunStatus(str, enum.Enum):
    """Whether a detector produced an answer for an image (an empty answer is still OK)."""

    OK = "ok"
    FAILED = "failed"


@dataclasses.dataclass
class Detection:
    """One box a detector found for one phrase."""

    phrase: str
    box: tuple[float, float, float, float]
    """[x1, y1, x2, y2] in pixels of the original image (continuous: 0 is the left edge of the first pixel)."""
    score: float | None
    """The detector's own score, on its own scale; None when it gives none (classical detectors, some APIs)."""
    mask: np.ndarray | None = None
    """[H, W] bool: the SAM mask prompted by `box`, once the SAM stage ran."""


@dataclasses.dataclass
class DetectorRun:
    """One detector's answer for one image, or why it has none."""

    detector: str
    """The detector's name in this recipe (e.g. "grounding_dino", "llmdet", "gdino_1_5")."""
    model: str
    """Model id or local path (for a hosted API: the API's model name)."""
    revision: str
    """What pins the weights: a digest of the local weights, a hub revision, or the API's model version."""
    status: RunStatus
    detections: list[Detection] = dataclasses.field(default_factory=list)
    error: str = ""
    """Why it failed (timeout, HTTP status, bad answer); empty when OK."""


@dataclasses.dataclass
class GroundingFrame:
    """One image to ground: a camera frame of one robot step."""

    dataset: str
    """The robot dataset it came from (the report filters by it)."""
    episode_id: str
    source_file: str
    """The episode's lineage file, for drop records."""
    step: int
    """The step in the source episode (`first_step` already added)."""
    camera: str
    jpeg: bytes
    pixels: np.ndarray
    """[H, W, 3] uint8 RGB, decoded once for every model."""
    selected_by: str
    """Which frame policy chose it ("first", "every_k", "gripper_close", ...)."""
    instructions: list[str]
    split: str | None = None
    """The robot episode's own split (from its shard); its VL samples keep it. None hashes the episode id."""
    phrases: list[str] = dataclasses.field(default_factory=list)
    """Objects to ground, lower case, in a stable order."""
    negatives: list[str] = dataclasses.field(default_factory=list)
    """Phrases asked on purpose for objects that should not be there: any box for one is a hallucination."""
    runs: list[DetectorRun] = dataclasses.field(default_factory=list)
    candidates: list[Candidate] = dataclasses.field(default_factory=list)
    image_id: str | None = None
    """An image that is no robot frame (a row of a detections table) keeps its own id; keys derive from it."""

    @functools.cached_property
    def source_key(self) -> str:
        """The robot sample key of this step (or the image's own id)."""
        return self.image_id if self.image_id is not None else sample_key(self.episode_id, self.step)

    @functools.cached_property
    def image_key(self) -> str:
        """The robot sample key plus the camera (or the image's id, made key-safe): unique per image."""
        if self.image_id is not None:
            return safe_key_part(self.image_id)
        return f"{self.source_key}_{safe_key_part(self.camera)}"

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])

    @property
    def queried(self) -> list[str]:
        """Every phrase the detectors are asked about: the objects, then the negatives."""
        return [*self.phrases, *(p for p in self.negatives if p not in self.phrases)]


class Decision(str, enum.Enum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    NEEDS_REVIEW = "needs_review"


class DecisionReason(str, enum.Enum):
    """Why a candidate got its decision (the report groups by these)."""

    AGREED = "agreed"
    BORDERLINE_BOX = "borderline_box_iou"
    BORDERLINE_MASK = "borderline_mask_iou"
    MISSING_MASK = "missing_mask"
    QUORUM_UNREACHABLE = "quorum_unreachable"
    SINGLE_DETECTOR = "single_detector"
    BOX_DISAGREEMENT = "box_disagreement"
    MASK_DISAGREEMENT = "mask_disagreement"
    NEGATIVE_PHRASE = "negative_phrase"
    LOW_SCORE = "low_score"
    REVIEWED = "reviewed"
    """A reviewer decided (accepted, rejected, or corrected the box); the override is in the audit row."""


@dataclasses.dataclass(frozen=True)
class Vote:
    """One detector's box for a candidate."""

    detector: str
    detection: Detection
    confidence: float = 1.0
    """The box's score calibrated into [0, 1] by its detector's `ScoreRule` (what fusion weighs it by)."""
    passed: bool = True
    """Whether it passed its detector's score test (a box that did not is shown, but does not vote)."""


@dataclasses.dataclass(frozen=True)
class Review:
    """One reviewer's decision about a candidate, imported from a review tool."""

    decision: Decision
    box: tuple[float, float, float, float] | None
    """The corrected box in pixels, xyxy; None when the reviewer kept the fused box."""
    reviewer: str
    reviewed_at: str
    """ISO 8601 time of the import (review tools do not all record when a box was checked)."""
    source: str
    """The file the decision was imported from."""


@dataclasses.dataclass(frozen=True)
class PairAgreement:
    a: str
    b: str
    box_iou: float
    mask_iou: float | None
    """None when either box has no mask."""


@dataclasses.dataclass
class Candidate:
    """One candidate object in one image: the votes, their agreement, the fused box and the decision."""

    candidate_id: str
    phrase: str
    negative: bool
    votes: list[Vote]
    pairs: list[PairAgreement]
    agreeing: list[str]
    """The detectors whose boxes (and masks, when judged) agree pairwise and passed their score tests."""
    fused_box: tuple[float, float, float, float]
    fused_score: float
    fused_mask: np.ndarray | None
    decision: Decision
    reason: DecisionReason
    detail: str
    detectors_total: int
    detectors_ran: int
    failed: dict[str, str]
    """Detector -> error, for every detector that failed on this image."""
    config_hash: str = ""
    """The digest of the thresholds that decided it."""
    box_agreeing: list[str] = dataclasses.field(default_factory=list)
    """The detectors whose boxes agree pairwise (masks aside), among those that passed their score tests."""
    review: Review | None = None
    """A reviewer's decision that overrides the consensus (see `review_decisions.py`)."""

    @property
    def box_iou(self) -> float | None:
        """The weakest box agreement among the voters (None with a single voter)."""
        return min((p.box_iou for p in self.pairs), default=None)

    @property
    def mask_iou(self) -> float | None:
        values = [p.mask_iou for p in self.pairs if p.mask_iou is not None]
        return min(values) if values and len(values) == len(self.pairs) else None
