"""General VL rows -> VL samples: images stored as JPEG (passed through when they already are), keys from lineage.

The key is `<file stem>_<row>` (stable across runs, unique in the dataset, free of dots); the source group is the
image hash, so one image never straddles the train/validation split. Provenance names the dataset as the annotator.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import simplejpeg
from PIL import Image, UnidentifiedImageError

from vlaforge.datasets.drops import DropReason
from vlaforge.datasets.frames import BadImageError, FrameConfig, encode_jpeg, jpeg_shape
from vlaforge.datasets.schema import VlTask, safe_key_part
from vlaforge.datasets.vl_rows import VlRow, where
from vlaforge.pipelines.stage import Stage, StageConfig
from vlaforge.pipelines.vl_samples import VlSample, VlSampleError, build_vl_sample


class VlRowSamples(Stage):
    """VlRow -> VlSample; an image that does not decode, or a conversation our format refuses, is quarantined."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(StageConfig):
        dataset: str
        """The VL dataset's name (recorded in each sample's meta)."""
        task: VlTask = VlTask.GENERAL
        """What the dataset teaches."""
        dataset_version: str = "unknown"
        """The upstream dataset's version or commit, recorded in provenance."""
        validation_fraction: float = 0.05
        """Share of images held out (by a hash of the image)."""
        jpeg_quality: int = 95
        """Quality of images that have to be re-encoded (PNG, WebP, grayscale or CMYK JPEG...)."""
        max_side: int | None = None
        """Images larger than this on their long side are shrunk (and re-encoded); None keeps them."""

        def __post_init__(self) -> None:
            if not self.dataset:
                raise ValueError("VlRowSamples.Config.dataset must name the VL dataset")
            if not 1 <= self.jpeg_quality <= 100:
                raise ValueError(f"VlRowSamples.Config.jpeg_quality must be in 1..100, got {self.jpeg_quality}")

    config: Config

    def __call__(self, batch: list[VlRow]) -> list[VlSample]:
        samples = []
        for row in batch:
            at = where(row.file, row.row, row.row_id)
            try:
                images = [self._jpeg(data) for data in row.images]
                samples.append(self._sample(row, images))
            except (BadImageError, UnidentifiedImageError, OSError) as error:
                self.ledger.quarantine(file=row.file, episode=row.row_id, reason=DropReason.BAD_IMAGE,
                                       message=f"{at}: an image does not decode ({error}); fix or drop the row")
            except VlSampleError as error:
                self.ledger.quarantine(file=row.file, episode=row.row_id, reason=DropReason.BAD_CONVERSATION,
                                       message=f"{at}: {error}")
        return samples

    def _jpeg(self, data: bytes) -> bytes:
        """The image as an RGB JPEG: the same bytes when it already is a colour (YCbCr) one within `max_side`, else
        re-encoded (PNG, WebP, grayscale or CMYK JPEG, too large)."""
        try:
            height, width = jpeg_shape(data)
        except BadImageError:
            pass  # not a JPEG (PNG, WebP), or one framed oddly: PIL decodes it below
        else:
            jpeg_shape(data, "scan")  # damaged entropy-coded data: a bad image, never "repaired" by a lenient decoder
            colour = simplejpeg.decode_jpeg_header(data)[2] == "YCbCr"
            if colour and (self.config.max_side is None or max(height, width) <= self.config.max_side):
                return data
        with Image.open(io.BytesIO(data)) as image:
            image = image.convert("RGB")
            if self.config.max_side is not None:
                image.thumbnail((self.config.max_side, self.config.max_side), Image.Resampling.BICUBIC)
            pixels = np.asarray(image)
        return encode_jpeg(pixels, FrameConfig(quality=self.config.jpeg_quality))

    def _sample(self, row: VlRow, images: list[bytes]) -> VlSample:
        stem = row.file.rsplit(".", 1)[0]
        group = row.image_hash or f"{stem}-{row.row}"
        return build_vl_sample(
            key=safe_key_part(f"{stem}_{row.row:08d}"), task=self.config.task, dataset=self.config.dataset,
            images=images, conversation=row.conversation, source_key=row.row_id, source_group=group[:32],
            provenance=[{"model": f"dataset:{self.config.dataset}", "revision": self.config.dataset_version,
                         "prompt_version": "none", "settings": {"layout": row.layout}}],
            validation_fraction=self.config.validation_fraction,
            extra={"file": row.file, "row": row.row, "image_sha256": row.image_hash},
        )
