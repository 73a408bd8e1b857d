"""Candidates exported for review as COCO JSON with scores: what FiftyOne, CVAT and Label Studio all import.

`vlaforge report export-review` writes `<output>.json` and the images beside it (`images/<dataset>/<image>.jpg`,
full resolution, from the audit's frames table):

- `images`: one per image with a kept JPEG (`file_name` relative to the JSON, `width`, `height`);
- `categories`: one per phrase;
- `annotations`: one per candidate, its fused box as COCO `bbox` [x, y, width, height] in pixels, `score` (the fused
  confidence), `area`, `iscrowd` 0, and `attributes`: `candidate_id`, `decision`, `reason`, every voting detector
  and its score, and an empty `review` for the reviewer to set ("accept" or "reject"; moving the box corrects it);
- `info.vlaforge_exported`: candidate id -> the exported box (xyxy), so the import can tell a moved box from one
  left alone, and which candidates a reviewer deleted.

Candidates whose image the audit did not keep are counted and left out (annotate with `--set
consensus.keep_images=all` to review everything). `review_decisions.py` imports the reviewed file back.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from vlaforge.annotators.audit_table import AuditTable, read_audit
from vlaforge.datasets.schema import safe_key_part
from vlaforge.pipelines.atomic_files import atomic_write_bytes

_COLUMNS = ["candidate_id", "dataset", "image_key", "phrase", "negative", "decision", "reason", "detections",
            "fused_box", "fused_score"]


@dataclasses.dataclass(frozen=True)
class ExportSummary:
    path: str
    images: int
    candidates: int
    without_image: int
    """Candidates left out because the audit kept no image of theirs."""

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def export_review(directories: Sequence[pathlib.Path], output: pathlib.Path, *,
                  decisions: Sequence[str] = ("needs_review",)) -> ExportSummary:
    """Write the COCO file `output` and its images for the candidates of `decisions`."""
    output = pathlib.Path(output)
    images: dict[str, dict[str, Any]] = {}
    annotations, exported, categories, without_image = [], {}, {}, 0
    for directory in directories:
        rows = read_audit(directory, AuditTable.CANDIDATES, columns=_COLUMNS)
        rows = rows.filter(pc.is_in(rows.column("decision"), value_set=pa.array(list(decisions), pa.string())))
        kept = _kept_images(directory, rows, output.parent, images)
        for row in rows.to_pylist():
            image = kept.get(row["image_key"])
            if image is None:
                without_image += 1
                continue
            category = categories.setdefault(row["phrase"], len(categories) + 1)
            annotations.append(_annotation(len(annotations) + 1, image["id"], category, row))
            exported[row["candidate_id"]] = [float(v) for v in row["fused_box"]]
    coco = {
        "info": {"description": "vlaforge consensus candidates for review", "version": "1.0",
                 "date_created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                 "vlaforge_exported": exported},
        "licenses": [], "images": list(images.values()), "annotations": annotations,
        "categories": [{"id": i, "name": name, "supercategory": "object"} for name, i in categories.items()],
    }
    atomic_write_bytes(output, json.dumps(coco, indent=1).encode())
    return ExportSummary(path=str(output), images=len(images), candidates=len(annotations),
                         without_image=without_image)


def _kept_images(directory: pathlib.Path, rows: pa.Table, root: pathlib.Path,
                 images: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The COCO image of each of `rows`' images whose JPEG the audit kept, written beside the JSON."""
    keys = sorted(set(rows.column("image_key").to_pylist()))
    if not keys:
        return {}
    frames = read_audit(directory, AuditTable.FRAMES, columns=["dataset", "image_key", "image_height", "image_width",
                                                              "image_jpeg"], filters=[("image_key", "in", keys)])
    found = {}
    for frame in frames.to_pylist():
        if not frame["image_jpeg"]:
            continue
        name = f"images/{safe_key_part(frame['dataset'])}/{frame['image_key']}.jpg"
        atomic_write_bytes(root / name, frame["image_jpeg"])
        entry = images.setdefault(name, {"id": len(images) + 1, "file_name": name, "width": frame["image_width"],
                                         "height": frame["image_height"]})
        found[frame["image_key"]] = entry
    return found


def _annotation(number: int, image: int, category: int, row: dict[str, Any]) -> dict[str, Any]:
    x1, y1, x2, y2 = (float(v) for v in row["fused_box"])
    voters = {d["detector"]: d["score"] for d in row["detections"] if d["voted"]}
    return {"id": number, "image_id": image, "category_id": category, "bbox": [x1, y1, x2 - x1, y2 - y1],
            "area": (x2 - x1) * (y2 - y1), "iscrowd": 0, "score": float(row["fused_score"]),
            "attributes": {"candidate_id": row["candidate_id"], "decision": row["decision"], "reason": row["reason"],
                           "negative": row["negative"], "detectors": json.dumps(voters), "review": ""}}
