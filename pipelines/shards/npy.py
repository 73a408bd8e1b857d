"""`.npy` members read fast and without pickle: the format's header parsed once per distinct header, the data viewed
in place.

A shard holds thousands of `state.npy` / `action.npy` members whose headers are byte-for-byte alike (same dtype,
same shape). `np.load` re-parses each one (a Python literal evaluation per member, a fifth of the loader's time); this
keeps the parsed (dtype, shape, order) per header and views the data with `np.frombuffer`. Strict like
`np.load(allow_pickle=False)`: versions 1.0 to 3.0 of the format, and an object dtype (which would need pickle) is
refused, as are headers that do not describe the bytes that follow.
"""

from __future__ import annotations

import ast
import functools

import numpy as np

MAGIC = b"\x93NUMPY"
_LENGTH_BYTES = {1: 2, 2: 4, 3: 4}
"""Format major version -> width of the little-endian header length."""


def load_npy(data: bytes) -> np.ndarray:
    """The array a `.npy` file's bytes hold (read-only, a view of `data`); ValueError on anything `np.load` with
    allow_pickle=False would refuse, or on a header that does not match the data's length."""
    if data[:6] != MAGIC or len(data) < 10:
        raise ValueError("not a .npy file (no \\x93NUMPY magic)")
    major = data[6]
    if major not in _LENGTH_BYTES:
        raise ValueError(f".npy format version {major}.{data[7]} is not one of 1.0, 2.0, 3.0")
    width = _LENGTH_BYTES[major]
    start = 8 + width
    length = int.from_bytes(data[8:start], "little")
    dtype, shape, fortran = _header(bytes(data[start:start + length]), major)
    count = int(np.prod(shape, dtype=np.int64))
    offset = start + length
    if len(data) - offset != count * dtype.itemsize:
        raise ValueError(f".npy data is {len(data) - offset} bytes; its header says {shape} of {dtype} "
                         f"({count * dtype.itemsize} bytes)")
    array = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return array.reshape(shape[::-1]).T if fortran else array.reshape(shape)


@functools.lru_cache(maxsize=256)
def _header(header: bytes, major: int) -> tuple[np.dtype, tuple[int, ...], bool]:
    """(dtype, shape, fortran order) of a header, checked; cached, as every member of a kind has the same one."""
    text = header.decode("latin1" if major < 3 else "utf8")
    try:
        fields = ast.literal_eval(text)
    except (SyntaxError, ValueError):
        raise ValueError(f".npy header is not a Python literal: {text[:80]!r}") from None
    if not isinstance(fields, dict) or set(fields) != {"descr", "fortran_order", "shape"}:
        raise ValueError(f".npy header must hold descr, fortran_order and shape, got {text[:80]!r}")
    shape, fortran = fields["shape"], fields["fortran_order"]
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ValueError(f".npy header shape {shape!r} is not a tuple of sizes")
    if not isinstance(fortran, bool):
        raise ValueError(f".npy header fortran_order {fortran!r} is not a bool")
    try:
        dtype = np.dtype(np.lib.format.descr_to_dtype(fields["descr"]))
    except (TypeError, ValueError) as error:
        raise ValueError(f".npy header descr {fields['descr']!r} is not a dtype ({error})") from None
    if dtype.hasobject:
        raise ValueError(f".npy array of dtype {dtype} holds Python objects: reading it would need pickle")
    return dtype, shape, fortran
