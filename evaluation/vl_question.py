"""`VlQuestion`: one benchmark question as every VL benchmark reader yields it, and the image bytes it carries.

A reader (`pope.py`, `mmbench.py`, `mme.py`) turns its published files into questions; `vl_retention.py` asks a VLM
each one and hands the answers back to the reader's `score`. Images travel as JPEG bytes, which both VLM backends
take (`annotators/vlm_client.py`): a JPEG file passes through untouched, anything else (PNG) is re-encoded.
"""

from __future__ import annotations

import dataclasses
import io
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from PIL import Image

JPEG_MAGIC = b"\xff\xd8\xff"


@dataclasses.dataclass(frozen=True)
class VlQuestion:
    """One prompt to one VLM: its images (JPEG bytes) and text."""

    qid: str
    """Unique within the benchmark: how the reader matches the answer back."""
    prompt: str
    images: tuple[bytes, ...]


class VlBenchmark(Protocol):
    """A benchmark read from its published files."""

    name: str

    def questions(self) -> Iterator[VlQuestion]: ...

    def score(self, answers: Mapping[str, str]) -> dict[str, Any]:
        """The benchmark's metrics from {qid: answer text}; always holds "accuracy" (0..1)."""


def as_jpeg(data: bytes, where: str) -> bytes:
    """Image file bytes as JPEG bytes (JPEG passes through); a ValueError naming `where` if they are no image."""
    if data.startswith(JPEG_MAGIC):
        return data
    try:
        image = Image.open(io.BytesIO(data)).convert("RGB")
    except OSError as error:
        raise ValueError(f"{where}: not an image file ({error})") from None
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()
