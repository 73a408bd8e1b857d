"""LazyFrames reads a frame only when it is asked for; check_jpeg catches beforehand whatever storing a frame would."""

import numpy as np
import pytest
import simplejpeg

from vlaforge.datasets.frames import BadImageError, FrameConfig, conform_jpeg
from vlaforge.datasets.synth.teleop import make_recording
from vlaforge.datasets.teleop_frames import LazyFrames, check_jpeg, stored_jpeg


@pytest.fixture(scope="module")
def jpegs():
    return make_recording(seed=1, duration_s=0.3).cameras["cam_high"].jpeg


def _counting(jpegs):
    reads = []

    def read(index):
        reads.append(index)
        return jpegs[index]

    return read, reads


def test_lazy_frames_behave_as_a_list_and_read_only_what_is_asked_for(jpegs):
    read, reads = _counting(jpegs)
    indices = np.array([0, 0, 2, 3, 5, 6])  # a duplicated frame, a skipped one
    frames = LazyFrames(read, indices)
    expected = [jpegs[i] for i in indices]
    assert len(frames) == 6 and reads == []
    tail = frames[2:]
    assert isinstance(tail, LazyFrames) and len(tail) == 4 and reads == []  # slicing reads nothing
    assert frames[1] == expected[1] and frames[-1] == expected[-1] and reads == [0, 6]
    assert list(tail) == expected[2:] and list(frames[::2]) == expected[::2]
    with pytest.raises(IndexError):
        frames[6]
    assert list(reversed(frames)) == expected[::-1] and frames.index(jpegs[3]) == 3


def test_check_jpeg_catches_a_frame_that_only_a_decode_finds_bad_when_it_will_be_decoded(jpegs):
    good = jpegs[0]
    cut = good[: len(good) // 2] + b"\xff\xd9"  # markers and header intact, the scan cut short
    passthrough, resized = FrameConfig(verify="header"), FrameConfig(size=(48, 64), verify="header")
    check_jpeg(good, passthrough)
    check_jpeg(good, resized)
    check_jpeg(cut, passthrough)  # stored untouched: "header" verification passes it
    with pytest.raises(BadImageError, match="does not decode"):
        check_jpeg(cut, resized)  # it would be decoded to resize it: found now, not while samples are written
    with pytest.raises(BadImageError, match="does not decode"):
        check_jpeg(cut, FrameConfig())  # the default check reads the scan: caught though stored untouched
    with pytest.raises(BadImageError, match="does not decode"):
        check_jpeg(cut, FrameConfig(verify="full"))
    with pytest.raises(BadImageError, match="not a complete JPEG"):
        check_jpeg(good[:100], passthrough)


def test_stored_jpeg_is_what_conform_jpeg_stores(jpegs):
    for config in (FrameConfig(), FrameConfig(size=(48, 64), quality=80), FrameConfig(verify="full")):
        assert stored_jpeg(jpegs[1], config) == conform_jpeg(jpegs[1], config)
    assert stored_jpeg(jpegs[1], FrameConfig()) is jpegs[1]  # passed through, not copied
    assert simplejpeg.decode_jpeg_header(stored_jpeg(jpegs[1], FrameConfig(size=(48, 64))))[:2] == (48, 64)
