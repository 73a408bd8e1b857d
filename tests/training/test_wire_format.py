"""Our msgpack-numpy bytes are openpi-client's bytes, and decoding refuses what could harm the server."""

import msgpack
import numpy as np
import pytest
from openpi_client import msgpack_numpy

from vlaforge.training.policy.wire_format import WireFormatError, pack, unpack

MESSAGE = {"images": {"top": np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)},
           "state": np.linspace(0, 1, 14), "prompt": "stack the cups", "step": np.int64(7), "ids": [1, 2]}


@pytest.mark.parametrize("array", [np.array(3.0), np.array([True, False]), np.zeros((0, 3)), np.float16([1, 2]),
                                   np.arange(6).reshape(2, 3)[:, ::2], np.array(["ab", "c"])])
def test_every_array_kind_round_trips_with_openpis_bytes(array):
    assert pack({"a": array}) == msgpack_numpy.packb({"a": array if array.flags.c_contiguous else array.copy()})
    decoded = unpack(pack({"a": array}))["a"]
    assert decoded.shape == array.shape and decoded.dtype == array.dtype and np.array_equal(decoded, array)


def test_same_bytes_as_openpi_client_both_ways():
    assert pack(MESSAGE) == msgpack_numpy.packb(MESSAGE)
    ours, theirs = unpack(msgpack_numpy.packb(MESSAGE)), msgpack_numpy.unpackb(pack(MESSAGE))
    for decoded in (ours, theirs):
        assert np.array_equal(decoded["images"]["top"], MESSAGE["images"]["top"])
        assert decoded["state"].dtype == np.float64 and decoded["step"] == 7 and decoded["prompt"] == "stack the cups"


@pytest.mark.parametrize(("array", "message"), [
    ({b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "|O", b"shape": [1]}, "refusing an array of dtype object"),
    ({b"__ndarray__": True, b"data": b"\0" * 7, b"dtype": "<f4", b"shape": [2]}, "needs 8 bytes, got 7"),
    ({b"__ndarray__": True, b"data": b"\0" * 4, b"dtype": "nonsense", b"shape": [1]}, "unknown array dtype"),
    ({b"__ndarray__": True, b"data": b"", b"dtype": "<f4", b"shape": [-1]}, "malformed shape"),
])
def test_unsafe_or_inconsistent_arrays_are_refused(array, message):
    with pytest.raises(WireFormatError, match=message):
        unpack(msgpack.packb({"state": array}))


def test_object_arrays_are_not_sent_and_garbage_is_not_read():
    with pytest.raises(WireFormatError, match="cannot send an array of dtype object"):
        pack({"x": np.array([{}], dtype=object)})
    with pytest.raises(WireFormatError, match="not a msgpack message"):
        unpack(b"\xc1")
