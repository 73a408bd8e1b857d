"""Split an episode into sub-tasks at gripper open/close events and pauses of the arm. Pure numpy.

The gripper signal is thresholded with hysteresis (so sensor noise around the threshold is not an event); a pause
is a stretch of at least `min_pause_s` where the end effector moves slower than `pause_speed`. Each event ends a
segment: a gripper event at the step the state flips, a pause at its first still step. Segments shorter than
`min_segment_s` are merged into a neighbour, dropping the weaker boundary (a pause before a gripper event).
"""

from __future__ import annotations

import dataclasses
import enum

import numpy as np

from vlaforge.datasets.schema import Episode


class Boundary(str, enum.Enum):
    """What ends a segment; the plan prompt says it in words."""

    GRIPPER_CLOSES = "gripper_closes"
    GRIPPER_OPENS = "gripper_opens"
    PAUSE = "pause"
    EPISODE_END = "episode_end"

    def describe(self) -> str:
        return {
            Boundary.GRIPPER_CLOSES: "the gripper closes",
            Boundary.GRIPPER_OPENS: "the gripper opens",
            Boundary.PAUSE: "the arm stops moving",
            Boundary.EPISODE_END: "the episode ends",
        }[self]


_STRENGTH = {Boundary.PAUSE: 0, Boundary.GRIPPER_CLOSES: 1, Boundary.GRIPPER_OPENS: 1, Boundary.EPISODE_END: 2}


@dataclasses.dataclass(frozen=True)
class Segment:
    """Steps [start, stop) of the episode, and the event that ends them."""

    start: int
    stop: int
    ends_with: Boundary

    def as_dict(self) -> dict[str, object]:
        return {"start": self.start, "stop": self.stop, "ends_with": self.ends_with.value}


@dataclasses.dataclass(frozen=True, kw_only=True)
class SegmentationConfig:
    """How an episode is cut into sub-tasks."""

    gripper_dim: str = "gripper"
    """The gripper signal: the first state dimension whose name contains this (DROID: `gripper_position`)."""
    position_extra: str | None = "cartesian_position"
    """Extra array whose first 3 columns are the end-effector position; when absent, the non-gripper state."""
    closed_above: float = 0.5
    """Gripper signal above this (plus hysteresis) is closed, below it (minus hysteresis) open; DROID's
    `gripper_position` runs from 0 (open) to 1 (closed). Use a negative scale in the source for the reverse."""
    hysteresis: float = 0.1
    """Half-width of the band around `closed_above` where the gripper keeps its previous state."""
    pause_speed: float = 0.01
    """End-effector speed (position units per second, metres for DROID) below which the arm is still."""
    min_pause_s: float = 0.4
    """Shortest stillness that counts as a pause."""
    min_segment_s: float = 0.5
    """Shorter segments are merged into a neighbour."""

    def __post_init__(self) -> None:
        for name in ("hysteresis", "pause_speed", "min_pause_s", "min_segment_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"SegmentationConfig.{name} must be >= 0, got {getattr(self, name)}")


def gripper_closed(signal: np.ndarray, closed_above: float, hysteresis: float) -> np.ndarray:
    """[n] bool: closed or not at each step, with hysteresis (the first step decides by the plain threshold)."""
    closed = np.empty(len(signal), bool)
    state = bool(len(signal) and signal[0] > closed_above)
    for i, value in enumerate(signal):
        if value > closed_above + hysteresis:
            state = True
        elif value < closed_above - hysteresis:
            state = False
        closed[i] = state
    return closed


def pauses(positions: np.ndarray, timestamps: np.ndarray, pause_speed: float,
           min_pause_s: float) -> list[tuple[int, int]]:
    """[start, stop) step ranges where the speed of `positions` [n, 3] stays below `pause_speed` for at least
    `min_pause_s`, excluding stillness that touches the episode's first or last step (waiting, not a sub-task end)."""
    if len(positions) < 2:
        return []
    speed = np.linalg.norm(np.diff(positions, axis=0), axis=1) / np.maximum(np.diff(timestamps), 1e-9)
    still = np.concatenate([speed < pause_speed, [False]])  # step i is still when it barely moves to i + 1
    runs, start = [], None
    for i, is_still in enumerate(still):
        if is_still and start is None:
            start = i
        elif not is_still and start is not None:
            runs.append((start, i + 1))
            start = None
    long_enough = [(a, b) for a, b in runs if timestamps[min(b, len(timestamps)) - 1] - timestamps[a] >= min_pause_s]
    return [(a, b) for a, b in long_enough if a > 0 and b < len(positions)]


def segment_episode(gripper: np.ndarray, positions: np.ndarray, timestamps: np.ndarray,
                    config: SegmentationConfig) -> list[Segment]:
    """Segments covering steps [0, n) in order. `gripper` [n] is the gripper signal, `positions` [n, 3] the
    end-effector position (or any low-dimensional pose), `timestamps` [n] seconds."""
    n = len(timestamps)
    if n == 0:
        return []
    closed = gripper_closed(gripper, config.closed_above, config.hysteresis)
    cuts: dict[int, Boundary] = {}
    for a, _ in pauses(positions, timestamps, config.pause_speed, config.min_pause_s):
        cuts[a] = Boundary.PAUSE
    for step in np.flatnonzero(closed[1:] != closed[:-1]) + 1:
        cuts[int(step)] = Boundary.GRIPPER_CLOSES if closed[step] else Boundary.GRIPPER_OPENS
    segments, start = [], 0
    for step in sorted(cuts):
        segments.append(Segment(start, step, cuts[step]))
        start = step
    segments.append(Segment(start, n, Boundary.EPISODE_END))
    return _merge_short(segments, timestamps, config.min_segment_s)


def _merge_short(segments: list[Segment], timestamps: np.ndarray, min_s: float) -> list[Segment]:
    """Merge segments shorter than `min_s` into a neighbour, removing the weaker of their two boundaries."""
    def duration(segment: Segment) -> float:
        return float(timestamps[segment.stop - 1] - timestamps[segment.start]) if segment.stop > segment.start else 0

    segments = list(segments)
    while len(segments) > 1:
        short = [i for i, s in enumerate(segments) if duration(s) < min_s]
        if not short:
            break
        i = short[0]
        before = segments[i - 1] if i > 0 else None
        # Merging with the previous segment removes the previous boundary; with the next, this one's.
        if before is not None and (i == len(segments) - 1
                                   or _STRENGTH[before.ends_with] <= _STRENGTH[segments[i].ends_with]):
            segments[i - 1 : i + 1] = [Segment(before.start, segments[i].stop, segments[i].ends_with)]
        else:
            after = segments[i + 1]
            segments[i : i + 2] = [Segment(segments[i].start, after.stop, after.ends_with)]
    return segments


def episode_signals(episode: Episode, config: SegmentationConfig) -> tuple[np.ndarray | None, np.ndarray]:
    """The gripper signal [n] (None when no state dimension is named like `gripper_dim`) and the end-effector
    positions [n, k]: the first 3 columns of `position_extra` when the episode has it, else the other state dims."""
    gripper = [i for i, name in enumerate(episode.state_names) if config.gripper_dim in name]
    if config.position_extra and config.position_extra in episode.extras:
        positions = episode.extras[config.position_extra][:, :3]
    else:
        positions = np.delete(episode.state, gripper, axis=1)
    return (episode.state[:, gripper[0]] if gripper else None), positions.astype(np.float64)


def segment(episode: Episode, config: SegmentationConfig) -> list[Segment]:
    """`segment_episode` on an Episode; without a gripper dimension, only pauses cut it."""
    gripper, positions = episode_signals(episode, config)
    if gripper is None:
        gripper = np.zeros(len(episode))
    return segment_episode(gripper, positions, episode.timestamps, config)


def speed_at(positions: np.ndarray, timestamps: np.ndarray, step: int) -> float:
    """End-effector speed at `step` (towards the next step; at the last step, from the previous one)."""
    a, b = (step, step + 1) if step + 1 < len(positions) else (step - 1, step)
    if a < 0:
        return 0.0
    return float(np.linalg.norm(positions[b] - positions[a]) / max(timestamps[b] - timestamps[a], 1e-9))
