"""The consensus audit, in Parquet: why each label was kept or rejected.

Two tables, gathered by the VL job into `<output>/audit.parquet` and `<output>/audit_frames.parquet`:

- **audit** (`CANDIDATE_SCHEMA`): one row per candidate object: the image key, camera, phrase, every configured
  detector's box and score (or its failure), the pairwise IoUs, the fused box and mask, the decision and its
  reason, the model ids and versions, and the hash of the consensus thresholds (with the thresholds themselves).
- **audit_frames** (`FRAME_SCHEMA`): one row per annotated image: the phrases asked, each detector's status and
  error, decision counts, and the JPEG itself for images the report's gallery shows.

Masks are COCO uncompressed RLE: run lengths over the mask in column-major order, starting with a run of zeros.
"""

from __future__ import annotations

import enum
import json
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vlaforge.annotators.grounding_frame import Candidate, GroundingFrame, RunStatus
from vlaforge.datasets.qwen_coordinates import to_qwen_box


class AuditTable(str, enum.Enum):
    """The tables' names (the VL job writes `<name>.parquet`)."""

    CANDIDATES = "audit"
    FRAMES = "audit_frames"


_DETECTION = pa.struct([
    ("detector", pa.string()), ("model", pa.string()), ("revision", pa.string()), ("status", pa.string()),
    ("error", pa.string()), ("voted", pa.bool_()), ("box", pa.list_(pa.float64())), ("score", pa.float64()),
])
_SCORE_TEST = pa.struct([
    ("detector", pa.string()), ("raw", pa.float64()), ("confidence", pa.float64()), ("threshold", pa.float64()),
    ("passed", pa.bool_()),
])
_REVIEW = pa.struct([
    ("decision", pa.string()), ("box", pa.list_(pa.float64())), ("reviewer", pa.string()),
    ("reviewed_at", pa.string()), ("source", pa.string()),
])
_PAIR = pa.struct([("a", pa.string()), ("b", pa.string()), ("box_iou", pa.float64()), ("mask_iou", pa.float64())])
_RUN = pa.struct([
    ("detector", pa.string()), ("model", pa.string()), ("revision", pa.string()), ("status", pa.string()),
    ("error", pa.string()), ("boxes", pa.int64()),
])
_IMAGE = [
    ("image_key", pa.string()), ("dataset", pa.string()), ("episode_id", pa.string()), ("step", pa.int64()),
    ("source_key", pa.string()), ("camera", pa.string()), ("selected_by", pa.string()),
    ("image_height", pa.int64()), ("image_width", pa.int64()),
]
CANDIDATE_SCHEMA = pa.schema([
    ("candidate_id", pa.string()), *_IMAGE, ("phrase", pa.string()), ("negative", pa.bool_()),
    ("decision", pa.string()), ("reason", pa.string()), ("detail", pa.string()),
    ("votes", pa.int64()), ("agreeing", pa.list_(pa.string())), ("detectors_total", pa.int64()),
    ("detectors_ran", pa.int64()), ("detectors_failed", pa.list_(pa.string())),
    ("detections", pa.list_(_DETECTION)), ("pairs", pa.list_(_PAIR)),
    ("box_iou", pa.float64()), ("mask_iou", pa.float64()),
    ("fused_box", pa.list_(pa.float64())), ("fused_box_qwen", pa.list_(pa.int64())), ("fused_score", pa.float64()),
    ("fused_mask_rle", pa.list_(pa.int64())), ("config_hash", pa.string()), ("config", pa.string()),
    ("score_tests", pa.list_(_SCORE_TEST)), ("box_agreeing", pa.list_(pa.string())), ("review", _REVIEW),
])
ADDED_COLUMNS = frozenset({"score_tests", "box_agreeing", "review", "image_kept"})
"""Columns tables written before they existed lack: read back as nulls."""
FRAME_SCHEMA = pa.schema([
    *_IMAGE, ("phrases", pa.list_(pa.string())), ("negatives", pa.list_(pa.string())),
    ("detectors", pa.list_(_RUN)), ("candidates", pa.int64()), ("accepted", pa.int64()), ("rejected", pa.int64()),
    ("needs_review", pa.int64()), ("image_jpeg", pa.binary()), ("config_hash", pa.string()),
    ("image_kept", pa.bool_()),
])
SCHEMAS = {AuditTable.CANDIDATES: CANDIDATE_SCHEMA, AuditTable.FRAMES: FRAME_SCHEMA}


def encode_rle(mask: np.ndarray) -> list[int]:
    """[H, W] bool -> COCO uncompressed RLE counts (column-major, first run is zeros, possibly 0 long).

    Only the columns holding the mask are scanned; the empty columns on either side join the first and last runs.
    """
    mask = np.asarray(mask, dtype=bool)
    height, width = mask.shape
    columns = np.flatnonzero(mask.any(axis=0))
    if not len(columns):
        return [height * width]
    first, last = int(columns[0]), int(columns[-1]) + 1
    flat = mask[:, first:last].ravel(order="F")
    changes = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    counts = np.diff(np.concatenate([[0], changes, [flat.size]])).tolist()
    counts = [0, *counts] if flat[0] else counts  # runs alternate zeros, ones: the slab may start with ones
    counts[0] += first * height
    trailing = (width - last) * height
    if len(counts) % 2:  # the last run is zeros: the empty columns after the slab extend it
        counts[-1] += trailing
    elif trailing:
        counts.append(trailing)
    return counts


def decode_rle(counts: list[int], height: int, width: int) -> np.ndarray:
    """The inverse of `encode_rle` -> [H, W] bool."""
    if sum(counts) != height * width:
        raise ValueError(f"RLE counts sum to {sum(counts)}, not {height} x {width} = {height * width} pixels")
    values = np.arange(len(counts)) % 2 == 1
    return np.repeat(values, counts).reshape((height, width), order="F")


def decode_coco_rle(rle: Any, where: str) -> np.ndarray:
    """A COCO RLE mask `{"size": [h, w], "counts": [...] | "compressed string"}` -> [H, W] bool; ValueError naming
    `where` when it is not one."""
    if not isinstance(rle, dict) or not isinstance(rle.get("size"), (list, tuple)) or len(rle["size"]) != 2:
        raise ValueError(f"{where}: a mask must be COCO RLE {{'size': [h, w], 'counts': ...}}, got {str(rle)[:60]}")
    height, width = (int(v) for v in rle["size"])
    counts = rle.get("counts")
    if isinstance(counts, bytes):
        counts = counts.decode("ascii")
    if isinstance(counts, str):
        counts = _compressed_counts(counts)
    if not isinstance(counts, (list, tuple)) or any(not isinstance(c, int) or c < 0 for c in counts):
        raise ValueError(f"{where}: RLE counts must be non-negative integers or a COCO compressed string")
    try:
        return decode_rle(list(counts), height, width)
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None


def _compressed_counts(text: str) -> list[int]:
    """COCO's compressed counts: 5 bits per character (offset 48), 0x20 continues, 0x10 of the last is the sign;
    from the third count on, each is stored as the difference to the count two before (as pycocotools writes)."""
    counts: list[int] = []
    position = 0
    while position < len(text):
        value, shift, more = 0, 0, True
        while more:
            code = ord(text[position]) - 48
            value |= (code & 0x1F) << shift
            more = bool(code & 0x20)
            position += 1
            shift += 5
            if not more and code & 0x10:
                value |= -1 << shift
        if len(counts) > 2:
            value += counts[-2]
        counts.append(value)
    return counts


def _image_columns(frame: GroundingFrame) -> dict[str, Any]:
    return {
        "image_key": frame.image_key, "dataset": frame.dataset, "episode_id": frame.episode_id,
        "step": int(frame.step), "source_key": frame.source_key, "camera": frame.camera,
        "selected_by": frame.selected_by, "image_height": frame.height, "image_width": frame.width,
    }


def candidate_row(frame: GroundingFrame, candidate: Candidate, config_hash: str, config: str) -> dict[str, Any]:
    """One audit row; column order and types as in `CANDIDATE_SCHEMA`."""
    voted = {v.detector: v.detection for v in candidate.votes}
    detections = []
    for run in frame.runs:
        detection = voted.get(run.detector)
        detections.append({
            "detector": run.detector, "model": run.model, "revision": run.revision, "status": run.status.value,
            "error": run.error, "voted": detection is not None,
            "box": [float(x) for x in detection.box] if detection else None,
            "score": float(detection.score) if detection and detection.score is not None else None,
        })
    fused = [float(x) for x in candidate.fused_box]
    return {
        "candidate_id": candidate.candidate_id, **_image_columns(frame), "phrase": candidate.phrase,
        "negative": candidate.negative, "decision": candidate.decision.value, "reason": candidate.reason.value,
        "detail": candidate.detail, "votes": len(candidate.votes), "agreeing": list(candidate.agreeing),
        "detectors_total": candidate.detectors_total, "detectors_ran": candidate.detectors_ran,
        "detectors_failed": sorted(candidate.failed), "detections": detections,
        "pairs": [{"a": p.a, "b": p.b, "box_iou": p.box_iou, "mask_iou": p.mask_iou} for p in candidate.pairs],
        "box_iou": candidate.box_iou, "mask_iou": candidate.mask_iou, "fused_box": fused,
        "fused_box_qwen": to_qwen_box(_clip(fused, frame.height, frame.width), frame.height, frame.width),
        "fused_score": float(candidate.fused_score),
        "fused_mask_rle": encode_rle(candidate.fused_mask) if candidate.fused_mask is not None else None,
        "config_hash": config_hash, "config": config, "score_tests": _score_tests(candidate, config),
        "box_agreeing": list(candidate.box_agreeing), "review": _review(candidate),
    }


def _score_tests(candidate: Candidate, config: str) -> list[dict[str, Any]]:
    """Each vote's raw score, calibrated confidence, its detector's threshold and whether it passed."""
    thresholds = {rule["detector"]: rule.get("threshold") for rule in json.loads(config).get("detector_scores", [])}
    return [{"detector": v.detector, "raw": v.detection.score, "confidence": float(v.confidence),
             "threshold": thresholds.get(v.detector), "passed": v.passed} for v in candidate.votes]


def _review(candidate: Candidate) -> dict[str, Any] | None:
    review = candidate.review
    if review is None:
        return None
    return {"decision": review.decision.value, "box": list(review.box) if review.box else None,
            "reviewer": review.reviewer, "reviewed_at": review.reviewed_at, "source": review.source}


def frame_row(frame: GroundingFrame, config_hash: str, *, keep_image: bool) -> dict[str, Any]:
    """One frames-table row; the JPEG only when `keep_image`."""
    decisions = [c.decision.value for c in frame.candidates]
    return {
        **_image_columns(frame), "phrases": list(frame.phrases), "negatives": list(frame.negatives),
        "detectors": [
            {"detector": r.detector, "model": r.model, "revision": r.revision, "status": r.status.value,
             "error": r.error, "boxes": len(r.detections) if r.status == RunStatus.OK else 0}
            for r in frame.runs
        ],
        "candidates": len(decisions), "accepted": decisions.count("accepted"),
        "rejected": decisions.count("rejected"), "needs_review": decisions.count("needs_review"),
        "image_jpeg": frame.jpeg if keep_image else None, "config_hash": config_hash, "image_kept": keep_image,
    }


def _clip(box: list[float], height: int, width: int) -> list[float]:
    x1, y1, x2, y2 = box
    x1, x2 = sorted((min(max(x1, 0.0), width), min(max(x2, 0.0), width)))
    y1, y2 = sorted((min(max(y1, 0.0), height), min(max(y2, 0.0), height)))
    return [x1, y1, x2, y2]


def read_audit(directory: str | pathlib.Path, table: AuditTable, *, columns: list[str] | None = None,
               filters: Any = None, dictionary: Sequence[str] = ()) -> pa.Table:
    """`<directory>/<table>.parquet` in its schema (only `columns`, only rows passing the Parquet `filters` when
    given); an empty table when the run produced no rows of it. Columns added since older tables were written
    read as nulls (`image_kept` from whether the JPEG is there). String columns named in `dictionary` stay
    dictionary-encoded, as Parquet stores them: a column repeating a few long values (`config`) then takes its
    values' size once, not once per row."""
    path = pathlib.Path(directory) / f"{table.value}.parquet"
    schema = SCHEMAS[table]
    names = columns or schema.names
    schema = pa.schema([pa.field(name, pa.dictionary(pa.int32(), schema.field(name).type))
                        if name in dictionary else schema.field(name) for name in names])
    if not path.exists():
        return schema.empty_table()
    present = set(pq.ParquetFile(path).schema_arrow.names)
    wanted = [n for n in names if n in present] + (["image_jpeg"] if "image_kept" in names and
                                                   "image_kept" not in present and "image_jpeg" not in names else [])
    read = pq.read_table(path, columns=wanted, filters=filters,
                         read_dictionary=[name for name in wanted if name in dictionary] or None)
    for name in ADDED_COLUMNS & set(names) - present:
        value = pc.is_valid(read.column("image_jpeg")) if name == "image_kept" else pa.nulls(
            read.num_rows, schema.field(name).type)
        read = read.append_column(name, value)
    missing = [name for name in names if name not in read.column_names]
    if missing:
        raise ValueError(f"{path} lacks columns {missing}: it was not written by `vlaforge annotate` of this version")
    return read.select(names).cast(schema)
