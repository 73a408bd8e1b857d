"""Accepted objects -> VL grounding samples, boxes in the target VLM's convention (Qwen3-VL: 0-1000).

Per image, up to three samples (the image is stored once per sample, the questions share it as turns):

- **single**: "Where is the red mug?" for each phrase with exactly one accepted object (with two mugs the question
  has no single answer, so it is not asked);
- **multi**: every accepted object at once ("Locate every instance of: red mug, shelf.");
- **referring**: an object told apart by where it is: among objects of its own phrase ("the leftmost red mug"), or
  next to another accepted object ("the red mug left of the shelf").

Answers are Qwen3-VL's own grounding format: a JSON list of `{"bbox_2d": [x1, y1, x2, y2], "label": ...}`.
Objects rejected or sent to review never become samples; negatives never do.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

from vlaforge.annotators.grounding_frame import Candidate, Decision, GroundingFrame
from vlaforge.datasets.drops import DropReason
from vlaforge.datasets.qwen_coordinates import grounding_answer, to_qwen_box
from vlaforge.datasets.schema import VlTask
from vlaforge.pipelines.stage import Stage, StageConfig
from vlaforge.pipelines.vl_samples import VlSample, VlSampleError, assistant, build_vl_sample, user

VARIANTS = ("single", "multi", "referring")
PROMPT_VERSION = "grounding-v1"
SINGLE_PROMPTS = (
    "Where is the {phrase}? Answer with its bounding box in JSON.",
    "Locate the {phrase} in the image and output its bbox coordinates in JSON format.",
    "Find the {phrase}. Give its bounding box as JSON.",
)
MULTI_PROMPTS = (
    "Locate every instance of the following objects: {phrases}. Report bbox coordinates in JSON format.",
    "Detect all of these in the image: {phrases}. Output each one's bounding box as JSON.",
)
REFERRING_PROMPTS = (
    "Give the bounding box of {expression}, in JSON.",
    "Where is {expression}? Answer with its bounding box in JSON.",
)


@dataclasses.dataclass(frozen=True)
class GroundedObject:
    """An accepted object, ready for a question: its label and boxes."""

    phrase: str
    box: tuple[float, float, float, float]
    """Pixels, xyxy, clipped to the image."""
    qwen_box: list[int]
    candidate: Candidate

    @property
    def center(self) -> tuple[float, float]:
        return (self.box[0] + self.box[2]) / 2, (self.box[1] + self.box[3]) / 2


def grounded_objects(frame: GroundingFrame) -> list[GroundedObject]:
    """The frame's accepted, non-negative objects, ordered by phrase then left to right."""
    objects = []
    for c in frame.candidates:
        if c.decision != Decision.ACCEPTED or c.negative:
            continue
        x1, y1, x2, y2 = c.fused_box
        box = (min(max(x1, 0.0), frame.width), min(max(y1, 0.0), frame.height),
               min(max(x2, 0.0), frame.width), min(max(y2, 0.0), frame.height))
        objects.append(GroundedObject(c.phrase, box, to_qwen_box(box, frame.height, frame.width), c))
    return sorted(objects, key=lambda o: (o.phrase, o.center))


def answer(objects: list[GroundedObject], label: str | None = None) -> str:
    """Qwen3-VL's grounding answer: a fenced JSON list of bbox_2d and label."""
    return grounding_answer([(o.qwen_box, label or o.phrase) for o in objects])


def referring_expression(target: GroundedObject, objects: list[GroundedObject], width: int, height: int) -> str | None:
    """Words that single `target` out among `objects`, from geometry alone; None when nothing does."""
    same = [o for o in objects if o.phrase == target.phrase]
    if len(same) > 1:
        return _among_same(target, same, width, height)
    others = [o for o in objects if o.phrase != target.phrase]
    if not others:
        return None
    nearest = min(others, key=lambda o: (o.center[0] - target.center[0]) ** 2 + (o.center[1] - target.center[1]) ** 2)
    dx, dy = target.center[0] - nearest.center[0], target.center[1] - nearest.center[1]
    if abs(dx) / width >= abs(dy) / height:
        relation = "left of" if dx < 0 else "right of"
    else:
        relation = "above" if dy < 0 else "below"
    return f"the {target.phrase} {relation} the {nearest.phrase}"


def _among_same(target: GroundedObject, same: list[GroundedObject], width: int, height: int) -> str | None:
    xs = sorted(o.center[0] for o in same)
    ys = sorted(o.center[1] for o in same)
    if min(b - a for a, b in zip(xs, xs[1:])) >= 0.1 * width:
        if target.center[0] == xs[0]:
            return f"the leftmost {target.phrase}"
        if target.center[0] == xs[-1]:
            return f"the rightmost {target.phrase}"
    if min(b - a for a, b in zip(ys, ys[1:])) >= 0.1 * height:
        if target.center[1] == ys[0]:
            return f"the topmost {target.phrase}"
        if target.center[1] == ys[-1]:
            return f"the bottom {target.phrase}"
    return None


def _pick(templates: tuple[str, ...], key: str) -> str:
    """A template chosen by a hash of the key: varied phrasing, identical on every rerun."""
    return templates[int(hashlib.sha256(key.encode()).hexdigest()[:8], 16) % len(templates)]


class GroundingSampleBuilder(Stage):
    """Frames with decided candidates -> VL grounding samples; a frame with nothing accepted is dropped (counted)."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(StageConfig):
        dataset: str = "grounding"
        """The VL dataset's name (recorded in each sample's meta)."""
        variants: tuple[str, ...] = VARIANTS
        """Which samples to make per image: any of "single", "multi", "referring"."""
        validation_fraction: float = 0.05
        """Episodes held out by a hash of the episode id, for episodes whose shards carry no split of their own."""
        detector_settings: tuple[tuple[str, str], ...] = ()
        """(detector name, JSON of its settings) for provenance; the recipe fills it."""

        def __post_init__(self) -> None:
            unknown = [v for v in self.variants if v not in VARIANTS]
            if unknown or not self.variants:
                raise ValueError(f"GroundingSampleBuilder.Config.variants must be a non-empty subset of {VARIANTS}, "
                                 f"got {self.variants}")

    def __call__(self, batch: list[GroundingFrame]) -> list[VlSample]:
        samples = []
        for frame in batch:
            objects = grounded_objects(frame)
            if not objects:
                self._drop_ungrounded(frame)
                continue
            for variant, turns, chosen in self._conversations(frame, objects):
                sample = self._sample(frame, variant, turns, chosen)
                if sample is not None:
                    samples.append(sample)
        return samples

    def _conversations(self, frame: GroundingFrame, objects: list[GroundedObject]):
        """(variant, [(question, answer)], objects used) per variant that has something to ask."""
        variants = self.config.variants  # type: ignore[attr-defined]
        key = frame.image_key
        if "single" in variants:
            unique = [o for o in objects if sum(p.phrase == o.phrase for p in objects) == 1]
            turns = [(_pick(SINGLE_PROMPTS, key + o.phrase).format(phrase=o.phrase), answer([o])) for o in unique]
            if turns:
                yield "single", turns, unique
        if "multi" in variants and len(objects) > 1:
            phrases = ", ".join(dict.fromkeys(o.phrase for o in objects))
            yield "multi", [(_pick(MULTI_PROMPTS, key).format(phrases=phrases), answer(objects))], objects
        if "referring" in variants:
            turns, used = [], []
            for o in objects:
                expression = referring_expression(o, objects, frame.width, frame.height)
                if expression is not None:
                    prompt = _pick(REFERRING_PROMPTS, key + expression).format(expression=expression)
                    turns.append((prompt, answer([o], label=expression)))
                    used.append(o)
            if turns:
                yield "referring", turns, used

    def _sample(self, frame: GroundingFrame, variant: str, turns: list[tuple[str, str]],
                objects: list[GroundedObject]) -> VlSample | None:
        config: GroundingSampleBuilder.Config = self.config  # type: ignore[assignment]
        conversation = []
        for index, (question, reply) in enumerate(turns):
            conversation += [user(None, question) if index == 0 else user(question), assistant(reply)]
        try:
            return build_vl_sample(
                key=f"{frame.image_key}_{variant}", task=VlTask.GROUNDING, dataset=config.dataset, images=[frame.jpeg],
                conversation=conversation, source_key=frame.source_key, source_group=frame.episode_id,
                provenance=self._provenance(frame, objects), validation_fraction=config.validation_fraction,
                split=frame.split,
                consensus_id=objects[0].candidate.candidate_id, extra=_extra(frame, variant, objects),
            )
        except VlSampleError as error:
            self.ledger.quarantine(file=frame.source_file, episode=frame.episode_id, reason=DropReason.BAD_IMAGE,
                                   message=f"{error}; the image {frame.image_key} is not turned into a sample")
            return None

    def _provenance(self, frame: GroundingFrame, objects: list[GroundedObject]) -> list[dict[str, Any]]:
        settings = {name: json.loads(text) for name, text in self.config.detector_settings}  # type: ignore[attr-defined]
        voters = {name for o in objects for name in o.candidate.agreeing}
        entries = [{"model": run.model, "revision": run.revision, "prompt_version": PROMPT_VERSION,
                    "settings": {"detector": run.detector, **settings.get(run.detector, {})}}
                   for run in frame.runs if run.detector in voters]
        consensus = objects[0].candidate
        entries.append({"model": "vlaforge-consensus", "revision": consensus.config_hash,
                        "prompt_version": PROMPT_VERSION, "settings": {"detectors_total": consensus.detectors_total}})
        return entries

    def _drop_ungrounded(self, frame: GroundingFrame) -> None:
        decisions = [c.decision.value for c in frame.candidates]
        self.ledger.drop(
            file=frame.source_file, episode=frame.episode_id, reason=DropReason.NO_GROUNDED_OBJECT,
            message=f"image {frame.image_key}: no object accepted ({len(decisions)} candidates: "
                    f"{decisions.count('rejected')} rejected, {decisions.count('needs_review')} need review); "
                    "see audit.parquet")


def _extra(frame: GroundingFrame, variant: str, objects: list[GroundedObject]) -> dict[str, Any]:
    return {
        "variant": variant, "camera": frame.camera, "step": frame.step, "selected_by": frame.selected_by,
        "objects": [{"phrase": o.phrase, "box_pixels": [round(v, 2) for v in o.box], "box_qwen": o.qwen_box,
                     "candidate_id": o.candidate.candidate_id, "detectors": o.candidate.agreeing} for o in objects],
    }
