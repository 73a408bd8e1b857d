"""Frames picked out of an mp4 by timestamp: the nearest frame within the tolerance, sequential and backward
requests on one open reader, resizing, and named errors for short, gappy and unreadable videos."""

import numpy as np
import pytest

from vlaforge.datasets.synth.lerobot import write_mp4
from vlaforge.datasets.synth.scenes import camera_frames
from vlaforge.datasets.video import (
    FrameTimestampError,
    VideoOpenError,
    VideoReader,
    VideoTooShortError,
    decode_frames,
)

FPS = 10
N_FRAMES = 80  # 8 s: long enough that a jump back or far ahead seeks


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    frames = camera_frames(1, N_FRAMES, 72, 96)
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    write_mp4(path, frames, fps=FPS)
    return path, frames


def _error(decoded, written):
    return float(np.abs(decoded.astype(np.int16) - written.astype(np.int16)).mean())


def _closest(decoded, frames):
    """Index of the written frame a decoded frame looks most like."""
    return int(np.argmin([_error(decoded, frame) for frame in frames]))


def test_each_timestamp_gets_the_nearest_frame_in_the_order_asked(video):
    path, frames = video
    # 0.54 s is nearest frame 5, 0.56 s frame 6; repeats and an unsorted order come back as asked.
    decoded = decode_frames(path, [0.56, 0.0, 0.54, 2.0, 0.0], tolerance_s=0.5 / FPS)
    assert decoded.shape == (5, 72, 96, 3) and decoded.dtype == np.uint8
    assert [_closest(frame, frames) for frame in decoded] == [6, 0, 5, 20, 0]
    assert max(_error(decoded[i], frames[j]) for i, j in [(0, 6), (1, 0), (2, 5), (3, 20)]) < 8


def test_one_reader_serves_forward_backward_and_far_requests(video):
    path, frames = video
    with VideoReader(path) as reader:
        ranges = [np.arange(0, 10), np.arange(10, 25), np.arange(70, 80), np.arange(3, 6)]
        for indices in ranges:
            decoded = reader.frames_at(indices / FPS, tolerance_s=0.5 / FPS)
            assert [_closest(frame, frames) for frame in decoded] == list(indices)


def test_a_size_resizes_while_converting_and_convert_receives_each_frame(video):
    path, _ = video
    with VideoReader(path, size=(36, 48)) as reader:
        shapes = reader.frames_at([0.1, 0.2], tolerance_s=0.05, convert=lambda rgb: rgb.shape)
    assert shapes == [(36, 48, 3), (36, 48, 3)]


def test_a_video_that_ends_early_says_how_many_frames_it_found(video):
    path, _ = video
    wanted = np.arange(75, 85) / FPS  # frames 75..84 of an 80-frame video
    with pytest.raises(VideoTooShortError) as caught:
        decode_frames(path, wanted, tolerance_s=0.5 / FPS)
    error = caught.value
    assert (error.found, error.needed) == (5, 10)
    assert error.stopped_at_s == pytest.approx(8.0) and error.last_frame_s == pytest.approx(7.9)
    assert str(path) in str(error) and "found 5 of 10 frames" in str(error)


def test_a_timestamp_between_frames_beyond_the_tolerance_is_an_error(video):
    path, _ = video
    with pytest.raises(FrameTimestampError, match=r"no frame within 0\.0100 s of 0\.250 s"):
        decode_frames(path, [0.2, 0.25], tolerance_s=0.01)


def test_unreadable_files_raise_video_open_error(tmp_path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    for path in (garbage, tmp_path / "missing.mp4"):
        with pytest.raises(VideoOpenError, match=str(path.name)):
            decode_frames(path, [0.0], tolerance_s=0.05)
