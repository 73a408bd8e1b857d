"""`vlaforge annotate consensus --detections FILE`: decisions, audit tables, samples and report over detections
computed elsewhere, as a user runs it."""

import json
import tarfile

import pyarrow.parquet as pq
from prefect.settings import PREFECT_API_URL, temporary_settings

from vlaforge.flows.cli import main
from vlaforge.flows.sample_data.detections import write_detection_images, write_detections_jsonl

FACE = (30.0, 14.0, 62.0, 50.0)


def face_rows():
    """Nine face detectors boxing one face within a few pixels, three of them without scores and one scoring 0;
    one detector's lone false positive; and a second image none of them agree on."""
    rows = []
    for i in range(9):
        dx, dy = (i % 3) - 1, (i % 2)
        box = [FACE[0] + dx, FACE[1] + dy, FACE[2] + dx, FACE[3] + dy]
        score = None if i < 3 else (0.0 if i == 3 else 0.5 + i / 20)
        rows.append({"image": "photo_0.jpg", "phrase": "face", "detector": f"det{i}", "box": box, "score": score})
    rows.append({"image": "photo_0.jpg", "phrase": "face", "detector": "det5", "box": [70, 50, 90, 70],
                 "score": 0.8})
    rows.append({"image": "photo_1.jpg", "phrase": "face", "detector": "det0", "box": [1, 1, 20, 20], "score": None})
    return rows


def test_box_only_consensus_over_precomputed_detections_from_the_command_line(prefect_server, tmp_path, capsys):
    images = write_detection_images(tmp_path / "images")
    detections = write_detections_jsonl(tmp_path / "faces.jsonl", face_rows())
    output = tmp_path / "out"
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        code = main(["annotate", "consensus", "--detections", str(detections), "--images", str(images),
                     "--output", str(output), "--runner", "local", "--no-progress",
                     "--set", "consensus.keep_images=all"])
    assert code == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "faces:" in out and "report:" in out
    audit = pq.read_table(output / "faces" / "audit.parquet").to_pylist()
    face = next(r for r in audit if r["image_key"] == "photo_0-jpg" and r["decision"] == "accepted")
    assert face["detail"].startswith("9 of 9 detectors agree on the box") and "masks not judged" in face["detail"]
    assert sorted(face["agreeing"]) == [f"det{i}" for i in range(9)]
    assert [t["raw"] for t in face["score_tests"]][:3] == [None, None, None]
    assert 0 <= face["fused_score"] <= 1
    lone = [r for r in audit if r["decision"] != "accepted"]
    assert {r["reason"] for r in lone} == {"single_detector"} and len(lone) == 2
    summary = json.loads((output / "faces" / "summary.json").read_text())
    assert summary["task"] == "grounding" and summary["samples"] >= 1
    shard = next((output / "faces").rglob("*.tar"))
    with tarfile.open(shard) as tar:
        conversations = [tar.extractfile(m).read().decode() for m in tar if m.name.endswith("conversation.json")]
    assert conversations and all('bbox_2d' in c for c in conversations)
    assert (output / "report" / "index.html").exists()
    recorded = json.loads((output / "faces" / "annotate_recipe.json").read_text())
    assert recorded["recipe"]["consensus"]["mask_iou"] is None


def test_a_mask_threshold_without_masks_is_refused(tmp_path, capsys):
    detections = write_detections_jsonl(tmp_path / "faces.jsonl", face_rows())
    assert main(["annotate", "consensus", "--detections", str(detections), "--images", str(tmp_path),
                 "--output", str(tmp_path / "o"), "--mask-iou", "0.5"]) == 2
    assert "the table has no masks and no --sam runs" in capsys.readouterr().err
