"""Episode filters. Each is a small stage that records every drop under a named reason."""

from __future__ import annotations

import dataclasses

import numpy as np

from vlaforge.datasets.drops import DropReason
from vlaforge.datasets.schema import Episode
from vlaforge.pipelines.stage import Stage, StageConfig


class NonFiniteFilter(Stage):
    """Quarantines episodes with NaN or inf in state or action, naming the first bad step and dimension."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(StageConfig):
        pass

    def __call__(self, batch: list[Episode]) -> list[Episode]:
        return [episode for episode in batch if self._is_finite(episode)]

    def _is_finite(self, episode: Episode) -> bool:
        for field, names in (("state", episode.state_names), ("action", episode.action_names)):
            values = getattr(episode, field)
            bad = np.argwhere(~np.isfinite(values))
            if len(bad):
                step, dim = (int(i) for i in bad[0])
                self.ledger.quarantine(
                    file=episode.lineage.file,
                    episode=episode.episode_id,
                    reason=DropReason.NONFINITE,
                    message=(
                        f"{episode.lineage.file} {episode.lineage.index}: {field}[{step}, {dim}] ({names[dim]}) is "
                        f"{values[step, dim]} ({len(bad)} non-finite values); fix the recording or drop the episode"
                    ),
                    steps=len(episode),
                )
                return False
        return True


class SuccessFilter(Stage):
    """Drops episodes the source marked as failed. Episodes with unknown success pass."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(StageConfig):
        keep_failed: bool = False
        """Keep failed episodes too (they are still flagged in meta.json)."""

    def __call__(self, batch: list[Episode]) -> list[Episode]:
        kept = []
        for episode in batch:
            if episode.success is False and not self.config.keep_failed:
                self.ledger.drop(
                    file=episode.lineage.file,
                    episode=episode.episode_id,
                    reason=DropReason.FAILED_EPISODE,
                    steps=len(episode),
                )
            else:
                kept.append(episode)
        return kept


class IdleTrimmer(Stage):
    """Trims the still stretches at the start and end of an episode (the operator not yet moving, or done).

    A step is idle when no state dimension moves more than `threshold` to the next step. Only the head and tail
    are trimmed: cutting idle stretches out of the middle would break the timeline that action chunks rely on.
    """

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(StageConfig):
        threshold: float = 1e-3
        """Largest per-step change of any state dimension that still counts as no motion."""
        keep: int = 1
        """Idle steps kept at each end, so the episode still starts and ends at rest."""

        def __post_init__(self) -> None:
            if self.threshold < 0:
                raise ValueError(f"IdleTrimmer.Config.threshold must be >= 0, got {self.threshold}")
            if self.keep < 0:
                raise ValueError(f"IdleTrimmer.Config.keep must be >= 0, got {self.keep}")

    def __call__(self, batch: list[Episode]) -> list[Episode]:
        kept = []
        for episode in batch:
            trimmed = self._trim(episode)
            if trimmed is None:
                self.ledger.drop(
                    file=episode.lineage.file,
                    episode=episode.episode_id,
                    reason=DropReason.ALL_IDLE,
                    message="no state dimension moves in the whole episode",
                    steps=len(episode),
                )
            else:
                kept.append(trimmed)
        return kept

    def _trim(self, episode: Episode) -> Episode | None:
        if len(episode) < 2:
            return episode
        motion = np.abs(np.diff(episode.state, axis=0)).max(axis=1) > self.config.threshold
        moving = np.flatnonzero(motion)
        if len(moving) == 0:
            return None
        # motion[i] is the move from step i to i + 1: keep both ends of every move, plus `keep` rest steps.
        start = max(int(moving[0]) - self.config.keep, 0)
        stop = min(int(moving[-1]) + 2 + self.config.keep, len(episode))
        if (start, stop) == (0, len(episode)):
            return episode
        trimmed = episode.slice(start, stop)
        trimmed.flags.update(idle_trimmed_head=start, idle_trimmed_tail=len(episode) - stop)
        return trimmed


class MinLengthFilter(Stage):
    """Drops episodes shorter than `min_steps` (after trimming)."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(StageConfig):
        min_steps: int = 10
        """Episodes with fewer steps are dropped."""

        def __post_init__(self) -> None:
            if self.min_steps < 1:
                raise ValueError(f"MinLengthFilter.Config.min_steps must be >= 1, got {self.min_steps}")

    def __call__(self, batch: list[Episode]) -> list[Episode]:
        kept = []
        for episode in batch:
            if len(episode) < self.config.min_steps:
                self.ledger.drop(
                    file=episode.lineage.file,
                    episode=episode.episode_id,
                    reason=DropReason.TOO_SHORT,
                    message=f"{len(episode)} steps < min_steps {self.config.min_steps}",
                    steps=len(episode),
                )
            else:
                kept.append(episode)
        return kept
