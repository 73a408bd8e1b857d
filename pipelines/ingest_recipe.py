"""Build an ingest job from a source name and plain options (what the CLI and the Prefect flow pass in)."""

from __future__ import annotations

import dataclasses
from typing import Any

from vlaforge.datasets.configurable import config_from_dict
from vlaforge.datasets.frames import FrameConfig
from vlaforge.datasets.registry import Yields, input_format
from vlaforge.datasets.source import SourceConfig
from vlaforge.pipelines.filters import IdleTrimmer, MinLengthFilter, NonFiniteFilter, SuccessFilter
from vlaforge.pipelines.job import Job
from vlaforge.pipelines.robot_dataset import RobotDatasetSink
from vlaforge.pipelines.samples import RobotSampleBuilder
from vlaforge.pipelines.shards.writer import ShardConfig
from vlaforge.pipelines.stage import StageConfig


@dataclasses.dataclass(frozen=True, kw_only=True)
class IngestOptions:
    """The knobs of an ingest run that do not depend on the source format."""

    chunk_len: int = 32
    """T_max: actions stored per step."""
    validation_fraction: float = 0.05
    """Fraction of episodes that go to the validation split (by hash of the episode id)."""
    min_steps: int = 10
    """Episodes shorter than this (after trimming) are dropped."""
    keep_failed: bool = False
    """Keep episodes the source marks as failed (DROID's success flag)."""
    trim_idle: bool = True
    """Trim still stretches at the start and end of each episode."""
    idle_threshold: float = 1e-3
    """Largest per-step state change that still counts as no motion."""
    shard_max_samples: int | None = None
    """Samples per shard (None: no limit)."""
    shard_max_bytes: int | None = 256 * 2**20
    """Bytes per shard (None: no limit)."""
    frame_size: tuple[int, int] | None = None
    """(height, width) of stored frames; None keeps each source's native size (JPEG passes through untouched)."""
    jpeg_quality: int = 90
    """Quality of frames that have to be (re-)encoded."""
    verify_jpeg: str = "scan"
    """How much of each source JPEG is checked: "header", "scan" (every scan's entropy-coded data, by a 1/8-scale
    decode) or "full" (`datasets/frames.py`)."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "IngestOptions":
        """The options from JSON (what the flow receives); a misspelt one is answered with the closest name."""
        return config_from_dict(cls, data, where="ingest options")

    def stages(self) -> tuple[StageConfig, ...]:
        stages: list[StageConfig] = [NonFiniteFilter.Config(), SuccessFilter.Config(keep_failed=self.keep_failed)]
        if self.trim_idle:
            stages.append(IdleTrimmer.Config(threshold=self.idle_threshold))
        stages.append(MinLengthFilter.Config(min_steps=self.min_steps))
        stages.append(RobotSampleBuilder.Config(chunk_len=self.chunk_len, validation_fraction=self.validation_fraction))
        return tuple(stages)

    def frames(self) -> FrameConfig:
        return FrameConfig(size=self.frame_size, quality=self.jpeg_quality, verify=self.verify_jpeg)


def source_config(source: str, root: str, frames: FrameConfig, overrides: dict[str, Any]) -> SourceConfig:
    """The robot source's config with `overrides` (field name -> value) applied; typos get a "did you mean"."""
    entry = input_format(source)
    if entry.yields is not Yields.EPISODES:
        raise ValueError(f"{source} yields {entry.yields.value}, not robot episodes: ingest it with the ingest-vl "
                         f"flow (`vlaforge ingest {source}` runs it)")
    return config_from_dict(entry.source.Config, overrides, where=f"{source} source",
                            given={"root": root, "frames": frames})


def build_ingest_job(
    source: str, input_path: str, output: str, options: IngestOptions, source_overrides: dict[str, Any] | None = None
) -> Job:
    """The full job: source config, the filter and sample stages, and a robot dataset with this shard layout."""
    return Job(
        source=source_config(source, input_path, options.frames(), source_overrides or {}),
        stages=options.stages(),
        sink=RobotDatasetSink.Config(shards=ShardConfig(max_samples=options.shard_max_samples,
                                                        max_bytes=options.shard_max_bytes)),
        output=output,
    )
