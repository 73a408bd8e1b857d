"""`EpisodeVideo`: an episode's frames as an H.264 mp4, encoded as they come (PyAV, which bundles FFmpeg).

Frames are halved while the long side exceeds `max_side`, so a 480x640 camera becomes a 240x320 video: small files
the summary page can embed. A partial file is renamed into place only when the video is complete.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np


class EpisodeVideo:
    """Append uint8 [H, W, 3] frames, then `close()`."""

    def __init__(self, path: str | os.PathLike, *, fps: float, max_side: int = 320) -> None:
        import av

        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._partial = self.path.with_name(self.path.name + ".partial.mp4")
        self._container = av.open(str(self._partial), "w")
        self._stream = self._container.add_stream("libx264", rate=round(fps))
        self._stream.pix_fmt = "yuv420p"
        self._max_side = max_side
        self.frames = 0

    def add(self, frame: np.ndarray) -> None:
        import av

        while max(frame.shape[:2]) > self._max_side:
            frame = frame[::2, ::2]
        frame = np.ascontiguousarray(frame[: frame.shape[0] // 2 * 2, : frame.shape[1] // 2 * 2])  # yuv420p: even
        if self.frames == 0:
            self._stream.height, self._stream.width = frame.shape[:2]
        for packet in self._stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> pathlib.Path | None:
        """Finish the file; None (and no file) when no frame was added."""
        if self.frames:
            for packet in self._stream.encode():
                self._container.mux(packet)
        self._container.close()
        if not self.frames:
            self._partial.unlink(missing_ok=True)
            return None
        os.replace(self._partial, self.path)
        return self.path
