"""The canonical records every source produces and every shard stores.

An `Episode` is one robot episode on one timeline, in memory. A robot *sample* is one timestep of it inside a
WebDataset shard: a plain dict keyed by member extension (see `SampleKey`). Names of cameras, sample members and
meta fields live here and nowhere else.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import re
from collections.abc import Sequence

import numpy as np


class Camera(str, enum.Enum):
    """Canonical camera names. Each source maps its own camera names onto these."""

    EXTERIOR_1 = "exterior_1"
    EXTERIOR_2 = "exterior_2"
    WRIST = "wrist"
    LEFT_WRIST = "left_wrist"
    RIGHT_WRIST = "right_wrist"


class SampleKey(str, enum.Enum):
    """Members of a robot sample in a shard (the part of the member name after the key)."""

    KEY = "__key__"
    STATE = "state.npy"
    ACTION = "action.npy"
    META = "meta.json"

    @staticmethod
    def camera(name: str) -> str:
        """The member holding one camera's JPEG frame."""
        return f"{name}.jpg"

    @staticmethod
    def extra(name: str) -> str:
        """The member holding an extra per-step array (for example DROID's cartesian pose)."""
        return f"{name}.npy"


class MetaField(str, enum.Enum):
    """Fields of a robot sample's `meta.json`."""

    SOURCE = "source"
    EMBODIMENT = "embodiment"
    EPISODE_ID = "episode_id"
    STEP = "step"
    TIMESTAMP = "timestamp"
    CONTROL_RATE_HZ = "control_rate_hz"
    INSTRUCTION = "instruction"
    INSTRUCTIONS = "instructions"
    STATE_NAMES = "state_names"
    ACTION_NAMES = "action_names"
    VALID_LEN = "valid_len"
    EPISODE_LEN = "episode_len"
    SPLIT = "split"
    FLAGS = "flags"
    LINEAGE = "lineage"
    CALIBRATION = "calibration"
    """Camera -> intrinsics and pose in the robot base frame (`datasets/calibration.py`), when the source has them;
    absent from shards written before it existed and from episodes without calibration."""


_KEY_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


@functools.lru_cache(maxsize=1024)  # called once per sample with the same episode id
def safe_key_part(text: str) -> str:
    """`text` reduced to the characters a WebDataset key may hold: no dots, no slashes."""
    return _KEY_UNSAFE.sub("-", text).strip("-") or "x"


def sample_key(episode_id: str, step: int) -> str:
    """The stable `__key__` of one timestep: derived from the episode's lineage id, never from a counter."""
    return f"{safe_key_part(episode_id)}_{step:06d}"


@dataclasses.dataclass(frozen=True)
class Lineage:
    """Where an episode came from, precisely enough to find it again."""

    file: str
    """The source file (or directory for formats spread over files), relative to the dataset root."""
    index: str
    """The record or episode index inside that file, or a frame range such as "frames 1200:1450"."""
    source_version: str
    """The dataset's own version string (TFDS version, LeRobot codebase version)."""

    def as_dict(self) -> dict[str, str]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Episode:
    """One robot episode on one timeline.

    Frames are encoded JPEG bytes, one per camera per tick, passed through untouched when the source already stores
    JPEG at the target size. A camera's frames are any `Sequence[bytes]`: a list, or a lazy sequence that reads each
    frame from the source file on access (the teleop sources: an episode then costs its arrays, not its frames);
    slicing either keeps its kind. `state` is [n, Ds] and `action` [n, Da], float32, with one name per dimension.
    """

    episode_id: str
    source: str
    embodiment: str
    control_rate_hz: float
    timestamps: np.ndarray
    """[n] float64 seconds from the episode start."""
    frames: dict[str, Sequence[bytes]]
    """Camera -> its [n] encoded JPEG frames."""
    state: np.ndarray
    state_names: list[str]
    action: np.ndarray
    action_names: list[str]
    instructions: list[str]
    lineage: Lineage
    success: bool | None = None
    first_step: int = 0
    """Index of this episode's first step in the source episode (non-zero once the head was trimmed)."""
    extras: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    """Extra per-step arrays [n, k] kept beside the state (for example DROID's cartesian pose)."""
    flags: dict[str, object] = dataclasses.field(default_factory=dict)
    """Quality flags set by sources and filters (for example how many idle steps were trimmed)."""
    split_group: str | None = None
    """What the train/validation split is decided by; None: the episode's own id. Episodes cut from one recording
    (a teleop log split at its gaps) carry the recording's id, so they all land in the same split."""
    calibration: dict[str, dict] = dataclasses.field(default_factory=dict)
    """Camera -> its calibration entry (`datasets/calibration.py`: intrinsics, camera_to_base, source), kept at
    ingest where the source has it; travels in every sample's meta.json."""

    def __len__(self) -> int:
        return int(self.timestamps.shape[0])

    def validate(self) -> None:
        """Raise ValueError naming the field when the arrays disagree in length or shape."""
        n = len(self)
        arrays = {"state": self.state, "action": self.action, **{f"extras[{k}]": v for k, v in self.extras.items()}}
        for name, array in arrays.items():
            if array.ndim != 2 or array.shape[0] != n:
                raise ValueError(f"episode {self.episode_id}: {name} has shape {array.shape}, expected ({n}, D)")
        for camera, frames in self.frames.items():
            if len(frames) != n:
                raise ValueError(f"episode {self.episode_id}: camera {camera} has {len(frames)} frames for {n} steps")
        if self.state.shape[1] != len(self.state_names) or self.action.shape[1] != len(self.action_names):
            raise ValueError(f"episode {self.episode_id}: dimension names do not match state/action widths")

    def slice(self, start: int, stop: int) -> "Episode":
        """The steps [start, stop) as a new episode sharing the same identity."""
        return dataclasses.replace(
            self,
            timestamps=self.timestamps[start:stop],
            frames={cam: frames[start:stop] for cam, frames in self.frames.items()},
            state=self.state[start:stop],
            action=self.action[start:stop],
            extras={k: v[start:stop] for k, v in self.extras.items()},
            flags=dict(self.flags),
            first_step=self.first_step + start,
        )

    @property
    def split_key(self) -> str:
        """The id the split is hashed from: `split_group`, or the episode id when it has none."""
        return self.split_group or self.episode_id

    @property
    def instruction(self) -> str:
        """The primary instruction: the first non-empty one."""
        return next((text for text in self.instructions if text), "")


class VlTask(str, enum.Enum):
    """What a vision-language sample teaches; the corpus weights datasets, and a dataset holds one task."""

    GROUNDING = "grounding"
    CAPTION = "caption"
    VQA = "vqa"
    EQA = "eqa"
    PLANNING = "planning"
    TRAJECTORY = "trajectory"
    GENERAL = "general"


class VlSampleKey(str, enum.Enum):
    """Members of a VL sample in a shard: images `0.jpg`, `1.jpg`, ... in the order the conversation shows them."""

    KEY = "__key__"
    CONVERSATION = "conversation.json"
    META = "meta.json"

    @staticmethod
    def image(index: int) -> str:
        return f"{index}.jpg"


class VlMetaField(str, enum.Enum):
    """Fields of a VL sample's `meta.json`."""

    TASK = "task"
    DATASET = "dataset"
    SOURCE_KEY = "source_key"
    """The robot sample key (or general dataset row id) the sample was made from."""
    SOURCE_GROUP = "source_group"
    """The episode (or source image) it belongs to: the split is decided per group, so no episode straddles splits."""
    IMAGE_SIZES = "image_sizes"
    """[[height, width], ...] of the images, in order: what box and point coordinates were scaled by."""
    PROVENANCE = "provenance"
    """[{"model": id, "revision": ..., "prompt_version": ..., "settings": {...}}, ...]: every model that made it."""
    CONSENSUS_ID = "consensus_id"
    SPLIT = "split"
    EXTRA = "extra"
    """Task-specific details (boxes in pixels, segment times, ...) for audits; never read by training."""


class ChatRole(str, enum.Enum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
