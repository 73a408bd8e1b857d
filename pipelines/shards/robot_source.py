"""Our own robot shards read back as canonical `Episode`s: the input of every annotator and VL generator.

A unit is a run of consecutive shards (in manifest order) such that no episode straddles two units: shards that
share an episode always land in the same unit, so stages that need a whole episode (gripper key frames, plan
segments, future trajectories) see it whole. `action` is the first action of each stored chunk, which is the
episode's own action at that step.
"""

from __future__ import annotations

import dataclasses
import tarfile
from collections.abc import Iterator
from typing import Any

import numpy as np

from vlaforge.datasets.drops import DropLedger, DropReason
from vlaforge.datasets.schema import Episode, Lineage, MetaField, SampleKey
from vlaforge.datasets.source import Source, SourceConfig, WorkUnit
from vlaforge.pipelines.shards.manifest import records_of_split
from vlaforge.pipelines.shards.members import UnsafeShardError, iter_samples

_FIXED = {SampleKey.STATE.value, SampleKey.ACTION.value, SampleKey.META.value, SampleKey.KEY.value}
_URL = "__url__"
_CUT_SHORT = "__cut_short__"


class RobotShardSource(Source):
    """Episodes from a robot dataset written by `vlaforge ingest` (its directory holds `manifest.parquet`)."""

    name = "robot-shards"

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(SourceConfig):
        shards_per_unit: int = 4
        """Shards per work unit (more when episodes straddle shards: a unit never splits an episode)."""
        split: str | None = "train"
        """Only shards of this split; None for every split."""

        def __post_init__(self) -> None:
            if self.shards_per_unit < 1:
                raise ValueError(f"RobotShardSource.Config.shards_per_unit must be >= 1, got {self.shards_per_unit}")

    @property
    def dataset_name(self) -> str:
        return self.root.name

    def plan(self) -> list[WorkUnit]:
        records = records_of_split(self.root, self.config.split)
        groups: list[list[str]] = []
        previous_last: str | None = None
        for record in records:
            continues = groups and record.episodes and record.episodes[0] == previous_last
            if continues or (groups and len(groups[-1]) < self.config.shards_per_unit):
                groups[-1].append(record.url)
            else:
                groups.append([record.url])
            previous_last = record.episodes[-1] if record.episodes else None
        return [WorkUnit(index, tuple(urls)) for index, urls in enumerate(groups)]

    def read(self, unit: WorkUnit, ledger: DropLedger) -> Iterator[Episode]:
        steps: list[dict[str, Any]] = []
        for url in unit.files:
            bad_before = len(ledger)
            for sample in self._samples(url, ledger):
                sample[_URL] = url
                if steps and _episode_of(sample) != _episode_of(steps[-1]):
                    yield self._episode(steps)
                    steps = []
                steps.append(sample)
            if len(ledger) > bad_before and steps:
                steps[-1][_CUT_SHORT] = url  # the rest of this episode, if any, was in the unreadable part
        if steps:
            yield self._episode(steps)

    def _samples(self, url: str, ledger: DropLedger) -> Iterator[dict[str, Any]]:
        """A shard's samples; a shard that cannot be read is quarantined, after the samples read so far."""
        path = self.root / url
        try:
            with open(path, "rb") as file:
                yield from iter_samples(file, url)
        except (OSError, tarfile.TarError, UnsafeShardError, ValueError) as error:
            ledger.quarantine(file=url, episode="", reason=DropReason.UNREADABLE_FILE,
                              message=f"{path}: {error}; re-run the ingest that wrote it (its sha256 is in the manifest)")

    def _episode(self, steps: list[dict[str, Any]]) -> Episode:
        meta = steps[0][SampleKey.META.value]
        cameras = [name[: -len(".jpg")] for name in steps[0] if name.endswith(".jpg")]
        extras = [name[: -len(".npy")] for name in steps[0] if name.endswith(".npy") and name not in _FIXED]
        urls = sorted({s[_URL] for s in steps})
        flags = dict(meta[MetaField.FLAGS.value])
        flags[MetaField.SPLIT.value] = meta[MetaField.SPLIT.value]  # VL samples made from it keep its split
        if _CUT_SHORT in steps[-1]:
            flags["cut_short_by_unreadable_shard"] = steps[-1][_CUT_SHORT]
        return Episode(
            episode_id=meta[MetaField.EPISODE_ID.value],
            source=meta[MetaField.SOURCE.value],
            embodiment=meta[MetaField.EMBODIMENT.value],
            control_rate_hz=meta[MetaField.CONTROL_RATE_HZ.value],
            timestamps=np.array([s[SampleKey.META.value][MetaField.TIMESTAMP.value] for s in steps], np.float64),
            frames={camera: [s[SampleKey.camera(camera)] for s in steps] for camera in cameras},
            state=np.stack([s[SampleKey.STATE.value] for s in steps]).astype(np.float32),
            state_names=list(meta[MetaField.STATE_NAMES.value]),
            action=np.stack([s[SampleKey.ACTION.value][0] for s in steps]).astype(np.float32),
            action_names=list(meta[MetaField.ACTION_NAMES.value]),
            instructions=list(meta[MetaField.INSTRUCTIONS.value]),
            lineage=Lineage(file=",".join(urls), index=str(meta[MetaField.EPISODE_ID.value]),
                            source_version=self.dataset_name),
            success=meta[MetaField.FLAGS.value].get("success"),
            first_step=int(meta[MetaField.STEP.value]),
            extras={name: np.stack([s[SampleKey.extra(name)] for s in steps]) for name in extras},
            flags=flags,
            calibration=dict(meta.get(MetaField.CALIBRATION.value) or {}),  # shards before it have none
        )


def _episode_of(sample: dict[str, Any]) -> str:
    return sample[SampleKey.META.value][MetaField.EPISODE_ID.value]
