"""Precomputed detections read as grounding frames: the documented table (JSON Lines or Parquet), images as files or
WebDataset keys, bad rows and unreadable images quarantined by name."""

import io
import json
import tarfile

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vlaforge.annotators.audit_table import encode_rle
from vlaforge.annotators.detection_table import DetectionTableSource
from vlaforge.annotators.grounding_frame import RunStatus
from vlaforge.datasets.drops import DropLedger, DropReason
from vlaforge.datasets.frames import FrameConfig, encode_jpeg
from vlaforge.datasets.source import SourceError
from vlaforge.datasets.synth.scenes import camera_frames
from vlaforge.flows.sample_data.detections import write_detection_images, write_detections_jsonl

CUP = [20.0, 12.0, 60.0, 44.0]


def mask_rle(box, size=(72, 96)):
    mask = np.zeros(size, bool)
    x1, y1, x2, y2 = (int(v) for v in box)
    mask[y1:y2, x1:x2] = True
    return {"size": list(size), "counts": encode_rle(mask)}


def rows():
    return [
        {"image": "photo_0.jpg", "phrase": "cup", "detector": "retinaface", "box": CUP, "score": 0.97},
        {"image": "photo_0.jpg", "phrase": "cup", "detector": "haar", "box": [21, 12, 61, 45], "score": None},
        {"image": "photo_0.jpg", "phrase": "cup", "detector": "hog", "box": [20, 13, 59, 44], "score": 0.0,
         "mask": mask_rle(CUP)},
        {"image": "photo_0.jpg", "phrase": "elephant", "detector": "haar", "box": [0, 0, 9, 9], "score": None,
         "negative": True},
        {"image": "photo_1.jpg", "phrase": "cup", "detector": "retinaface", "box": [60, 40, 10, 10], "score": 0.5},
        {"image": "photo_1.jpg", "phrase": "cup", "detector": "hog", "box": None, "score": None,
         "error": "timeout after 30 s"},
        {"image": "missing.jpg", "phrase": "cup", "detector": "haar", "box": CUP, "score": 0.3},
    ]


def read_all(config):
    source = config.build()
    ledger = DropLedger()
    frames = [f for unit in source.plan() for f in source.read(unit, ledger)]
    return frames, ledger.take()


def test_a_jsonl_table_becomes_frames_with_one_run_per_detector(tmp_path):
    images = write_detection_images(tmp_path / "images")
    table = write_detections_jsonl(tmp_path / "faces.jsonl", rows())
    frames, drops = read_all(DetectionTableSource.Config(root=str(table), images=str(images), images_per_unit=2))
    assert [f.image_key for f in frames] == ["photo_0-jpg", "photo_1-jpg"]
    first, second = frames
    assert (first.phrases, first.negatives, first.dataset) == (["cup"], ["elephant"], "faces")
    runs = {r.detector: r for r in first.runs}
    assert sorted(runs) == ["haar", "hog", "retinaface"] and all(r.status == RunStatus.OK for r in runs.values())
    assert [d.score for d in runs["haar"].detections] == [None, None]  # no score: kept, not dropped
    assert runs["hog"].detections[0].score == 0.0 and runs["hog"].detections[0].mask.sum() == 40 * 32
    second_runs = {r.detector: r for r in second.runs}
    assert second_runs["hog"].status == RunStatus.FAILED and second_runs["hog"].error == "timeout after 30 s"
    assert second_runs["haar"].status == RunStatus.OK and second_runs["haar"].detections == []  # ran, found none
    assert second_runs["retinaface"].detections == []  # its box was bad
    reasons = {(d.reason, d.episode) for d in drops}
    assert reasons == {(DropReason.BAD_RECORD, "photo_1.jpg"), (DropReason.MISSING_IMAGE, "missing.jpg")}
    bad = next(d for d in drops if d.reason == DropReason.BAD_RECORD)
    assert "faces.jsonl row 4" in bad.message and "is it [x, y, width, height]?" in bad.message


def test_parquet_tables_and_webdataset_keys(tmp_path):
    images = tmp_path / "shards"
    images.mkdir()
    pixels = np.ascontiguousarray(camera_frames(2, 2, 72, 96)[0])
    with tarfile.open(images / "00000.tar", "w") as tar:
        for name, data in (("000000007.jpg", encode_jpeg(pixels, FrameConfig())), ("000000007.txt", b"a cup")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    table = pa.table({"image": ["000000007"] * 2, "phrase": ["cup"] * 2, "detector": ["a", "b"],
                      "box": [CUP, CUP], "score": [0.9, None],
                      "mask": [json.dumps(mask_rle(CUP)), None]})
    pq.write_table(table, tmp_path / "dets.parquet")
    frames, drops = read_all(DetectionTableSource.Config(root=str(tmp_path / "dets.parquet"), images=str(images)))
    (frame,) = frames
    assert not drops and frame.pixels.shape == (72, 96, 3) and frame.source_key == "000000007"
    assert [d.score for r in frame.runs for d in r.detections] == [0.9, None]


def test_a_table_without_the_required_columns_is_refused_before_work_starts(tmp_path):
    write_detections_jsonl(tmp_path / "t.jsonl", [{"image": "a.jpg", "label": "cup", "bbox": [0, 0, 1, 1]}])
    with pytest.raises(SourceError, match=r"lacks columns \['phrase', 'detector', 'box', 'score'\]"):
        DetectionTableSource.Config(root=str(tmp_path / "t.jsonl"), images=str(tmp_path)).build().plan()


def test_compressed_coco_rle_as_pycocotools_writes_it(tmp_path):
    """Masks exported by COCO tools come as pycocotools' compressed counts strings (runs stored as differences,
    negative ones among them): the table reader decodes them to the very masks pycocotools encoded."""
    mask_util = pytest.importorskip("pycocotools.mask")
    images = write_detection_images(tmp_path / "images", n=1)
    rng = np.random.default_rng(3)
    masks = [np.zeros((72, 96), bool), np.ones((72, 96), bool), rng.random((72, 96)) < 0.5]
    masks[0][10:40, 5:70] = True
    masks[0][50:60, 80:90] = True
    table = []
    for i, mask in enumerate(masks):
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        table.append({"image": "photo_0.jpg", "phrase": "cup", "detector": f"d{i}", "box": CUP, "score": 0.5,
                      "mask": {"size": rle["size"], "counts": rle["counts"].decode("ascii")}})
    frames, drops = read_all(DetectionTableSource.Config(
        root=str(write_detections_jsonl(tmp_path / "t.jsonl", table)), images=str(images)))
    assert not drops
    decoded = {r.detector: r.detections[0].mask for r in frames[0].runs}
    for i, mask in enumerate(masks):
        assert np.array_equal(decoded[f"d{i}"], mask), f"mask {i}"
