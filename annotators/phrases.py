"""The objects to ground in each image: phrases from the episode's instructions, plus an ontology and negatives.

Offline by default: a small rule-based chunker splits an instruction at verbs, prepositions and conjunctions and
strips determiners ("put the red mug on the shelf" -> "red mug", "shelf"); no model is downloaded. Optionally a
VLM extracts them instead (any `VlmClient` backend), falling back to the rules when its answer is not the JSON
asked for. The ontology is asked in every image; negatives are objects that should never be there, asked on
purpose so a detector that boxes them shows that it hallucinates.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from collections.abc import Iterable
from typing import Any

from vlaforge.annotators.grounding_frame import GroundingFrame
from vlaforge.datasets.drops import DropReason
from vlaforge.pipelines.stage import Stage, StageConfig

logger = logging.getLogger(__name__)

VERBS = frozenset("""
put place pick move take open close push pull turn grab grasp lift set drop insert remove stack unstack wipe pour
fold unfold slide rotate flip hang press get bring hand give throw clean sweep cover uncover empty fill arrange
sort shift hold release plug unplug switch tilt knock use find go reach touch point leave keep return transfer
store lay position align stir scoop cut pack unpack load unload toss twist screw unscrew water wash dry shut
carry spread hang squeeze peel shake knock tap drag stand lean raise lower
""".split())
PREPOSITIONS = frozenset("""
on onto in into to from under underneath below beneath above over inside outside out off behind beside near next
at by with using between toward towards across through up down around along against within upon atop
""".split())
CONJUNCTIONS = frozenset("and then or but while after before so".split())
DETERMINERS = frozenset("""
the a an this that these those some any each every its it them their his her my your our all both one two three
four five another other
""".split())
FILLER = frozenset("please gently carefully slowly quickly back away again just also now first finally there here"
                   .split())
LOCATION_WORDS = frozenset("top bottom side left right front back middle center centre edge corner end part".split())
_WORD = re.compile(r"[a-z0-9][a-z0-9'-]*")


def normalize_phrase(text: str) -> str:
    """Lower case, single spaces, no punctuation: the form detectors are prompted with and the audit records."""
    return " ".join(_WORD.findall(text.lower()))


def rule_phrases(instruction: str, max_words: int = 4) -> list[str]:
    """Object phrases of one instruction, in order of appearance, without duplicates."""
    phrases: list[str] = []
    for chunk in _chunks(_WORD.findall(instruction.lower())):
        words = _strip_location(chunk)[-max_words:]
        phrase = " ".join(words)
        if words and phrase not in phrases:
            phrases.append(phrase)
    return phrases


def _chunks(words: list[str]) -> Iterable[list[str]]:
    """Runs of words between verbs, prepositions and conjunctions, with determiners and filler removed."""
    chunk: list[str] = []
    for word in words:
        if word in VERBS or word in PREPOSITIONS or word in CONJUNCTIONS:
            if chunk:
                yield chunk
            chunk = []
        elif word not in DETERMINERS and word not in FILLER:
            chunk.append(word)
    if chunk:
        yield chunk


def _strip_location(words: list[str]) -> list[str]:
    """"left side of stove" -> "stove"; "left drawer" stays (a location word is only dropped before "of")."""
    if "of" in words:
        head = words[: words.index("of")]
        if all(w in LOCATION_WORDS for w in head):
            return _strip_location(words[words.index("of") + 1 :])
    if words and words[-1] == "of":
        words = words[:-1]
    return [w for w in words if not (w in LOCATION_WORDS and len(words) == 1)]


VLM_PROMPT = (
    "A robot was given this instruction: {instruction!r}. List the physical objects it mentions that a camera "
    "could see, as short noun phrases with their adjectives (e.g. \"red mug\"), without articles. Answer with "
    'one JSON object: {{"objects": ["...", "..."]}}.'
)
VLM_PROMPT_VERSION = "phrases-v1"


def parse_vlm_phrases(text: str) -> list[str] | None:
    """The phrases of a VLM answer `{"objects": [...]}` (a bare list is accepted too); None when it is not that."""
    match = re.search(r"[\[{].*[\]}]", text, re.DOTALL)
    try:
        data = json.loads(match.group(0)) if match else None
    except json.JSONDecodeError:
        return None
    items = data.get("objects") if isinstance(data, dict) else data
    if not isinstance(items, list) or not all(isinstance(item, str) for item in items):
        return None
    return list(dict.fromkeys(p for p in (normalize_phrase(i) for i in items) if p))


class PhraseStage(Stage):
    """Frames -> the same frames with `phrases` and `negatives`; an episode with nothing to ground is dropped."""

    @property
    def pooled(self) -> bool:  # type: ignore[override]
        """Pooled when a VLM extracts the phrases; rules alone run with the CPU stages."""
        return self.config.vlm is not None

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(StageConfig):
        ontology: tuple[str, ...] = ()
        """Objects asked in every image besides those of the instruction (e.g. "robot gripper", "table")."""
        negatives: tuple[str, ...] = ()
        """Objects that should not be in any image (e.g. "elephant"): every box for one is a hallucination."""
        max_phrases: int = 8
        """At most this many object phrases per image (instruction phrases first, then the ontology)."""
        max_words: int = 4
        """Longer rule-based phrases keep their last words (the head noun comes last in English)."""
        vlm: Any = None
        """A `VlmBackendConfig` (see `annotators/vlm_client.py`) to extract phrases with a VLM; None: rules only."""

        def __post_init__(self) -> None:
            for name in ("ontology", "negatives"):
                for phrase in getattr(self, name):
                    if not normalize_phrase(phrase):
                        raise ValueError(f"PhraseStage.Config.{name} holds {phrase!r}, which has no words")
            clash = {normalize_phrase(p) for p in self.ontology} & {normalize_phrase(p) for p in self.negatives}
            if clash:
                raise ValueError(f"PhraseStage.Config: {sorted(clash)} cannot be both in the ontology and a negative")
            if self.max_phrases < 1 or self.max_words < 1:
                raise ValueError(f"PhraseStage.Config.max_phrases and max_words must be >= 1, got "
                                 f"{self.max_phrases} and {self.max_words}")

    def __init__(self, config: "PhraseStage.Config") -> None:
        super().__init__(config)
        self.client: Any = None
        self.vlm_fallbacks = 0
        """Instructions whose VLM answer was unusable, so the rules extracted their phrases."""

    def setup(self) -> None:
        if self.config.vlm is not None:
            self.client = self.config.vlm.build()
            self.client.setup()

    def __call__(self, batch: list[GroundingFrame]) -> list[GroundingFrame]:
        config: PhraseStage.Config = self.config  # type: ignore[assignment]
        negatives = list(dict.fromkeys(normalize_phrase(p) for p in config.negatives))
        by_instructions: dict[tuple[str, ...], list[str]] = {}
        kept, dropped = [], set()
        for frame in batch:
            key = tuple(frame.instructions)
            if key not in by_instructions:
                by_instructions[key] = self._phrases(frame.instructions)
            frame.phrases, frame.negatives = by_instructions[key], negatives
            if frame.phrases:
                kept.append(frame)
            elif frame.episode_id not in dropped:
                dropped.add(frame.episode_id)
                self.ledger.drop(file=frame.source_file, episode=frame.episode_id, reason=DropReason.NO_PHRASES,
                                 message=f"episode {frame.episode_id}: no object phrase in its instructions "
                                         f"{frame.instructions!r} and no ontology; pass --class to ask for objects")
        return kept

    def _phrases(self, instructions: list[str]) -> list[str]:
        config: PhraseStage.Config = self.config  # type: ignore[assignment]
        found: list[str] = []
        for instruction in (text for text in instructions if text.strip()):
            extracted = self._vlm_phrases(instruction) if self.client is not None else None
            found += extracted if extracted is not None else rule_phrases(instruction, config.max_words)
        found += [normalize_phrase(p) for p in config.ontology]
        negatives = {normalize_phrase(p) for p in config.negatives}
        return [p for p in dict.fromkeys(found) if p not in negatives][: config.max_phrases]

    def _vlm_phrases(self, instruction: str) -> list[str] | None:
        from vlaforge.annotators.vlm_client import ResponseFormat, VlmRequest
        from vlaforge.pipelines.vl_samples import user

        request = VlmRequest(messages=[user(VLM_PROMPT.format(instruction=instruction))],
                             response_format=ResponseFormat.JSON, max_new_tokens=128, request_id=instruction)
        (answer,) = self.client.generate([request])
        phrases = parse_vlm_phrases(answer.text) if answer.ok else None
        if phrases is None:
            self.vlm_fallbacks += 1
            logger.warning("VLM phrase extraction gave no usable JSON for %r (%s); using the rules",
                           instruction, answer.error or answer.text[:80])
        return phrases
