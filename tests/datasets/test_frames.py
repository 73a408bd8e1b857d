"""JPEG frames: the default scan check that catches damage inside the entropy-coded data, the header check a camera's
frames share, and bytes-like frames (views into a mapped record)."""

import numpy as np
import pytest
import simplejpeg

from vlaforge.datasets import frames as frames_module
from vlaforge.datasets.frames import BadImageError, FrameConfig, FrameConformer, header_length, jpeg_shape


def _jpeg(seed: int, height: int = 48, width: int = 64, quality: int = 90) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    return simplejpeg.encode_jpeg(pixels, quality=quality, colorspace="RGB")


@pytest.fixture
def parses(monkeypatch):
    """Counts the header parses (simplejpeg.decode_jpeg_header calls)."""
    calls = []
    real = simplejpeg.decode_jpeg_header

    def counted(data, *args, **kwargs):
        calls.append(len(data))
        return real(data, *args, **kwargs)

    monkeypatch.setattr(frames_module.simplejpeg, "decode_jpeg_header", counted)
    return calls


def test_header_length_ends_at_the_start_of_scan_segment():
    data = _jpeg(0)
    sos = data.index(b"\xff\xda")
    assert header_length(data) == sos + 2 + int.from_bytes(data[sos + 2 : sos + 4], "big")
    assert header_length(memoryview(data)) == header_length(data)
    assert header_length(b"\xff\xd8garbage") == 0 and header_length(data[: sos + 3]) == 0


def test_frames_sharing_a_header_are_parsed_once_and_pass_through_as_given(parses):
    frames = [memoryview(_jpeg(seed)) for seed in range(6)]
    conform = FrameConformer(FrameConfig(size=(48, 64), verify="header"))
    assert all(conform(frame) is frame for frame in frames)
    assert len(parses) == 1


def test_a_truncated_frame_with_the_shared_header_is_still_refused(parses):
    conform = FrameConformer(FrameConfig(verify="header"))
    conform(_jpeg(0))
    cut = _jpeg(1)
    with pytest.raises(BadImageError, match="missing start or end marker"):
        conform(cut[: len(cut) // 2])


def test_a_frame_with_another_header_is_parsed_and_resized_to_the_target(parses):
    conform = FrameConformer(FrameConfig(size=(48, 64), verify="header"))
    conform(_jpeg(0))
    larger = conform(_jpeg(1, height=96, width=128))
    assert jpeg_shape(larger) == (48, 64) and len(parses) == 3  # the first frame, the larger one, its re-encoding
    lower_quality = _jpeg(2, quality=50)  # other quantization tables: another header, parsed again
    assert conform(lower_quality) is lower_quality and len(parses) == 4


def test_a_damaged_header_is_parsed_and_refused_even_after_good_frames():
    conform = FrameConformer(FrameConfig(verify="header"))
    good = _jpeg(0)
    conform(good)
    sof = good.index(b"\xff\xc0")
    damaged = good[:sof] + b"\xff\xc0\x00\x02" + good[sof + 4 :]  # an SOF segment length too short to parse
    with pytest.raises(BadImageError, match="does not decode"):
        conform(damaged)


def _damaged_in_the_middle(data: bytes) -> bytes:
    """32 bytes overwritten half-way through the entropy-coded data: the markers and the header stay intact."""
    middle = (header_length(data) + len(data)) // 2
    return data[:middle] + bytes(b ^ 0x5A for b in data[middle : middle + 32]) + data[middle + 32 :]


def test_damage_inside_the_entropy_coded_data_is_caught_by_default():
    from skimage.data import astronaut

    good = simplejpeg.encode_jpeg(np.ascontiguousarray(astronaut()[::2, ::2]), quality=90)
    damaged = _damaged_in_the_middle(good)
    assert FrameConfig().verify == "scan"
    assert jpeg_shape(damaged, "header") == jpeg_shape(good, "header")  # what the old default let through
    with pytest.raises(BadImageError, match="Corrupt JPEG data"):
        jpeg_shape(damaged, "scan")
    with pytest.raises(BadImageError, match="Corrupt JPEG data"):
        jpeg_shape(damaged, "full")
    conform = FrameConformer(FrameConfig())
    assert conform(good) is good  # a good frame still passes through, byte for byte
    with pytest.raises(BadImageError):
        conform(damaged)
    assert jpeg_shape(good, "scan") == jpeg_shape(good, "full") == (256, 256)


def test_the_scan_check_reads_grayscale_and_cmyk_jpegs():
    from PIL import Image
    import io

    for mode in ("L", "CMYK"):
        buffer = io.BytesIO()
        Image.new(mode, (40, 24), color=90 if mode == "L" else (10, 20, 30, 40)).save(buffer, format="JPEG")
        assert jpeg_shape(buffer.getvalue(), "scan") == (24, 40)


def test_full_verification_decodes_every_frame(monkeypatch):
    decodes = []
    real = simplejpeg.decode_jpeg
    monkeypatch.setattr(frames_module.simplejpeg, "decode_jpeg",
                        lambda data, **kwargs: decodes.append(1) or real(data, **kwargs))
    conform = FrameConformer(FrameConfig(verify="full"))
    for seed in range(3):
        conform(_jpeg(seed))
    assert len(decodes) == 3


def test_a_header_without_a_start_of_frame_is_never_remembered():
    data = _jpeg(0)
    sof = data.index(b"\xff\xc0")
    length = int.from_bytes(data[sof + 2 : sof + 4], "big")
    assert header_length(data[:sof] + data[sof + 2 + length :]) == 0  # the same segments without its SOF
