"""Near-duplicate images: a perceptual hash per image, and which rows show a near copy of an earlier row's image.

The hash is a 64-bit difference hash (dHash): the image shrunk to 9x8 gray pixels, one bit per horizontal neighbour
pair saying which is brighter. Re-encoding, resizing and small colour changes keep most bits; a different photo
flips about half. Two images are near-duplicates when their hashes differ in at most `bits` bits (and their bytes
differ: identical bytes are the same image, which rows may share with different conversations).

Matching scales to tens of millions of rows without comparing every pair: a hash is cut into `bits + 1` bands, and
two hashes within `bits` bits agree on at least one band (pigeonhole). Rows are grouped by (band, band value); in
each group every later row is compared with the group's first row, in dataset order. So a row is reported as a near
copy of the first earlier image it is found close to; a chain of near copies each a few bits from the next may be
reported against different first rows.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

NO_MATCH = -1
_BYTE_POPCOUNT = np.array([bin(v).count("1") for v in range(256)], dtype=np.int64)


def perceptual_hash(data: bytes) -> str:
    """The dHash of an encoded image as 16 hex digits; "" when it does not decode."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("L", (64, 64))  # JPEG: decode at 1/8 scale, far cheaper than a full decode
            small = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.BILINEAR), dtype=np.int16)
    except (UnidentifiedImageError, OSError, ValueError):
        return ""
    bits = (small[:, 1:] > small[:, :-1]).ravel()
    return f"{int(np.packbits(bits).view('>u8')[0]):016x}"


def near_duplicate_of(hashes: list[str], image_hashes: list[str], bits: int) -> np.ndarray:
    """For each row (in dataset order), the index of an earlier row whose image is within `bits` bits of its own
    (and not byte-identical), or NO_MATCH; rows with an empty hash never match."""
    n = len(hashes)
    found = np.full(n, NO_MATCH, dtype=np.int64)
    valid = np.array([bool(h) for h in hashes])
    if n == 0 or not valid.any():
        return found
    values = np.array([int(h, 16) if h else 0 for h in hashes], dtype=np.uint64)
    rows = np.flatnonzero(valid)
    bounds = np.linspace(0, 64, bits + 2).astype(int)
    for low, high in zip(bounds[:-1], bounds[1:]):
        mask = np.uint64(((1 << (high - low)) - 1) << low)
        band = values[rows] & mask
        order = np.lexsort((rows, band))  # by band value, then dataset order
        sorted_rows, sorted_band = rows[order], band[order]
        starts = np.r_[True, sorted_band[1:] != sorted_band[:-1]]
        first = sorted_rows[np.maximum.accumulate(np.where(starts, np.arange(len(order)), 0))]
        later = ~starts
        _mark(found, sorted_rows[later], first[later], values, image_hashes, bits)
    return found


def _mark(found: np.ndarray, rows: np.ndarray, firsts: np.ndarray, values: np.ndarray, image_hashes: list[str],
          bits: int) -> None:
    distance = _popcount(values[rows] ^ values[firsts])
    for row, first, d in zip(rows.tolist(), firsts.tolist(), distance.tolist()):
        if d <= bits and image_hashes[row] != image_hashes[first] and (found[row] == NO_MATCH or first < found[row]):
            found[row] = first


def _popcount(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.uint64)
    count = np.zeros(x.shape, dtype=np.int64)
    for shift in range(0, 64, 8):
        count += _BYTE_POPCOUNT[((x >> np.uint64(shift)) & np.uint64(255)).astype(np.int64)]
    return count
