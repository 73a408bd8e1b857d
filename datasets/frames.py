"""JPEG frames: validate cheaply, pass through when already right, re-encode only when needed."""

from __future__ import annotations

import dataclasses

import numpy as np
import simplejpeg
from PIL import Image

_SOI = b"\xff\xd8"
_EOI = b"\xff\xd9"


class BadImageError(ValueError):
    """A frame that is not a decodable JPEG."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class FrameConfig:
    """How frames are stored in shards."""

    size: tuple[int, int] | None = None
    """Target (height, width); None keeps each source's native size."""
    quality: int = 90
    """JPEG quality used when a frame has to be (re-)encoded."""
    verify: str = "header"
    """"header" checks the JPEG markers and header without decoding pixels; "full" decodes every frame."""

    def __post_init__(self) -> None:
        if not 1 <= self.quality <= 100:
            raise ValueError(f"FrameConfig.quality must be in 1..100, got {self.quality}")
        if self.verify not in ("header", "full"):
            raise ValueError(f"FrameConfig.verify must be 'header' or 'full', got {self.verify!r}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) <= 0):
            raise ValueError(f"FrameConfig.size must be (height, width) > 0, got {self.size}")


def jpeg_shape(data: bytes, verify: str = "header") -> tuple[int, int]:
    """(height, width) of a JPEG; raises BadImageError when it is not a complete JPEG.

    "header" mode checks the start and end markers and parses the header: it catches truncation and garbage but
    not a bit flip inside the entropy-coded data, which "full" mode (a real decode) does catch.
    """
    if not data.startswith(_SOI) or not data.rstrip(b"\x00").endswith(_EOI):
        raise BadImageError(f"not a complete JPEG ({len(data)} bytes, missing start or end marker)")
    try:
        if verify == "full":
            height, width = simplejpeg.decode_jpeg(data, colorspace="RGB").shape[:2]
        else:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError as error:
        raise BadImageError(f"JPEG does not decode: {error}") from error
    return int(height), int(width)


def encode_jpeg(pixels: np.ndarray, config: FrameConfig) -> bytes:
    """Encode an RGB uint8 [H, W, 3] frame, resized to `config.size` first when that differs."""
    if config.size is not None and tuple(pixels.shape[:2]) != tuple(config.size):
        height, width = config.size
        pixels = np.asarray(Image.fromarray(pixels).resize((width, height), Image.Resampling.BILINEAR))
    return simplejpeg.encode_jpeg(np.ascontiguousarray(pixels), quality=config.quality, colorspace="RGB")


def conform_jpeg(data: bytes, config: FrameConfig) -> bytes:
    """The frame as stored in a shard: the same bytes when already a JPEG of the target size, else re-encoded."""
    shape = jpeg_shape(data, config.verify)
    if config.size is None or shape == tuple(config.size):
        return data
    return encode_jpeg(simplejpeg.decode_jpeg(data, colorspace="RGB"), config)
