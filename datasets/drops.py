"""Every item a pipeline drops is recorded here, under a named reason.

A *drop* is deliberate (a filter said no: too short, a failed episode); a *quarantine* is bad input (a CRC
mismatch, a JPEG that does not decode) and carries a message that names the file, the record and the fix. Both
are counted by reason; quarantined items also become rows of the quarantine Parquet table (`pipelines/quarantine.py`).
They live in the bottom layer because every source records its own bad records here.
"""

from __future__ import annotations

import collections
import dataclasses
import enum


class DropReason(str, enum.Enum):
    """Why an episode (or a whole file's tail) did not reach a shard."""

    # Filters: deliberate, counted.
    TOO_SHORT = "too_short"
    FAILED_EPISODE = "failed_episode"
    ALL_IDLE = "all_idle"
    NOT_SELECTED = "not_selected"
    """`vlaforge dataset filter`: the episode does not meet the selection."""
    # Bad input: quarantined, with a message.
    NONFINITE = "nonfinite"
    CRC_MISMATCH = "crc_mismatch"
    TRUNCATED_FILE = "truncated_file"
    BAD_RECORD = "bad_record"
    BAD_IMAGE = "bad_image"
    VIDEO_TOO_SHORT = "video_too_short"
    INCONSISTENT_LENGTHS = "inconsistent_lengths"
    UNREADABLE_FILE = "unreadable_file"
    # The timeline (teleop sources): bad input is quarantined, or dropped where the source's policy says so.
    MISSING_STREAM = "missing_stream"
    NONMONOTONIC_TIMESTAMPS = "nonmonotonic_timestamps"
    DUPLICATE_TIMESTAMPS = "duplicate_timestamps"
    NO_OVERLAP = "no_overlap"
    TIMELINE_GAP = "timeline_gap"
    # Grounding annotators: deliberate drops of images or episodes with nothing to ground or nothing agreed.
    NO_PHRASES = "no_phrases"
    NO_GROUNDED_OBJECT = "no_grounded_object"
    # VL data (relabeling, embodied reasoning, general VL datasets): rejected answers are drops, bad rows quarantined.
    VLM_REFUSED_REQUEST = "vlm_refused_request"
    ANSWER_EMPTY = "answer_empty"
    ANSWER_TRUNCATED = "answer_truncated"
    ANSWER_TOO_SHORT = "answer_too_short"
    ANSWER_TOO_LONG = "answer_too_long"
    ANSWER_WRONG_LANGUAGE = "answer_wrong_language"
    ANSWER_ECHOES_PROMPT = "answer_echoes_prompt"
    ANSWER_NOT_JSON = "answer_not_json"
    ANSWER_JSON_SHAPE = "answer_json_shape"
    ANSWER_REFUSAL = "answer_refusal"
    ANSWER_CONTRADICTS_STATE = "answer_contradicts_state"
    ANSWER_DISAGREES_WITH_REFERENCE = "answer_disagrees_with_reference"
    ANSWER_NEAR_DUPLICATE = "answer_near_duplicate"
    ANSWER_JUDGED_UNSUPPORTED = "answer_judged_unsupported"
    ANSWER_JUDGE_UNREADABLE = "answer_judge_unreadable"
    MISSING_CAMERA = "missing_camera"
    NO_INSTRUCTION = "no_instruction"
    TOO_FEW_SEGMENTS = "too_few_segments"
    NO_CALIBRATION = "no_calibration"
    TRAJECTORY_OUT_OF_VIEW = "trajectory_out_of_view"
    MISSING_IMAGE = "missing_image"
    NO_ASSISTANT_TURN = "no_assistant_turn"
    BAD_CONVERSATION = "bad_conversation"
    DUPLICATE_SAMPLE = "duplicate_sample"
    """The same images and the same conversation as an earlier row (rows sharing an image are kept)."""
    NEAR_DUPLICATE_IMAGE = "near_duplicate_image"
    """A near-duplicate of an earlier row's image (perceptual hash), dropped only when the ingest is asked to."""
    # The training loader: a sample that decodes but does not fit the model's token budget is quarantined.
    TOO_MANY_TOKENS = "too_many_tokens"


@dataclasses.dataclass(frozen=True)
class Drop:
    """One dropped item. `quarantined` marks bad input (a row in the quarantine table)."""

    file: str
    episode: str
    reason: DropReason
    message: str
    quarantined: bool
    steps: int = 0
    """How many timesteps went with it, when known."""

    def as_row(self) -> dict[str, object]:
        return {
            "file": self.file,
            "episode": self.episode,
            "reason": self.reason.value,
            "message": self.message,
            "quarantined": self.quarantined,
            "steps": self.steps,
        }

    @classmethod
    def from_row(cls, row: dict) -> "Drop":
        return cls(**{**row, "reason": DropReason(row["reason"])})


class DropLedger:
    """Collects drops for one unit of work; the runner takes them out after each unit."""

    def __init__(self) -> None:
        self._drops: list[Drop] = []

    def drop(self, *, file: str, episode: str, reason: DropReason, message: str = "", steps: int = 0) -> None:
        """Record a deliberate drop by a filter."""
        self._drops.append(Drop(file, episode, reason, message, quarantined=False, steps=steps))

    def quarantine(self, *, file: str, episode: str, reason: DropReason, message: str, steps: int = 0) -> None:
        """Record bad input that was set aside; `message` says what is wrong and how to fix it."""
        self._drops.append(Drop(file, episode, reason, message, quarantined=True, steps=steps))

    def extend(self, drops: list[Drop]) -> None:
        """Record drops another ledger took (a stage that ran in another process hands its drops back)."""
        self._drops.extend(drops)

    def take(self) -> list[Drop]:
        """Hand over everything recorded so far and start empty."""
        drops, self._drops = self._drops, []
        return drops

    def __len__(self) -> int:
        return len(self._drops)


def count_by_reason(drops: list[Drop]) -> dict[str, int]:
    """Drops counted per reason, in a stable order."""
    return dict(sorted(collections.Counter(d.reason.value for d in drops).items()))
