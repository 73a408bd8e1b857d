"""One uniform tick grid for streams that tick at their own rates: nearest-timestamp resampling, exactly.

Every timestamp is an integer number of nanoseconds (ROS stamps and MCAP log times are exact integers; float
seconds are converted once, by the caller). The rules, which the tests pin down:

- **The grid** is half-open: it starts at the latest first measurement of all streams and holds every tick
  `start + round(k * 1e9 / rate_hz)` ns that lies strictly before the earliest last measurement. Streams that span
  exactly 10 s at 30 Hz give 300 ticks (k = 0..299); the tick at 10 s itself is not on the grid.
- **Nearest.** Each tick takes the measurement of each stream nearest to it. On a tie (a tick exactly half-way
  between two measurements) the earlier measurement wins: it was already available at the tick.
- **Order.** A stream's timestamps must strictly increase. A step backwards or a repeat raises a named error that
  names the origin (file), the stream and the index; nothing is ever reordered.
- **Gaps.** An interval between consecutive measurements longer than `gap_threshold_s` that overlaps the grid is a
  gap. A tick lies *inside* a gap when it is more than half a tick period away from both measurements around it;
  those ticks are what a caller splits or flags on.
- **The report**, per stream: measurements, measured rate ((m - 1) / (last - first)), the largest and mean distance
  between a tick and its chosen measurement, duplicated frames (ticks that reuse the previous tick's measurement),
  skipped frames (measurements between the first and last chosen ones that no tick took) and gaps.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa

NS_PER_S = 1_000_000_000


class GapPolicy(str, enum.Enum):
    """What happens to an episode with a gap longer than the threshold in any stream."""

    FLAG = "flag"
    """Keep the episode whole; the gaps are listed in its flags."""
    SPLIT = "split"
    """Cut the episode into the runs of ticks outside every gap."""
    DROP = "drop"
    """Drop the whole episode (counted under `timeline_gap`)."""


class TimelineError(ValueError):
    """A stream that cannot be put on the timeline; the message names the origin, the stream and what to fix."""

    def __init__(self, message: str, *, origin: str, stream: str) -> None:
        super().__init__(message)
        self.origin, self.stream = origin, stream


class TimestampOrderError(TimelineError):
    """A stream's timestamps step backwards (or repeat, see `DuplicateTimestampError`) at `index`."""

    def __init__(self, message: str, *, origin: str, stream: str, index: int) -> None:
        super().__init__(message, origin=origin, stream=stream)
        self.index = index


class DuplicateTimestampError(TimestampOrderError):
    """Two consecutive measurements of one stream carry the same timestamp."""


class MissingStreamError(TimelineError):
    """A required stream has no measurement at all."""

    def __init__(self, message: str, *, origin: str, stream: str, fix: str | None = None) -> None:
        super().__init__(message, origin=origin, stream=stream)
        self.fix = fix
        """What would map the stream onto what the file has (a `--set` line), when the source can tell."""


class NoOverlapError(TimelineError):
    """The streams never all have data at the same time, so the grid is empty."""


class ImplausibleSpanError(TimelineError):
    """The streams overlap for longer than any episode could last: mixed clocks or units."""


@dataclasses.dataclass(frozen=True)
class Gap:
    """An interval longer than the threshold between two consecutive measurements of one stream."""

    stream: str
    start_ns: int
    """Timestamp of the measurement before the gap."""
    end_ns: int
    """Timestamp of the measurement after it."""

    @property
    def seconds(self) -> float:
        return (self.end_ns - self.start_ns) / NS_PER_S


@dataclasses.dataclass(frozen=True)
class StreamReport:
    """How one stream was resampled; distances in milliseconds."""

    stream: str
    measurements: int
    measured_hz: float
    """(m - 1) / (last - first): the stream's own average rate."""
    max_offset_ms: float
    mean_offset_ms: float
    duplicated: int
    skipped: int
    gaps: int
    max_gap_ms: float
    """The longest interval between consecutive measurements overlapping the grid (a gap or not)."""


@dataclasses.dataclass(frozen=True)
class TimelineReport:
    """The per-episode resampling report."""

    rate_hz: float
    gap_threshold_s: float
    ticks: int
    start_ns: int
    streams: tuple[StreamReport, ...]
    gaps: tuple[Gap, ...]

    @property
    def duration_s(self) -> float:
        return self.ticks / self.rate_hz

    def stream(self, name: str) -> StreamReport:
        return next(report for report in self.streams if report.stream == name)


@dataclasses.dataclass(frozen=True)
class Resampled:
    """Streams on one grid: `ticks_ns` [K] int64 and, per stream, `chosen[name]` [K] int64 measurement indices."""

    ticks_ns: np.ndarray
    chosen: dict[str, np.ndarray]
    in_gap: np.ndarray
    """[K] bool: the tick lies inside a gap of some stream."""
    report: TimelineReport

    def segments(self) -> list[tuple[int, int]]:
        """The maximal runs [start, stop) of ticks outside every gap, in order."""
        keep = np.concatenate([[False], ~self.in_gap, [False]])
        edges = np.flatnonzero(np.diff(keep.astype(np.int8)))
        return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


class Timeline:
    """Resamples named streams of timestamps onto one uniform grid (see the module docstring for the rules)."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config:
        rate_hz: float = 30.0
        """Ticks per second of the output grid."""
        gap_threshold_s: float = 0.1
        """An interval between consecutive measurements longer than this is a gap."""
        max_duration_s: float = 6 * 3600.0
        """A grid longer than this is refused: its timestamps mix clocks (header stamps and log times) or units."""

        def __post_init__(self) -> None:
            for field in ("rate_hz", "gap_threshold_s", "max_duration_s"):
                value = getattr(self, field)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
                    raise ValueError(f"Timeline.Config.{field} must be a positive number, got {value!r}")

        def build(self) -> "Timeline":
            return Timeline(self)

    def __init__(self, config: Config) -> None:
        self.config = config

    @property
    def period_ns(self) -> float:
        return NS_PER_S / self.config.rate_hz

    def grid(self, start_ns: int, stop_ns: int) -> np.ndarray:
        """[K] int64 ticks `start + round(k * 1e9 / rate)` strictly before `stop_ns`."""
        span = stop_ns - start_ns
        count = max(int(np.ceil(span / self.period_ns)), 0)
        offsets = self._offsets(count + 1)  # one spare: the ceiling can be one short after rounding
        return start_ns + offsets[offsets < span]

    def _offsets(self, count: int) -> np.ndarray:
        # k * 1e9 is an exact integer in float64 up to 9e15 ns, so the only rounding is the final division.
        return np.rint(np.arange(count, dtype=np.float64) * NS_PER_S / self.config.rate_hz).astype(np.int64)

    def resample(self, streams: Mapping[str, np.ndarray], origin: str = "") -> Resampled:
        """Put every stream ([m] int64 ns timestamps) on the grid; raises a `TimelineError` naming what is wrong."""
        for name, stamps in streams.items():
            check_order(stamps, origin=origin, stream=name)
        start, stop = _overlap(streams, origin)
        if stop - start > self.config.max_duration_s * NS_PER_S:
            raise ImplausibleSpanError(
                f"{origin}: the streams overlap for {(stop - start) / NS_PER_S:.0f} s, longer than max_duration_s "
                f"({self.config.max_duration_s:.0f} s); their timestamps likely mix clocks or units",
                origin=origin, stream=next(iter(streams)))
        ticks = self.grid(start, stop)
        chosen = {name: nearest(stamps, ticks) for name, stamps in streams.items()}
        gaps = [gap for name, stamps in streams.items() for gap in self._gaps(name, stamps, start, stop)]
        in_gap = self._in_gap(ticks, gaps)
        reports = tuple(self._stream_report(name, streams[name], ticks, chosen[name], start, stop) for name in streams)
        report = TimelineReport(self.config.rate_hz, self.config.gap_threshold_s, len(ticks), start, reports,
                                tuple(gaps))
        return Resampled(ticks, chosen, in_gap, report)

    def _gaps(self, name: str, stamps: np.ndarray, start: int, stop: int) -> list[Gap]:
        threshold = self.config.gap_threshold_s * NS_PER_S
        intervals = np.diff(stamps)
        where = np.flatnonzero((intervals > threshold) & (stamps[1:] > start) & (stamps[:-1] < stop))
        return [Gap(name, int(stamps[i]), int(stamps[i + 1])) for i in where]

    def _in_gap(self, ticks: np.ndarray, gaps: list[Gap]) -> np.ndarray:
        half = self.period_ns / 2
        inside = np.zeros(len(ticks), dtype=bool)
        for gap in gaps:
            inside |= (ticks > gap.start_ns + half) & (ticks < gap.end_ns - half)
        return inside

    def _stream_report(self, name: str, stamps: np.ndarray, ticks: np.ndarray, chosen: np.ndarray, start: int,
                       stop: int) -> StreamReport:
        offsets = np.abs(ticks - stamps[chosen]) / 1e6
        unique = len(np.unique(chosen))
        window = (stamps[1:] > start) & (stamps[:-1] < stop)
        intervals = np.diff(stamps)[window]
        gaps = int(np.count_nonzero(intervals > self.config.gap_threshold_s * NS_PER_S))
        return StreamReport(
            stream=name,
            measurements=len(stamps),
            measured_hz=(len(stamps) - 1) * NS_PER_S / float(stamps[-1] - stamps[0]),
            max_offset_ms=float(offsets.max()),
            mean_offset_ms=float(offsets.mean()),
            duplicated=len(ticks) - unique,
            skipped=int(chosen[-1] - chosen[0] + 1) - unique,
            gaps=gaps,
            max_gap_ms=float(intervals.max()) / 1e6 if len(intervals) else 0.0,
        )


def check_order(stamps: np.ndarray, *, origin: str, stream: str) -> None:
    """Raise `MissingStreamError` for no measurements, `DuplicateTimestampError` or `TimestampOrderError` at the
    first index whose timestamp does not exceed the one before."""
    if len(stamps) == 0:
        raise MissingStreamError(f"{origin}: {stream} has no measurements", origin=origin, stream=stream)
    bad = np.flatnonzero(np.diff(stamps) <= 0)
    if not len(bad):
        return
    index = int(bad[0]) + 1
    now, before = _relative_s(stamps, index), _relative_s(stamps, index - 1)
    if stamps[index] == stamps[index - 1]:
        raise DuplicateTimestampError(
            f"{origin}: {stream}: measurement {index} repeats the timestamp of measurement {index - 1} "
            f"({now:.6f} s after the stream's first)", origin=origin, stream=stream, index=index)
    raise TimestampOrderError(
        f"{origin}: {stream}: timestamps go backwards at measurement {index} ({now:.6f} s after {before:.6f} s, "
        f"counted from the stream's first)", origin=origin, stream=stream, index=index)


def _relative_s(stamps: np.ndarray, index: int) -> float:
    return float(stamps[index] - stamps[0]) / NS_PER_S


def _overlap(streams: Mapping[str, np.ndarray], origin: str) -> tuple[int, int]:
    """[start, stop): from the latest first measurement to the earliest last one."""
    if not streams:
        raise MissingStreamError(f"{origin}: no streams to resample", origin=origin, stream="")
    first = max(streams, key=lambda name: int(streams[name][0]))
    last = min(streams, key=lambda name: int(streams[name][-1]))
    start, stop = int(streams[first][0]), int(streams[last][-1])
    if stop <= start:
        raise NoOverlapError(
            f"{origin}: the streams never all have data at once: {last} ends {(start - stop) / NS_PER_S:.3f} s "
            f"before {first} starts", origin=origin, stream=last)
    return start, stop


def nearest(stamps: np.ndarray, ticks: np.ndarray) -> np.ndarray:
    """[K] indices into `stamps` ([m], strictly increasing) of the measurement nearest to each tick; on a tie, the
    earlier one."""
    after = np.clip(np.searchsorted(stamps, ticks, side="left"), 0, len(stamps) - 1)
    before = np.maximum(after - 1, 0)
    take_before = (ticks - stamps[before]) <= (stamps[after] - ticks)
    return np.where(take_before, before, after).astype(np.int64)


def seconds_to_ns(seconds: np.ndarray) -> np.ndarray:
    """float seconds -> int64 nanoseconds, rounded to the nearest nanosecond."""
    return np.rint(np.asarray(seconds, dtype=np.float64) * NS_PER_S).astype(np.int64)


RESAMPLING_TABLE = "resampling"
"""The side table of the resampling report: `resampling.parquet` beside a teleop dataset's manifest."""
RESAMPLING_SCHEMA = pa.schema(
    [("episode_id", pa.string()), ("file", pa.string()), ("outcome", pa.string()), ("segments", pa.int64()),
     ("role", pa.string()), ("stream", pa.string()), ("grid_hz", pa.float64()), ("ticks", pa.int64()),
     ("duration_s", pa.float64()), ("gap_threshold_s", pa.float64()), ("measurements", pa.int64()),
     ("measured_hz", pa.float64()), ("max_offset_ms", pa.float64()), ("mean_offset_ms", pa.float64()),
     ("duplicated", pa.int64()), ("skipped", pa.int64()), ("gaps", pa.int64()), ("max_gap_ms", pa.float64())]
)
"""One row per stream per resampled recording (`report_rows`)."""


def report_rows(report: TimelineReport, roles: Mapping[str, str] | None = None,
                **identity: Any) -> list[dict[str, Any]]:
    """One row per stream for the resampling table, each led by `identity` (episode id, file, ...) and the
    stream's role (`roles[stream]`, what it feeds)."""
    return [
        {**identity, "role": (roles or {}).get(stream.stream, ""), "grid_hz": report.rate_hz, "ticks": report.ticks,
         "duration_s": report.duration_s, "gap_threshold_s": report.gap_threshold_s, **dataclasses.asdict(stream)}
        for stream in report.streams
    ]


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A run's resampling summary from its report rows: episodes by outcome, ticks, gaps, and per role the worst
    and mean tick-to-measurement distance and the duplicated and skipped frames. Empty without rows."""
    if not rows:
        return {}
    episodes = {(row["file"], row["episode_id"]): row for row in rows}
    outcomes: dict[str, int] = {}
    for row in episodes.values():
        outcomes[row["outcome"]] = outcomes.get(row["outcome"], 0) + 1
    roles: dict[str, dict[str, float]] = {}
    for row in rows:
        role = roles.setdefault(row["role"] or row["stream"], {"max_offset_ms": 0.0, "mean_offset_ms": 0.0,
                                                               "duplicated": 0, "skipped": 0, "gaps": 0, "ticks": 0})
        role["max_offset_ms"] = max(role["max_offset_ms"], row["max_offset_ms"])
        role["mean_offset_ms"] += row["mean_offset_ms"] * row["ticks"]  # tick-weighted; divided below
        for field in ("duplicated", "skipped", "gaps", "ticks"):
            role[field] += row[field]
    for role in roles.values():
        role["mean_offset_ms"] = round(role["mean_offset_ms"] / max(role.pop("ticks"), 1), 3)
        role["max_offset_ms"] = round(role["max_offset_ms"], 3)
    return {
        "episodes": len(episodes),
        "ticks": sum(row["ticks"] for row in episodes.values()),
        "outcomes": dict(sorted(outcomes.items())),
        "gaps": sum(row["gaps"] for row in rows),
        "gap_threshold_s": max(row["gap_threshold_s"] for row in rows),
        "roles": dict(sorted(roles.items())),
    }
