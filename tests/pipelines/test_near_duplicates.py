"""Near-duplicate images: the perceptual hash survives re-encoding and resizing, different photos differ, matches
point at the earlier row, identical bytes are not near copies, and the ingest reports or drops them as asked."""

import io

import numpy as np
from PIL import Image

from vlaforge.datasets.frames import FrameConfig, encode_jpeg
from vlaforge.datasets.synth.llava import write_llava_json
from vlaforge.datasets.synth.scenes import camera_frames
from vlaforge.pipelines.near_duplicates import NO_MATCH, near_duplicate_of, perceptual_hash
from vlaforge.pipelines.runners import LocalRunner
from vlaforge.pipelines.vl_ingest import new_job, run_vl_ingest


def _bits(a, b):
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def test_the_hash_survives_reencoding_and_resizing_and_tells_photos_apart():
    photo = np.ascontiguousarray(camera_frames(0, 2, 96, 128)[0])
    png = io.BytesIO()
    Image.fromarray(photo).resize((64, 48)).save(png, "PNG")
    same = [perceptual_hash(encode_jpeg(photo, FrameConfig(quality=q))) for q in (95, 40)] + [
        perceptual_hash(png.getvalue())]
    other = perceptual_hash(encode_jpeg(np.ascontiguousarray(camera_frames(2, 2, 96, 128)[0]), FrameConfig()))
    assert max(_bits(same[0], h) for h in same) <= 4 and _bits(same[0], other) > 16
    assert perceptual_hash(b"not an image") == ""


def test_matches_point_at_the_earlier_row_and_identical_bytes_are_not_near_copies():
    hashes = ["ff00ff00ff00ff00", "ff00ff00ff00ff01", "00ff00ff00ff00ff", "ff00ff00ff00ff00", ""]
    found = near_duplicate_of(hashes, ["a", "b", "c", "a", "e"], bits=4)
    assert found.tolist() == [NO_MATCH, 0, NO_MATCH, NO_MATCH, NO_MATCH]


def test_the_ingest_reports_near_duplicates_or_drops_them(tmp_path):
    source = write_llava_json(tmp_path / "raw")
    reported = run_vl_ingest(new_job(str(source), str(tmp_path / "a")), LocalRunner())
    dropped = run_vl_ingest(new_job(str(source), str(tmp_path / "b"), near_duplicates="drop"), LocalRunner())
    assert reported["rows"]["near_duplicate_images"] == 2 and reported["samples"] == 17
    assert dropped["rows"]["near_duplicate"] == 2 and dropped["samples"] == 15
    assert dropped["drops_by_reason"]["near_duplicate_image"] == 2
