"""JPEG frames: validate, pass through when already right, re-encode only when needed.

How much of a frame is checked (`FrameConfig.verify`):
- "header": the start and end markers and the header. Catches truncation and garbage, not damage inside the
  entropy-coded data, which then passes into the shards and stops training hours later.
- "scan" (the default): also a 1/8-scale decode with libjpeg-turbo (`decode_jpeg(min_factor=8)`), which Huffman-
  decodes every coefficient of every scan, so damage that desynchronises the entropy-coded data raises, exactly as
  in a full decode; only the inverse DCT and the colour conversion are (nearly) skipped. `benchmarks/ingest.py`
  measures its cost beside "header" and "full".
- "full": a full-size decode of every frame.
No check can catch damage that still decodes to valid coefficients (a flipped bit in a coefficient's magnitude):
that needs the original to compare with.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import simplejpeg
from PIL import Image

_SOI = b"\xff\xd8"
_EOI = b"\xff\xd9"
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
"""Start-of-frame markers (they hold the image size); C4, C8 and CC in that range are DHT, JPG and DAC."""
VERIFY_MODES = ("header", "scan", "full")
_SCAN_SCALE = 8
"""The scan check decodes at 1/8 scale, the smallest libjpeg-turbo offers: every coefficient is still decoded."""


class BadImageError(ValueError):
    """A frame that is not a decodable JPEG."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class FrameConfig:
    """How frames are stored in shards."""

    size: tuple[int, int] | None = None
    """Target (height, width); None keeps each source's native size."""
    quality: int = 90
    """JPEG quality used when a frame has to be (re-)encoded."""
    verify: str = "scan"
    """How much of each frame is checked: "header" (markers and header), "scan" (also every scan's entropy-coded
    data, by a 1/8-scale decode) or "full" (a full decode); see the module docstring."""

    def __post_init__(self) -> None:
        if not 1 <= self.quality <= 100:
            raise ValueError(f"FrameConfig.quality must be in 1..100, got {self.quality}")
        if self.verify not in VERIFY_MODES:
            raise ValueError(f"FrameConfig.verify must be one of {list(VERIFY_MODES)}, got {self.verify!r}")
        if self.size is not None and (len(self.size) != 2 or min(self.size) <= 0):
            raise ValueError(f"FrameConfig.size must be (height, width) > 0, got {self.size}")


def jpeg_shape(data: bytes | memoryview, verify: str = "header") -> tuple[int, int]:
    """(height, width) of a JPEG, checked as `verify` says ("header", "scan" or "full", see the module docstring);
    raises BadImageError when the check fails."""
    if not _has_markers(data):
        raise BadImageError(f"not a complete JPEG ({len(data)} bytes, missing start or end marker)")
    try:
        if verify == "full":
            height, width = simplejpeg.decode_jpeg(data, colorspace="RGB").shape[:2]
        else:
            height, width, _, colorspace = simplejpeg.decode_jpeg_header(data)
            if verify == "scan":
                _scan(data, colorspace)
    except ValueError as error:  # simplejpeg's strict mode raises on libjpeg's warnings too ("corrupt JPEG data")
        raise BadImageError(f"JPEG does not decode: {error}") from error
    return int(height), int(width)


def _scan(data: bytes | memoryview, colorspace: str) -> None:
    """Decode every scan at 1/8 scale, to luminance (or CMYK, which has none): reads all entropy-coded data."""
    output = "CMYK" if colorspace in ("CMYK", "YCCK") else "GRAY"
    simplejpeg.decode_jpeg(data, colorspace=output, min_height=1, min_width=1, min_factor=_SCAN_SCALE)


def _has_markers(data: bytes | memoryview) -> bool:
    """Starts with SOI and ends with EOI (trailing zero padding allowed, as some writers add it)."""
    if bytes(data[:2]) != _SOI:
        return False
    return bytes(data[-2:]) == _EOI or bytes(data).rstrip(b"\x00").endswith(_EOI)


def header_length(data: bytes | memoryview) -> int:
    """Bytes from SOI through the end of the first start-of-scan (SOS) segment: everything a header parse reads.
    0 when the segments do not lead from SOI through a start-of-frame (SOF) to an SOS."""
    size, position, frame_seen = len(data), 2, False
    while position + 4 <= size and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte before a marker
            position += 1
            continue
        frame_seen = frame_seen or marker in _SOF_MARKERS
        position += 2 + ((data[position + 2] << 8) | data[position + 3])
        if marker == 0xDA:
            return position if frame_seen and position <= size else 0
    return 0


class FrameConformer:
    """`conform_jpeg` for the frames of one camera, which a recording encodes with one encoder and settings.

    In "header" mode a frame whose bytes up to the end of its SOS segment equal those of the previous frame that
    passed has the same header, so the same parse result and shape: only its end marker is checked again. Any
    other frame is parsed in full and becomes the one compared against.
    """

    def __init__(self, config: FrameConfig) -> None:
        self.config = config
        self._header = b""
        self._shape: tuple[int, int] = (0, 0)

    def __call__(self, data: bytes | memoryview) -> bytes | memoryview:
        shape = self._known_shape(data)
        if shape is None:
            shape = jpeg_shape(data, self.config.verify)
            if self.config.verify == "header":
                self._header, self._shape = bytes(data[: header_length(data)]), shape
        if self.config.size is None or shape == tuple(self.config.size):
            return data
        return encode_jpeg(simplejpeg.decode_jpeg(data, colorspace="RGB"), self.config)

    def _known_shape(self, data: bytes | memoryview) -> tuple[int, int] | None:
        header = self._header
        if header and bytes(data[: len(header)]) == header and bytes(data[-2:]) == _EOI:
            return self._shape
        return None


def encode_jpeg(pixels: np.ndarray, config: FrameConfig) -> bytes:
    """Encode an RGB uint8 [H, W, 3] frame, resized to `config.size` first when that differs."""
    if config.size is not None and tuple(pixels.shape[:2]) != tuple(config.size):
        height, width = config.size
        pixels = np.asarray(Image.fromarray(pixels).resize((width, height), Image.Resampling.BILINEAR))
    return simplejpeg.encode_jpeg(np.ascontiguousarray(pixels), quality=config.quality, colorspace="RGB")


def conform_jpeg(data: bytes | memoryview, config: FrameConfig) -> bytes | memoryview:
    """The frame as stored in a shard: the same bytes when already a JPEG of the target size, else re-encoded."""
    return FrameConformer(config)(data)
