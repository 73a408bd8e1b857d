"""Build an ingest job from a source name and plain options (what the CLI and the Prefect flow pass in)."""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

from vlaforge.datasets.frames import FrameConfig
from vlaforge.datasets.registry import source_class
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
    verify_jpeg: str = "header"
    """"header" (markers and header, no pixel decode) or "full" (decode every frame)."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "IngestOptions":
        fields = {f.name for f in dataclasses.fields(cls)}
        for name in data:
            if name not in fields:
                close = difflib.get_close_matches(name, fields, n=1)
                raise ValueError(f"unknown ingest option {name!r}" + (f"; did you mean {close[0]!r}?" if close else ""))
        if data.get("frame_size") is not None:
            data = {**data, "frame_size": tuple(data["frame_size"])}
        return cls(**data)

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
    """The source's config with `overrides` (field name -> value) applied; typos get a "did you mean"."""
    config_type = source_class(source).Config
    fields = {f.name: f for f in dataclasses.fields(config_type)}
    for name in overrides:
        if name not in fields:
            close = difflib.get_close_matches(name, fields, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"{source} has no option {name!r}{hint} Options: {', '.join(sorted(fields))}")
    values = {name: tuple(v) if isinstance(v, list) else v for name, v in overrides.items()}
    return config_type(root=root, frames=frames, **values)


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
