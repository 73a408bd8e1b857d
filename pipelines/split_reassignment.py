"""`vlaforge dataset split`: give stored episodes a new train / validation split, episode by episode.

By fraction, an episode's split is the ingest's (`split.py`: a hash of its id), so the same fraction gives the same
split on any machine; the segments of one recording (`<id>-seg00`, ... with a `segment` flag) are hashed by the
recording's id and stay together, as at ingest. By list, the episodes named go to validation and the rest to train.
Only each step's `meta.json` changes (its `split`); frames and arrays are kept byte for byte.
"""

from __future__ import annotations

import dataclasses
import re

from vlaforge.datasets.schema import MetaField, SampleKey
from vlaforge.pipelines.samples import json_bytes
from vlaforge.pipelines.shards.stored_episodes import StoredEpisode
from vlaforge.pipelines.split import Split, split_of
from vlaforge.pipelines.stage import Stage, StageConfig

_SEGMENT = re.compile(r"-seg\d+$")


class SplitReassignment(Stage):
    """Stored episodes -> the same episodes, each in its new split."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(StageConfig):
        validation_fraction: float | None = None
        """The share of episodes (by a hash of the id) in validation; None when `validation_episodes` decide."""
        validation_episodes: tuple[str, ...] = ()
        """Exactly these episodes go to validation, every other to train."""

        def __post_init__(self) -> None:
            object.__setattr__(self, "validation_episodes", tuple(self.validation_episodes))
            fraction = self.validation_fraction
            if (fraction is None) == (not self.validation_episodes):
                raise ValueError("SplitReassignment.Config needs validation_fraction or validation_episodes (one)")
            if fraction is not None and not 0 <= fraction <= 1:
                raise ValueError(f"SplitReassignment.Config.validation_fraction must be in [0, 1], got {fraction}")

    config: Config

    def split_of(self, episode: StoredEpisode) -> Split:
        if self.config.validation_fraction is None:
            return Split.VALIDATION if episode.episode_id in self.config.validation_episodes else Split.TRAIN
        flags = episode.meta.get(MetaField.FLAGS.value) or {}
        group = _SEGMENT.sub("", episode.episode_id) if "segment" in flags else episode.episode_id
        return split_of(group, self.config.validation_fraction)

    def __call__(self, batch: list[StoredEpisode]) -> list[StoredEpisode]:
        for episode in batch:
            split = self.split_of(episode).value
            if split == episode.split:
                continue
            for step in range(len(episode)):
                meta = episode.step_meta(step)
                meta[MetaField.SPLIT.value] = split
                episode.steps[step][SampleKey.META.value] = json_bytes(meta)
            episode.meta[MetaField.SPLIT.value] = split
        return batch
