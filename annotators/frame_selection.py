"""Which frames of an episode to ground: the first, every k-th, and key frames where the gripper opens or closes,
for each camera.

Grounding every step of a 30 Hz episode would label near-identical images hundreds of times; a few frames per
episode cover what changes. Gripper key frames are where the scene changes most (an object is grasped or let go).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import simplejpeg

from vlaforge.annotators.grounding_frame import GroundingFrame
from vlaforge.datasets.drops import DropReason
from vlaforge.datasets.schema import Episode, MetaField
from vlaforge.pipelines.stage import Stage, StageConfig

POLICIES = ("first", "every_k", "gripper")


def gripper_key_steps(signal: np.ndarray, *, threshold: float | None, min_range: float,
                      closed_high: bool) -> list[tuple[int, str]]:
    """(step, "gripper_close" | "gripper_open") where the binarized gripper signal [n] changes state.

    `threshold` None takes the midpoint of the episode's range; a signal spanning less than `min_range` never
    changes state (sensor noise on a gripper that stayed put).
    """
    signal = np.asarray(signal, dtype=np.float64)
    low, high = float(signal.min(initial=0.0)), float(signal.max(initial=0.0))
    if signal.size < 2 or high - low < min_range:
        return []
    cut = (low + high) / 2 if threshold is None else threshold
    closed = (signal > cut) if closed_high else (signal < cut)
    changes = np.flatnonzero(closed[1:] != closed[:-1]) + 1
    return [(int(i), "gripper_close" if closed[i] else "gripper_open") for i in changes]


class FrameSelector(Stage):
    """Episodes -> `GroundingFrame`s (decoded once); a frame that does not decode is quarantined."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(StageConfig):
        policies: tuple[str, ...] = ("first", "gripper")
        """Any of "first", "every_k", "gripper"; the frames chosen are the union."""
        every_k: int = 30
        """The step interval of "every_k"."""
        cameras: tuple[str, ...] | None = None
        """Cameras to ground; None takes every camera of the episode."""
        gripper_dimension: str | None = None
        """The state dimension holding the gripper; None takes the first whose name contains "gripper"."""
        gripper_threshold: float | None = None
        """Value separating open from closed; None uses the midpoint of each episode's range."""
        gripper_min_range: float = 0.05
        """A gripper signal spanning less than this never changes state."""
        gripper_closed_high: bool = True
        """Whether larger values mean closed (DROID's gripper_position: 0 open, 1 closed)."""
        max_frames: int = 16
        """At most this many steps per episode (the earliest); each camera gives one frame per step."""
        dataset: str | None = None
        """The dataset name the audit records; None uses each episode's `source`."""

        def __post_init__(self) -> None:
            unknown = [p for p in self.policies if p not in POLICIES]
            if unknown or not self.policies:
                raise ValueError(f"FrameSelector.Config.policies must be a non-empty subset of {POLICIES}, "
                                 f"got {self.policies}")
            if self.every_k < 1 or self.max_frames < 1:
                raise ValueError(f"FrameSelector.Config.every_k and max_frames must be >= 1, got {self.every_k} "
                                 f"and {self.max_frames}")

    def __call__(self, batch: list[Episode]) -> list[GroundingFrame]:
        return [frame for episode in batch for frame in self._frames(episode)]

    def select_steps(self, episode: Episode) -> list[tuple[int, str]]:
        """(step index within the episode, policy) of the chosen steps, in order; the first policy wins a tie."""
        config: FrameSelector.Config = self.config  # type: ignore[assignment]
        chosen: dict[int, str] = {}
        if "first" in config.policies and len(episode):
            chosen.setdefault(0, "first")
        if "every_k" in config.policies:
            for step in range(0, len(episode), config.every_k):
                chosen.setdefault(step, "every_k")
        if "gripper" in config.policies:
            dimension = self._gripper_dimension(episode)
            if dimension is not None:
                for step, kind in gripper_key_steps(
                        episode.state[:, dimension], threshold=config.gripper_threshold,
                        min_range=config.gripper_min_range, closed_high=config.gripper_closed_high):
                    chosen.setdefault(step, kind)
        return sorted(chosen.items())[: config.max_frames]

    def _gripper_dimension(self, episode: Episode) -> int | None:
        wanted = self.config.gripper_dimension  # type: ignore[attr-defined]
        for index, name in enumerate(episode.state_names):
            if (wanted is not None and name == wanted) or (wanted is None and "gripper" in name.lower()):
                return index
        if wanted is not None:
            raise ValueError(f"episode {episode.episode_id}: no state dimension named {wanted!r} (it has "
                             f"{episode.state_names}); fix FrameSelector.Config.gripper_dimension")
        return None

    def _frames(self, episode: Episode) -> list[GroundingFrame]:
        config: FrameSelector.Config = self.config  # type: ignore[assignment]
        cameras = list(episode.frames) if config.cameras is None else [c for c in config.cameras
                                                                       if c in episode.frames]
        frames = []
        for step, policy in self.select_steps(episode):
            for camera in cameras:
                frame = self._frame(episode, step, camera, policy, config.dataset or episode.source)
                if frame is not None:
                    frames.append(frame)
        return frames

    def _frame(self, episode: Episode, step: int, camera: str, policy: str, dataset: str) -> GroundingFrame | None:
        data = episode.frames[camera][step]
        try:
            pixels = simplejpeg.decode_jpeg(data, colorspace="RGB")
        except ValueError as error:
            self.ledger.quarantine(
                file=episode.lineage.file, episode=episode.episode_id, reason=DropReason.BAD_IMAGE,
                message=f"episode {episode.episode_id} step {episode.first_step + step} camera {camera}: the JPEG "
                        f"({len(data)} bytes) does not decode ({error}); the image is not grounded. Fix: re-ingest "
                        f"{episode.lineage.file} with --verify-jpeg full")
            return None
        return GroundingFrame(
            dataset=dataset, episode_id=episode.episode_id, source_file=episode.lineage.file,
            step=episode.first_step + step, camera=camera, jpeg=data, pixels=pixels, selected_by=policy,
            instructions=[text for text in episode.instructions if text],
            split=episode.flags.get(MetaField.SPLIT.value),
        )
