"""What the teleop sources share: their timeline options, the recording they read, and how it becomes episodes.

A source reads one file into a `Recording` (every stream's timestamps, joint values and a way to fetch frames), then
`TimelineAssembler` puts it on the tick grid (`timeline.py`), applies the gap, missing-stream and bad-timestamp
policies, checks the frames the grid chose, and builds `Episode`s whose frames are read from the file only when a
sample is built (`teleop_frames.py`): memory does not grow with an episode's length. Every outcome is counted: an
episode set aside is a quarantine row (bad input) or a counted drop (where a policy says so), and each resampled
recording leaves one report row per stream for `resampling.parquet`.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import numpy as np

from vlaforge.datasets.bimanual import DIMENSION_NAMES, EMBODIMENT
from vlaforge.datasets.drops import DropLedger, DropReason
from vlaforge.datasets.frames import FrameConfig
from vlaforge.datasets.schema import Camera, Episode, Lineage, safe_key_part
from vlaforge.datasets.source import Source, SourceConfig
from vlaforge.datasets.teleop_frames import LazyFrames
from vlaforge.datasets.timeline import (
    NS_PER_S,
    RESAMPLING_SCHEMA,
    RESAMPLING_TABLE,
    DuplicateTimestampError,
    GapPolicy,
    MissingStreamError,
    NoOverlapError,
    Resampled,
    Timeline,
    TimelineError,
    TimestampOrderError,
    report_rows,
)

TIMELINE_FLAG = "timeline"
"""The key of the resampling summary in an episode's flags (and so in every sample's meta.json `flags`)."""


class ProblemPolicy(str, enum.Enum):
    """What happens to an episode whose input is wrong in a way the timeline detects."""

    QUARANTINE = "quarantine"
    """Set it aside as a quarantine row naming the file, the stream and the fix; the run goes on."""
    DROP = "drop"
    """Drop it, counted under its reason, without a quarantine row; the run goes on."""
    RAISE = "raise"
    """Stop the run with the named error."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TeleopConfig(SourceConfig):
    """The options every teleop source has (the format-specific ones are in each source's `Config`)."""

    frames: FrameConfig = FrameConfig()
    """How frames are stored: JPEGs already at the target size pass through byte for byte."""
    embodiment: str = EMBODIMENT
    """The embodiment key the model's per-robot config is looked up by."""
    dataset_name: str | None = None
    """The name shards are named by; None: the input directory's name."""
    control_rate_hz: float = 30.0
    """Ticks per second of the output timeline."""
    gap_threshold_s: float = 0.1
    """An interval between two consecutive measurements of one stream longer than this is a gap."""
    on_gap: GapPolicy = GapPolicy.FLAG
    """"flag": keep the episode and list its gaps in meta.json flags; "split": cut it at the gaps into episodes
    `<id>-seg00`, `<id>-seg01`, ..., each timed from its own first tick; "drop": drop it (counted)."""
    on_missing_stream: ProblemPolicy = ProblemPolicy.QUARANTINE
    """A configured stream (topic, camera, dataset) absent from a file: "quarantine", "drop" or "raise"."""
    on_bad_timestamps: ProblemPolicy = ProblemPolicy.QUARANTINE
    """Timestamps that go backwards or repeat within a stream: "quarantine", "drop" or "raise"."""
    files_per_unit: int = 8
    """Files (one episode each) per work unit."""

    _policies: ClassVar[dict[str, type[enum.Enum]]] = {
        "on_gap": GapPolicy, "on_missing_stream": ProblemPolicy, "on_bad_timestamps": ProblemPolicy,
    }

    def __post_init__(self) -> None:
        name = type(self).__qualname__
        for field, kind in self._policies.items():
            value = getattr(self, field)
            try:
                object.__setattr__(self, field, kind(value))
            except ValueError:
                allowed = [member.value for member in kind]
                raise ValueError(f"{name}.{field} must be one of {allowed}, got {value!r}") from None
        for field in ("root", "embodiment"):
            if not isinstance(getattr(self, field), str) or not getattr(self, field):
                raise ValueError(f"{name}.{field} must be a non-empty string, got {getattr(self, field)!r}")
        if self.dataset_name is not None and safe_key_part(str(self.dataset_name)) != self.dataset_name:
            raise ValueError(f"{name}.dataset_name may hold only letters, digits, '-' and '_', got "
                             f"{self.dataset_name!r}")
        if not isinstance(self.frames, FrameConfig):
            raise ValueError(f"{name}.frames must be a FrameConfig, got {self.frames!r}")
        per_unit = self.files_per_unit
        if isinstance(per_unit, bool) or not isinstance(per_unit, int) or per_unit < 1:
            raise ValueError(f"{name}.files_per_unit must be an int >= 1, got {per_unit!r}")
        try:
            self.timeline()
        except ValueError as error:  # names Timeline.Config's field; say which of ours it is
            raise ValueError(f"{name}.control_rate_hz / gap_threshold_s: {error}") from None

    def timeline(self) -> Timeline.Config:
        return Timeline.Config(rate_hz=self.control_rate_hz, gap_threshold_s=self.gap_threshold_s)


def check_cameras(config_name: str, cameras: Mapping[str, str]) -> dict[str, str]:
    """`cameras` (stream -> canonical camera) with Camera members made plain names; raises ValueError naming the
    field when a camera is unknown or used twice."""
    if not isinstance(cameras, Mapping) or not cameras:
        raise ValueError(f"{config_name}.cameras must map at least one stream to a camera name, got {cameras!r}")
    plain = {key: getattr(value, "value", value) for key, value in cameras.items()}
    valid = sorted(camera.value for camera in Camera)
    for key, camera in plain.items():
        if camera not in valid:
            raise ValueError(f"{config_name}.cameras maps {key!r} to {camera!r}, which is not one of {valid}")
    if len(set(plain.values())) != len(plain):
        raise ValueError(f"{config_name}.cameras maps two streams to one camera: {plain}")
    return plain


@dataclasses.dataclass
class VectorStream:
    """One stream of vectors: joint positions of one arm, say."""

    name: str
    """The stream's name in the file: a topic, or a dataset path."""
    role: str
    """What it feeds: "state.left", "action", "extra.qvel", ..."""
    stamps: np.ndarray
    """[m] int64 nanoseconds."""
    values: np.ndarray
    """[m, d] float64."""


class FrameError(ValueError):
    """A frame that cannot be stored (not a decodable JPEG, or raw pixels of the wrong shape)."""

    def __init__(self, index: int, error: Exception) -> None:
        super().__init__(f"measurement {index}: {error}")
        self.index = index


class FrameReadError(RuntimeError):
    """A frame that passed the first pass's check but cannot be read again when its sample is built: the file
    changed, or became unreadable, during the run. Not a fault of the recording, so it stops the unit (its shards
    are not marked done, and a rerun redoes it) instead of quarantining the episode."""

    def __init__(self, file: str, stream: str, index: int, error: Exception) -> None:
        super().__init__(f"{file}: {stream}, measurement {index} cannot be read again ({type(error).__name__}: "
                         f"{error}); the file changed or became unreadable during the ingest. Fix: leave the "
                         f"input unchanged while it is ingested, then rerun")


@dataclasses.dataclass
class FrameStream:
    """One camera's stream: its timestamps, a check of the frames the grid chose, and a reader of one frame."""

    name: str
    stamps: np.ndarray
    """[m] int64 nanoseconds."""
    check: Callable[[np.ndarray], None]
    """Sorted unique measurement indices -> raises `FrameError` for the first that `read` could not store (not a
    JPEG, cut short, unreadable); run before any sample of the episode is written."""
    read: Callable[[int], bytes]
    """One measurement index -> its JPEG as stored in shards, read from the file (opened again if need be)."""


@dataclasses.dataclass
class Recording:
    """One recorded episode as read from one file, before resampling."""

    file: str
    """Relative to the dataset root."""
    episode_id: str
    source_version: str
    cameras: dict[str, FrameStream]
    """Canonical camera -> its stream."""
    state: list[VectorStream]
    """Concatenated in this order into the state [n, 14]."""
    action: list[VectorStream]
    extras: list[VectorStream] = dataclasses.field(default_factory=list)
    """Kept beside the state as `Episode.extras[role without "extra."]`; each shares the timestamps of the stream
    it is named after, or has its own."""
    instructions: list[str] = dataclasses.field(default_factory=list)
    flags: dict[str, object] = dataclasses.field(default_factory=dict)
    """Flags every episode of the recording carries (for example `sim`)."""
    calibration: dict[str, dict] = dataclasses.field(default_factory=dict)
    """Camera -> calibration entry (`datasets/calibration.py`) found in the file; every episode of it carries it."""

    def stamps(self) -> dict[str, np.ndarray]:
        """Every distinct stream's timestamps, by stream name, in a stable order (cameras, state, action, extras)."""
        streams: dict[str, np.ndarray] = {frames.name: frames.stamps for frames in self.cameras.values()}
        for vector in (*self.state, *self.action, *self.extras):
            streams.setdefault(vector.name, vector.stamps)
        return streams

    def roles(self) -> dict[str, str]:
        roles = {frames.name: f"camera.{camera}" for camera, frames in self.cameras.items()}
        for vector in (*self.state, *self.action):
            roles[vector.name] = "+".join(filter(None, (roles.get(vector.name), vector.role)))
        return roles


_TIMELINE_REASONS: list[tuple[type[TimelineError], DropReason]] = [
    (MissingStreamError, DropReason.MISSING_STREAM),
    (DuplicateTimestampError, DropReason.DUPLICATE_TIMESTAMPS),
    (TimestampOrderError, DropReason.NONMONOTONIC_TIMESTAMPS),
    (NoOverlapError, DropReason.NO_OVERLAP),
    (TimelineError, DropReason.BAD_RECORD),
]


class TimelineAssembler:
    """Recordings -> episodes on the tick grid, with the configured policies; collects report rows as it goes."""

    def __init__(self, config: TeleopConfig, source: str) -> None:
        self.config = config
        self.source = source
        self.timeline = config.timeline().build()
        self.rows: list[dict[str, Any]] = []

    def take_rows(self) -> list[dict[str, Any]]:
        """The report rows collected so far (one per stream per recording), and start empty."""
        rows, self.rows = self.rows, []
        return rows

    def episodes(self, recording: Recording, ledger: DropLedger) -> list[Episode]:
        """The recording's episodes (none, one, or one per segment when split); problems go to `ledger`."""
        try:
            resampled = self.timeline.resample(recording.stamps(), origin=recording.file)
        except TimelineError as error:
            self.reject(error, recording.file, recording.episode_id, ledger)
            return []
        pieces, outcome = self._pieces(resampled, recording, ledger)
        try:
            episodes = self._build(recording, resampled, pieces)
        except _CameraFrameError as error:
            message = (f"{recording.file}: {error}; the episode is set aside. Fix: re-record or repair the file, "
                       f"or leave this camera out of `cameras`")
            ledger.quarantine(file=recording.file, episode=recording.episode_id, reason=DropReason.BAD_IMAGE,
                              message=message, steps=resampled.report.ticks)
            episodes, outcome = [], "quarantined"
        self.rows += report_rows(resampled.report, recording.roles(), episode_id=recording.episode_id,
                                 file=recording.file, outcome=outcome, segments=len(episodes))
        return episodes

    def reject(self, error: TimelineError, file: str, episode_id: str, ledger: DropLedger) -> None:
        """Apply the policy for `error` to the whole recording (quarantine, drop, or re-raise)."""
        reason = next(reason for kind, reason in _TIMELINE_REASONS if isinstance(error, kind))
        policy, field = ProblemPolicy.QUARANTINE, ""
        if reason is DropReason.MISSING_STREAM:
            policy, field = self.config.on_missing_stream, "on_missing_stream"
        elif reason in (DropReason.DUPLICATE_TIMESTAMPS, DropReason.NONMONOTONIC_TIMESTAMPS):
            policy, field = self.config.on_bad_timestamps, "on_bad_timestamps"
        if policy is ProblemPolicy.RAISE:
            raise error
        fix = f"fix the recording, or pass --set {field}=drop to skip such episodes" if field else "fix the recording"
        if getattr(error, "fix", None):
            fix = f"{error.fix}; or pass --set {field}=drop to skip such episodes"
        message = f"{error}; the episode is set aside. Fix: {fix}"
        if policy is ProblemPolicy.DROP:
            ledger.drop(file=file, episode=episode_id, reason=reason, message=message)
        else:
            ledger.quarantine(file=file, episode=episode_id, reason=reason, message=message)

    def _pieces(self, resampled: Resampled, recording: Recording,
                ledger: DropLedger) -> tuple[list[tuple[int, int]], str]:
        """Tick ranges to build after the gap policy, and the outcome ("kept", "flagged", "split", "dropped")."""
        report, policy = resampled.report, self.config.on_gap
        if not report.gaps:
            return [(0, report.ticks)], "kept"
        if policy is GapPolicy.FLAG:
            return [(0, report.ticks)], "flagged"
        segments = resampled.segments() if policy is GapPolicy.SPLIT else []
        if not segments:  # on_gap=drop, or a split that leaves no tick outside the gaps
            worst = max(report.gaps, key=lambda gap: gap.seconds)
            ledger.drop(file=recording.file, episode=recording.episode_id, reason=DropReason.TIMELINE_GAP,
                        steps=report.ticks,
                        message=f"{recording.file}: {len(report.gaps)} gaps longer than "
                                f"{self.config.gap_threshold_s:g} s, the longest {worst.seconds:.3f} s in "
                                f"{worst.stream}; dropped (on_gap={policy.value})")
            return [], "dropped"
        return segments, "split"

    def _build(self, recording: Recording, resampled: Resampled, pieces: list[tuple[int, int]]) -> list[Episode]:
        if not pieces:
            return []
        needed = np.concatenate([np.arange(a, b) for a, b in pieces])
        for stream in recording.cameras.values():
            _check_frames(stream, resampled.chosen[stream.name], needed)
        # One frame remembered per camera: a duplicated frame (the same measurement on consecutive ticks) is read once.
        readers = {camera: functools.lru_cache(maxsize=1)(stream.read) for camera, stream in recording.cameras.items()}
        split = len(pieces) > 1 or pieces[0] != (0, resampled.report.ticks)
        return [self._episode(recording, resampled, readers, a, b, k if split else None)
                for k, (a, b) in enumerate(pieces)]

    def _episode(self, recording: Recording, resampled: Resampled, readers: dict[str, Callable[[int], bytes]],
                 a: int, b: int, segment: int | None) -> Episode:
        chosen, ticks = resampled.chosen, resampled.ticks_ns
        episode_id = recording.episode_id if segment is None else f"{recording.episode_id}-seg{segment:02d}"
        flags: dict[str, object] = {**recording.flags, TIMELINE_FLAG: self._summary(resampled, ticks[a])}
        if segment is not None:
            flags["segment"] = segment
        episode = Episode(
            episode_id=episode_id,
            source=self.source,
            embodiment=self.config.embodiment,
            control_rate_hz=self.config.control_rate_hz,
            timestamps=(ticks[a:b] - ticks[a]) / NS_PER_S,
            frames={camera: LazyFrames(read, chosen[recording.cameras[camera].name][a:b])
                    for camera, read in readers.items()},
            state=_concat(recording.state, chosen, a, b),
            state_names=list(DIMENSION_NAMES),
            action=_concat(recording.action, chosen, a, b),
            action_names=list(DIMENSION_NAMES),
            instructions=list(recording.instructions),
            lineage=Lineage(file=recording.file, index=f"ticks {a}:{b} of {len(ticks)} from {ticks[0]} ns",
                            source_version=recording.source_version),
            extras={name: _concat(parts, chosen, a, b) for name, parts in _by_role(recording.extras).items()},
            flags=flags,
            split_group=recording.episode_id,  # every segment of a recording lands in the recording's split
            calibration=dict(recording.calibration),
        )
        episode.validate()
        return episode

    @staticmethod
    def _summary(resampled: Resampled, origin_ns: int) -> dict[str, object]:
        """The resampling summary in meta.json: the worst tick-to-measurement distance and the gaps, in seconds
        from this episode's first tick."""
        report = resampled.report
        return {
            "rate_hz": report.rate_hz,
            "max_offset_ms": round(max(stream.max_offset_ms for stream in report.streams), 3),
            "gaps": [{"stream": gap.stream, "from_s": round((gap.start_ns - origin_ns) / NS_PER_S, 6),
                      "to_s": round((gap.end_ns - origin_ns) / NS_PER_S, 6)} for gap in report.gaps],
        }


class _CameraFrameError(Exception):
    def __init__(self, stream: FrameStream, error: FrameError, tick: int) -> None:
        super().__init__(f"camera stream {stream.name}, {error} (chosen for tick {tick})")


def _check_frames(stream: FrameStream, chosen: np.ndarray, ticks: np.ndarray) -> None:
    """Check every measurement chosen by `ticks` (each once); a bad one names the first tick that chose it."""
    try:
        stream.check(np.unique(chosen[ticks]))
    except FrameError as error:
        tick = int(ticks[np.flatnonzero(chosen[ticks] == error.index)[0]])
        raise _CameraFrameError(stream, error, tick) from error


def _by_role(extras: list[VectorStream]) -> dict[str, list[VectorStream]]:
    """Extras grouped by name ("extra.qvel" -> "qvel"): parts of one extra (one per arm) are joined side by side."""
    groups: dict[str, list[VectorStream]] = {}
    for extra in extras:
        groups.setdefault(extra.role.removeprefix("extra."), []).append(extra)
    return groups


def _concat(parts: list[VectorStream], chosen: dict[str, np.ndarray], a: int, b: int) -> np.ndarray:
    """float32 [b - a, sum of widths]: each part's chosen rows, side by side."""
    return np.concatenate([part.values[chosen[part.name][a:b]] for part in parts], axis=1).astype(np.float32)


class TeleopSource(Source):
    """Base of the teleop sources: recordings assembled onto the tick grid, and the resampling report as a side
    table (`resampling.parquet`, one row per stream per recording)."""

    table_schemas = {RESAMPLING_TABLE: RESAMPLING_SCHEMA}

    def __init__(self, config: TeleopConfig) -> None:
        super().__init__(config)
        self.assembler = TimelineAssembler(config, self.name)

    def take_tables(self) -> dict[str, list[dict[str, Any]]]:
        """The report rows of what was read since the last call."""
        return {RESAMPLING_TABLE: self.assembler.take_rows()}
