"""The bytes of openpi's policy protocol: msgpack, with NumPy arrays as tagged maps (openpi-client's msgpack_numpy).

An array travels as the map `{b"__ndarray__": True, b"data": <raw bytes>, b"dtype": <dtype.str>, b"shape": [...]}`
and a NumPy scalar as `{b"__npgeneric__": True, b"data": <item>, b"dtype": <dtype.str>}`; everything else is plain
msgpack (maps, lists, strings, numbers, None). `openpi_client.msgpack_numpy` reads and writes exactly this, so the
real client and our server understand each other byte for byte.

Decoding is strict where a peer could do harm: object, void and complex dtypes are refused (an object array built
over a peer's bytes would be raw pointers), and the data must fill the declared shape exactly. Nothing is pickled.
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import numpy as np

_NDARRAY = b"__ndarray__"
_NPGENERIC = b"__npgeneric__"
_REFUSED_KINDS = frozenset("OVc")
"""Object, void (structured) and complex dtypes: openpi's codec refuses them too."""


class WireFormatError(ValueError):
    """A message that is not a well-formed msgpack-numpy payload; the text says what is wrong with it."""


def _encode(value: Any) -> Any:
    if isinstance(value, (np.ndarray, np.generic)) and value.dtype.kind in _REFUSED_KINDS:
        raise WireFormatError(f"cannot send an array of dtype {value.dtype}: use a numeric, bool or string dtype")
    if isinstance(value, np.ndarray):
        array = value if value.flags.c_contiguous else value.copy(order="C")  # (ascontiguousarray makes 0-d 1-d)
        # msgpack packs a memoryview as bin, byte for byte what tobytes() gives, without copying the array first.
        data = memoryview(array).cast("B") if array.size else b""
        return {_NDARRAY: True, b"data": data, b"dtype": array.dtype.str, b"shape": list(array.shape)}
    if isinstance(value, np.generic):
        return {_NPGENERIC: True, b"data": value.item(), b"dtype": value.dtype.str}
    raise TypeError(f"cannot pack {type(value).__name__}")


def _decode(value: dict) -> Any:
    if _NDARRAY in value:
        dtype = _dtype(value.get(b"dtype"))
        shape = tuple(value.get(b"shape") or ())
        data = value.get(b"data")
        if not isinstance(data, bytes) or any(not isinstance(n, int) or n < 0 for n in shape):
            raise WireFormatError(f"array of dtype {dtype} has a malformed shape {list(shape)} or data")
        if len(data) != math.prod(shape) * dtype.itemsize:
            raise WireFormatError(f"array of shape {list(shape)} and dtype {dtype} needs "
                                  f"{math.prod(shape) * dtype.itemsize} bytes, got {len(data)}")
        return np.frombuffer(data, dtype=dtype).reshape(shape)
    if _NPGENERIC in value:
        return _dtype(value.get(b"dtype")).type(value.get(b"data"))
    return value


def _dtype(text: Any) -> np.dtype:
    try:
        dtype = np.dtype(text.decode() if isinstance(text, bytes) else text)
    except TypeError:
        raise WireFormatError(f"unknown array dtype {text!r}") from None
    if dtype.kind in _REFUSED_KINDS:
        raise WireFormatError(f"refusing an array of dtype {dtype}: only numeric, bool and string arrays are read")
    return dtype


def pack(value: Any) -> bytes:
    """One message: `value` (dicts, lists, strings, numbers, NumPy arrays and scalars) as msgpack-numpy bytes."""
    return msgpack.packb(value, default=_encode)


def unpack(data: bytes) -> Any:
    """The value of one message; malformed bytes or arrays raise `WireFormatError`."""
    try:
        return msgpack.unpackb(data, object_hook=_decode)
    except WireFormatError:
        raise
    except (ValueError, msgpack.UnpackException) as error:
        raise WireFormatError(f"not a msgpack message ({error})") from None
