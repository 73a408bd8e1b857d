"""Pick frames out of an MP4 by timestamp with PyAV (H.264, AV1 through libdav1d, anything the bundled FFmpeg reads).

A `VideoReader` opens one file once and answers requests for frame timestamps in order. For each requested time
it returns the decoded frame whose presentation time is nearest, provided it lies within a tolerance (LeRobot's
rule: frame time = pts * time_base, the nearest frame wins). Requests that move forward through the file, such as
consecutive episodes of a LeRobot v3.0 mp4, keep decoding where the last one stopped instead of seeking again, so
a unit of work decodes each file about once. Only the frames that are chosen are converted to RGB (and resized,
by swscale, when a size is asked for); the others are decoded and dropped.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import av
import numpy as np

logger = logging.getLogger(__name__)

MAX_SKIP_S = 4.0
"""A forward gap up to this long is decoded through; a longer one is sought (seeking costs a keyframe decode)."""


class VideoError(ValueError):
    """A video that cannot give the requested frames; the message names the file."""

    def __init__(self, path: str | pathlib.Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = str(path)


class VideoOpenError(VideoError):
    """The file cannot be opened or decoded (missing, truncated, not a video)."""


class FrameTimestampError(VideoError):
    """No frame lies within the tolerance of a requested timestamp, although the video goes on past it."""


class VideoTooShortError(VideoError):
    """The video ends before the last requested timestamp."""

    def __init__(self, path: str | pathlib.Path, *, found: int, needed: int, stopped_at_s: float,
                 last_frame_s: float | None) -> None:
        last = "it holds no frame at all" if last_frame_s is None else f"its last frame is at {last_frame_s:.3f} s"
        super().__init__(path, f"the video ends before the requested frames do: found {found} of {needed} frames, "
                               f"stopping at the frame for {stopped_at_s:.3f} s ({last})")
        self.found, self.needed, self.stopped_at_s, self.last_frame_s = found, needed, stopped_at_s, last_frame_s


@dataclasses.dataclass
class _Frame:
    time: float
    frame: av.VideoFrame


class VideoReader:
    """One open video file; `frames_at` returns the frames nearest to requested timestamps.

    `size` (height, width) makes swscale resize while converting to RGB, which is much cheaper than resizing
    afterwards. Use it as a context manager, or call `close()`.
    """

    def __init__(self, path: str | pathlib.Path, *, size: tuple[int, int] | None = None,
                 max_skip_s: float = MAX_SKIP_S) -> None:
        self.path = str(path)
        self._size = size
        self._max_skip_s = max_skip_s
        try:
            self._container = av.open(self.path)
        except (av.FFmpegError, OSError) as error:
            raise VideoOpenError(path, f"cannot be opened as a video ({error})") from error
        if not self._container.streams.video:
            self._container.close()
            raise VideoOpenError(path, "holds no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.codec_context.thread_type = "AUTO"  # frame and slice threads: decoding is the hot loop
        self._time_base = float(self._stream.time_base)
        rate = self._stream.average_rate
        self._period = 1.0 / float(rate) if rate else 0.0
        self._decoder: Iterator[av.VideoFrame] | None = None
        self._prev: _Frame | None = None
        """The last decoded frame before the current request time (still a candidate)."""
        self._peek: _Frame | None = None
        """The first decoded frame at or after the current request time; None at the end of the stream."""

    @property
    def codec(self) -> str:
        """The decoder in use, e.g. "h264" or "libdav1d"."""
        return self._stream.codec_context.name

    def close(self) -> None:
        self._decoder = None
        self._container.close()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def frames_at(self, timestamps: Sequence[float] | np.ndarray, *, tolerance_s: float,
                  convert: Callable[[np.ndarray], Any] | None = None) -> list[Any]:
        """The frame nearest to each timestamp (seconds of the file), as RGB uint8 [H, W, 3] or `convert(rgb)`.

        Raises VideoTooShortError when the video ends before a requested time, FrameTimestampError when the
        nearest frame is further than `tolerance_s`, VideoOpenError when decoding fails.
        """
        times = np.asarray(timestamps, dtype=np.float64)
        if times.size == 0:
            return []
        order = np.argsort(times, kind="stable")
        self._position(float(times[order[0]]))
        results: list[Any] = [None] * times.size
        last: tuple[_Frame | None, Any] = (None, None)
        for found, slot in enumerate(order):
            wanted = float(times[slot])
            chosen = self._nearest(wanted)
            if chosen is None or abs(chosen.time - wanted) > tolerance_s:
                raise self._miss(wanted, chosen, found, times.size, tolerance_s)
            if last[0] is not chosen:  # a frame asked for twice is converted once
                last = (chosen, self._convert(chosen, convert))
            results[slot] = last[1]
        return results

    # Decoding position ----------------------------------------------------------------------------------------

    def _position(self, start: float) -> None:
        """Make sure every frame from the last one at or before `start` onwards is still to come."""
        earliest = self._prev or self._peek
        if self._decoder is not None and earliest is not None and earliest.time <= start:
            ahead = self._peek.time if self._peek is not None else earliest.time
            if start - ahead <= self._max_skip_s:
                return
        self._seek(start)

    def _seek(self, start: float) -> None:
        target = max(start - self._period, 0.0)  # a period early: the frame just before `start` may be nearest
        self._restart(target)
        if target > 0 and self._peek is not None and self._peek.time > start:
            logger.debug("%s: seek to %.3f s landed at %.3f s; decoding from the start", self.path, start,
                         self._peek.time)
            self._restart(0.0)

    def _restart(self, target: float) -> None:
        try:
            self._container.seek(max(int(target / self._time_base), 0), stream=self._stream, backward=True)
        except av.FFmpegError as error:
            raise VideoOpenError(self.path, f"cannot seek to {target:.3f} s ({error})") from error
        self._decoder = self._container.decode(self._stream)
        self._prev, self._peek = None, None
        self._peek = self._next()

    def _next(self) -> _Frame | None:
        assert self._decoder is not None
        try:
            frame = next(self._decoder)
        except StopIteration:
            return None
        except av.FFmpegError as error:
            after = self._peek.time if self._peek is not None else 0.0
            raise VideoOpenError(self.path, f"decoding failed after {after:.3f} s ({error})") from error
        if frame.pts is not None:
            return _Frame(float(frame.pts) * self._time_base, frame)
        previous = self._peek.time if self._peek is not None else -self._period
        return _Frame(previous + self._period, frame)  # no timestamp: assume a constant frame rate

    def _nearest(self, wanted: float) -> _Frame | None:
        while self._peek is not None and self._peek.time < wanted:
            self._prev, self._peek = self._peek, self._next()
        candidates = [frame for frame in (self._prev, self._peek) if frame is not None]
        return min(candidates, key=lambda frame: abs(frame.time - wanted), default=None)

    def _miss(self, wanted: float, chosen: _Frame | None, found: int, needed: int, tolerance_s: float) -> VideoError:
        if self._peek is None:  # the stream has ended
            last = self._prev.time if self._prev is not None else None
            return VideoTooShortError(self.path, found=found, needed=needed, stopped_at_s=wanted, last_frame_s=last)
        nearest = "no frame" if chosen is None else f"the nearest frame is at {chosen.time:.3f} s"
        return FrameTimestampError(self.path, f"no frame within {tolerance_s:.4f} s of {wanted:.3f} s ({nearest})")

    def _convert(self, chosen: _Frame, convert: Callable[[np.ndarray], Any] | None) -> Any:
        if self._size is None:
            rgb = chosen.frame.to_ndarray(format="rgb24")
        else:
            height, width = self._size
            rgb = chosen.frame.to_ndarray(format="rgb24", width=width, height=height)
        return rgb if convert is None else convert(rgb)


class VideoReaders:
    """Readers kept open across the episodes of a unit, so a file shared by consecutive episodes is opened and
    decoded once. `keep_only` closes the readers the next episode does not use."""

    def __init__(self, *, size: tuple[int, int] | None = None) -> None:
        self._size = size
        self._open: dict[str, VideoReader] = {}

    def get(self, path: str | pathlib.Path) -> VideoReader:
        key = str(path)
        if key not in self._open:
            self._open[key] = VideoReader(key, size=self._size)
        return self._open[key]

    def discard(self, path: str | pathlib.Path) -> None:
        """Close a reader that failed, so the next request reopens the file."""
        reader = self._open.pop(str(path), None)
        if reader is not None:
            reader.close()

    def keep_only(self, paths: Iterable[str | pathlib.Path]) -> None:
        keep = {str(path) for path in paths}
        for key in [key for key in self._open if key not in keep]:
            self._open.pop(key).close()

    def close(self) -> None:
        self.keep_only(())

    def __enter__(self) -> "VideoReaders":
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def decode_frames(path: str | pathlib.Path, timestamps: Sequence[float] | np.ndarray, *, tolerance_s: float,
                  size: tuple[int, int] | None = None) -> np.ndarray:
    """[n, H, W, 3] uint8: the frames of one file nearest to `timestamps` (see `VideoReader.frames_at`)."""
    with VideoReader(path, size=size) as reader:
        frames = reader.frames_at(timestamps, tolerance_s=tolerance_s)
        height, width = size or (reader._stream.height, reader._stream.width)
    return np.stack(frames) if frames else np.empty((0, height, width, 3), dtype=np.uint8)
