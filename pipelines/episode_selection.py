"""`vlaforge dataset filter`: keep the stored episodes that meet a selection, drop the rest (counted, named)."""

from __future__ import annotations

import dataclasses

from vlaforge.datasets.drops import DropReason
from vlaforge.pipelines.shards.stored_episodes import StoredEpisode
from vlaforge.pipelines.stage import Stage, StageConfig


class EpisodeSelection(Stage):
    """Stored episodes -> those that meet every criterion set (an unset criterion selects everything)."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(StageConfig):
        episodes: tuple[str, ...] = ()
        """Keep only these episode ids; () keeps every id."""
        exclude_episodes: tuple[str, ...] = ()
        """Drop these episode ids."""
        embodiment: str | None = None
        """Keep only episodes of this embodiment."""
        success: bool | None = None
        """Keep only successful (True) or failed (False) episodes; an episode whose success is unknown meets
        neither."""
        min_steps: int | None = None
        """Keep episodes with at least this many steps."""
        max_steps: int | None = None
        """Keep episodes with at most this many steps."""
        instruction: str | None = None
        """Keep episodes whose instruction contains this text (case does not matter)."""
        splits: tuple[str, ...] = ()
        """Keep only episodes of these splits ("train", "validation"); () keeps every split."""

        def __post_init__(self) -> None:
            for field in ("episodes", "exclude_episodes", "splits"):
                object.__setattr__(self, field, tuple(getattr(self, field)))
            for field in ("min_steps", "max_steps"):
                value = getattr(self, field)
                if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                    raise ValueError(f"EpisodeSelection.Config.{field} must be an int >= 0, got {value!r}")
            if None not in (self.min_steps, self.max_steps) and self.min_steps > self.max_steps:
                raise ValueError(f"EpisodeSelection.Config: min_steps {self.min_steps} > max_steps {self.max_steps}")
            unknown = set(self.splits) - {"train", "validation"}
            if unknown:
                raise ValueError(f"EpisodeSelection.Config.splits holds {sorted(unknown)}; splits are train, "
                                 "validation")

    config: Config

    def __call__(self, batch: list[StoredEpisode]) -> list[StoredEpisode]:
        kept = []
        for episode in batch:
            miss = self.miss(episode)
            if miss is None:
                kept.append(episode)
            else:
                self.ledger.drop(file=episode.input, episode=episode.episode_id, reason=DropReason.NOT_SELECTED,
                                 message=f"episode {episode.episode_id}: {miss}", steps=len(episode))
        return kept

    def miss(self, episode: StoredEpisode) -> str | None:
        """The first criterion `episode` fails, said plainly; None when it meets every one."""
        config = self.config
        if config.episodes and episode.episode_id not in config.episodes:
            return "not among the episodes asked for"
        if episode.episode_id in config.exclude_episodes:
            return "excluded by id"
        if config.embodiment is not None and episode.embodiment != config.embodiment:
            return f"embodiment {episode.embodiment}, not {config.embodiment}"
        if config.success is not None and episode.success is not config.success:
            return f"success is {episode.success}, not {config.success}"
        if config.min_steps is not None and len(episode) < config.min_steps:
            return f"{len(episode)} steps, fewer than {config.min_steps}"
        if config.max_steps is not None and len(episode) > config.max_steps:
            return f"{len(episode)} steps, more than {config.max_steps}"
        if config.instruction is not None and config.instruction.lower() not in episode.instruction.lower():
            return f"instruction {episode.instruction!r} does not contain {config.instruction!r}"
        if config.splits and episode.split not in config.splits:
            return f"split {episode.split}, not {' or '.join(config.splits)}"
        return None
