"""Real-looking camera frames for synthetic episodes: slow pans over photos shipped inside scikit-image."""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image
from skimage import data as skimage_data

PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")
CAPTIONS = {
    "astronaut": "A smiling astronaut in a white spacesuit stands in front of an American flag.",
    "chelsea": "A tabby cat with green eyes looks to the side against a plain background.",
    "coffee": "A cup of coffee with latte art sits on a saucer on a red table.",
    "rocket": "A rocket stands on its launch pad under a clear sky.",
}
"""The reference caption of each photo (sample VL data and LLaVA-style rows use it)."""
QUESTIONS = {
    "astronaut": ("What is the person wearing?", "A white spacesuit."),
    "chelsea": ("What animal is in the picture?", "A cat."),
    "coffee": ("What drink is shown?", "Coffee, with latte art on top."),
    "rocket": ("Where is the rocket?", "On its launch pad."),
}
"""A question about each photo and its answer."""


@functools.lru_cache(maxsize=None)
def _photo(name: str) -> np.ndarray:
    pixels = getattr(skimage_data, name)()
    if pixels.ndim == 2:
        pixels = np.stack([pixels] * 3, axis=-1)
    return np.ascontiguousarray(pixels[..., :3])


def camera_frames(photo_index: int, n_frames: int, height: int, width: int) -> np.ndarray:
    """[n, H, W, 3] uint8 frames of a camera slowly panning across one photo, like a robot moving its view."""
    photo = _photo(PHOTOS[photo_index % len(PHOTOS)])
    ph, pw = photo.shape[:2]
    crop_h, crop_w = int(ph * 0.7), int(pw * 0.7)
    frames = np.empty((n_frames, height, width, 3), dtype=np.uint8)
    for i in range(n_frames):
        phase = i / max(n_frames - 1, 1)
        top = int((ph - crop_h) * phase)
        left = int((pw - crop_w) * (0.5 + 0.5 * np.sin(2 * np.pi * phase)))
        crop = photo[top : top + crop_h, left : left + crop_w]
        frames[i] = np.asarray(Image.fromarray(crop).resize((width, height), Image.Resampling.BILINEAR))
    return frames
