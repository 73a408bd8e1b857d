"""`load_npy`: what `np.load(allow_pickle=False)` gives, for the arrays shards hold and the format's corners, and the
same refusals."""

import io

import numpy as np
import pytest

from vlaforge.pipelines.shards.npy import load_npy


def saved(array: np.ndarray, **options) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, **options)
    return buffer.getvalue()


@pytest.mark.parametrize("array", [
    np.arange(32, dtype=np.float32),
    np.random.default_rng(0).random((30, 7)).astype(np.float32),
    np.asfortranarray(np.random.default_rng(1).random((3, 4))),
    np.array(3.5),
    np.zeros((0, 5), dtype=np.float64),
    np.arange(6, dtype=">i4").reshape(2, 3),
])
def test_arrays_read_back_as_np_load_reads_them(array):
    loaded = load_npy(saved(array))
    reference = np.load(io.BytesIO(saved(array)), allow_pickle=False)
    assert loaded.dtype == reference.dtype and loaded.shape == reference.shape
    assert np.array_equal(loaded, reference)


def test_object_arrays_bad_magic_and_short_data_are_refused():
    with pytest.raises(ValueError, match="holds Python objects: reading it would need pickle"):
        load_npy(saved(np.array([{"a": 1}], dtype=object), allow_pickle=True))
    with pytest.raises(ValueError, match="not a .npy file"):
        load_npy(b"\x89PNG\r\n\x1a\n" + bytes(100))
    with pytest.raises(ValueError, match="its header says"):
        load_npy(saved(np.arange(8, dtype=np.float32))[:-4])
