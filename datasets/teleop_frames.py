"""A teleop episode's frames, read from the log on access: what keeps memory flat however long an episode is.

A source first reads a log's timestamps and checks every frame the tick grid chose (`check_jpeg`: whatever storing
the frame could fail on, so a bad frame quarantines the episode before any of its samples is written). The episode
then holds, per camera, a `LazyFrames`: the chosen measurement of each tick, and a reader that fetches that
measurement from the file and makes it the JPEG stored in the shard (`stored_jpeg`), only when a sample asks for it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import overload

import numpy as np
import simplejpeg

from vlaforge.datasets.frames import BadImageError, FrameConfig, encode_jpeg, jpeg_shape


class LazyFrames(Sequence[bytes]):
    """One camera's frames of an episode: item i is measurement `indices[i]` of the camera's stream, as returned by
    `read` (which reads it from the source file). Slicing gives another `LazyFrames` and reads nothing."""

    def __init__(self, read: Callable[[int], bytes], indices: np.ndarray) -> None:
        self._read = read
        self.indices = np.asarray(indices, dtype=np.int64)
        """[n] measurement index of each tick (a repeated index is a duplicated frame)."""

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    @overload
    def __getitem__(self, item: int) -> bytes: ...

    @overload
    def __getitem__(self, item: slice) -> "LazyFrames": ...

    def __getitem__(self, item: int | slice) -> "bytes | LazyFrames":
        if isinstance(item, slice):
            return LazyFrames(self._read, self.indices[item])
        return self._read(int(self.indices[item]))  # numpy raises IndexError past the end, as a list does

    def __iter__(self) -> Iterator[bytes]:
        for index in self.indices.tolist():
            yield self._read(index)

    def __repr__(self) -> str:
        return f"LazyFrames({len(self)} frames)"


def check_jpeg(data: bytes, config: FrameConfig) -> None:
    """Raise `BadImageError` where `stored_jpeg(data, config)` would fail: the JPEG's markers and header (or a full
    decode, with `config.verify="full"`), and a full decode when the frame will be resized (decoded) to store it."""
    shape = jpeg_shape(data, config.verify)
    if config.verify == "full" or config.size is None or shape == tuple(config.size):
        return
    try:
        simplejpeg.decode_jpeg(data, colorspace="RGB")
    except ValueError as error:
        raise BadImageError(f"JPEG does not decode: {error}") from error


def stored_jpeg(data: bytes, config: FrameConfig) -> bytes:
    """The frame as stored in a shard, the bytes `conform_jpeg(data, config)` gives, for a frame that passed
    `check_jpeg`: it is not checked again (its header is parsed only when a target size needs comparing)."""
    if config.size is None or simplejpeg.decode_jpeg_header(data)[:2] == tuple(config.size):
        return data
    return encode_jpeg(simplejpeg.decode_jpeg(data, colorspace="RGB"), config)
