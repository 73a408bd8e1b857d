"""The auditor's review loop as a user runs it: decide over detections, export candidates as COCO JSON, edit them
as a review tool would (accept with a moved box, delete one), import the decisions, and rerun the consensus with
them: the audit records who decided and when, and the samples use the corrected box."""

import json
import tarfile

import pyarrow.parquet as pq
import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from vlaforge.datasets.qwen_coordinates import to_qwen_box
from vlaforge.flows.cli import main
from vlaforge.flows.sample_data.detections import write_detection_images, write_detections_jsonl

CUP, PLATE, FORK = [20.0, 12.0, 60.0, 44.0], [62.0, 30.0, 90.0, 60.0], [2.0, 50.0, 12.0, 70.0]
CORRECTED = [22.0, 14.0, 58.0, 46.0]


def rows():
    return [
        {"image": "photo_0.jpg", "phrase": "cup", "detector": "a", "box": CUP, "score": 0.9},
        {"image": "photo_0.jpg", "phrase": "cup", "detector": "b", "box": [20.0, 12.0, 60.0, 52.0], "score": 0.7},
        {"image": "photo_0.jpg", "phrase": "plate", "detector": "a", "box": PLATE, "score": 0.8},
        {"image": "photo_0.jpg", "phrase": "plate", "detector": "b", "box": PLATE, "score": 0.6},
        {"image": "photo_0.jpg", "phrase": "fork", "detector": "b", "box": FORK, "score": 0.5},
    ]


def consensus(detections, images, output, *extra):
    return main(["annotate", "consensus", "--detections", str(detections), "--images", str(images), "--output",
                 str(output), "--box-iou", "0.85", "--review-margin", "0.1", "--runner", "local", "--no-progress",
                 "--set", "consensus.keep_images=all", *extra])


def samples(dataset):
    found = []
    for shard in dataset.rglob("*.tar"):
        with tarfile.open(shard) as tar:
            found += [json.loads(tar.extractfile(m).read()) for m in tar if m.name.endswith("conversation.json")]
    return found


@pytest.fixture()
def prefect_api(prefect_server):
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        yield


def read_by_coco_tools(path, coco):
    """The export as pycocotools (the COCO API the review tools' importers follow) reads it: the ground truth
    indexed by image and category, and the same annotations loaded as scored detections (results)."""
    coco_api = pytest.importorskip("pycocotools.coco")
    truth = coco_api.COCO(str(path))
    assert sorted(truth.getAnnIds()) == sorted(a["id"] for a in coco["annotations"])
    assert {truth.loadCats(i)[0]["name"] for i in truth.getCatIds()} == {c["name"] for c in coco["categories"]}
    results = truth.loadRes([{k: a[k] for k in ("image_id", "category_id", "bbox", "score")}
                             for a in coco["annotations"]])
    assert sorted(a["score"] for a in results.loadAnns(results.getAnnIds())) == sorted(
        a["score"] for a in coco["annotations"])


def test_export_review_import_and_rerun(prefect_api, tmp_path, capsys):
    images = write_detection_images(tmp_path / "images", n=1)
    detections = write_detections_jsonl(tmp_path / "faces.jsonl", rows())
    assert consensus(detections, images, tmp_path / "first") == 0
    audit = {r["phrase"]: r for r in pq.read_table(tmp_path / "first" / "faces" / "audit.parquet").to_pylist()}
    assert (audit["cup"]["decision"], audit["plate"]["decision"], audit["fork"]["decision"]) == (
        "needs_review", "accepted", "rejected")

    coco_path = tmp_path / "review" / "coco.json"
    assert main(["report", "export-review", str(tmp_path / "first"), "--output", str(coco_path),
                 "--decision", "needs_review,accepted"]) == 0
    coco = json.loads(coco_path.read_text())
    read_by_coco_tools(coco_path, coco)
    assert {c["name"] for c in coco["categories"]} == {"cup", "plate"} and len(coco["annotations"]) == 2
    (image,) = coco["images"]
    assert (coco_path.parent / image["file_name"]).read_bytes()[:2] == b"\xff\xd8" and image["width"] == 96
    by_phrase = {a["attributes"]["candidate_id"]: a for a in coco["annotations"]}
    cup = by_phrase[audit["cup"]["candidate_id"]]
    assert cup["attributes"]["decision"] == "needs_review"
    assert cup["score"] == pytest.approx(audit["cup"]["fused_score"])
    # The reviewer accepts the cup with a tighter box and deletes the plate (a wrong label).
    x1, y1, x2, y2 = CORRECTED
    cup["bbox"], cup["attributes"]["review"] = [x1, y1, x2 - x1, y2 - y1], "accept"
    coco["annotations"] = [cup]
    coco_path.write_text(json.dumps(coco))
    assert main(["report", "import-review", str(coco_path), "--audit", str(tmp_path / "first" / "faces"),
                 "--reviewer", "alice"]) == 0
    assert "rejected 1, corrected 1" in capsys.readouterr().out

    reviews = tmp_path / "first" / "faces" / "reviews.parquet"
    assert consensus(detections, images, tmp_path / "second", "--reviews", str(reviews)) == 0
    again = {r["phrase"]: r for r in pq.read_table(tmp_path / "second" / "faces" / "audit.parquet").to_pylist()}
    assert again["cup"]["candidate_id"] == audit["cup"]["candidate_id"]  # the same candidate, found again
    assert (again["cup"]["decision"], again["cup"]["reason"]) == ("accepted", "reviewed")
    assert again["cup"]["review"]["reviewer"] == "alice" and again["cup"]["review"]["reviewed_at"]
    assert again["cup"]["fused_box"] == CORRECTED and "reviewed by alice" in again["cup"]["detail"]
    assert (again["plate"]["decision"], again["plate"]["reason"]) == ("rejected", "reviewed")
    assert again["fork"]["reason"] == "single_detector"  # not reviewed: the consensus stands
    answers = " ".join(m["content"][0]["text"] for s in samples(tmp_path / "second" / "faces") for m in s
                       if m["role"] == "assistant")
    assert json.dumps(to_qwen_box(CORRECTED, 72, 96)) in answers and "plate" not in answers
