"""Reviewers' decisions, imported from a review tool, as overrides of the consensus.

`vlaforge report export-review` writes candidates as COCO JSON with scores (`review_export.py`); a reviewer opens it
in CVAT, Label Studio or FiftyOne, then exports COCO JSON again. `import_reviews` reads that export back: each
annotation carrying our `candidate_id` attribute is one decision:

- `attributes.review` = "accept" or "reject" (the decision the reviewer set), or
- a box that moved (`bbox`, COCO [x, y, width, height] in pixels) from the one we exported: the reviewer corrected
  it, which accepts the candidate with that box;
- an exported annotation the reviewer deleted is a rejection; one left as it was, with no `review`, is no decision.

The decisions go to `reviews.parquet` (`REVIEW_SCHEMA`: candidate id, decision, corrected box, reviewer, time,
source file) beside the audit tables. The next consensus run with `consensus.reviews` set to that table
(`ReviewBook`) applies them: the candidate's decision becomes the reviewer's, its reason `reviewed`, its fused box
the corrected one, and its audit row records who decided and when; the sample builder then uses it like any
decision.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import pathlib
from collections.abc import Iterable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from vlaforge.annotators.grounding_frame import Candidate, Decision, DecisionReason, Review

REVIEWS_NAME = "reviews.parquet"
REVIEW_SCHEMA = pa.schema([
    ("candidate_id", pa.string()), ("decision", pa.string()), ("box", pa.list_(pa.float64())),
    ("reviewer", pa.string()), ("reviewed_at", pa.string()), ("source", pa.string()),
])
ACCEPT, REJECT = "accept", "reject"
MOVED_PIXELS = 0.5
"""A box that moved more than this (any side, in pixels) was corrected by the reviewer."""


class ReviewError(ValueError):
    """A review file that cannot be imported; the message names the file, the annotation and the fix."""


@dataclasses.dataclass(frozen=True)
class ImportSummary:
    path: str
    accepted: int
    rejected: int
    corrected: int
    unchanged: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


class ReviewBook:
    """Decisions by candidate id; the last import of a candidate wins."""

    def __init__(self, reviews: dict[str, Review]) -> None:
        self.reviews = reviews

    @classmethod
    def load(cls, path: str | pathlib.Path) -> "ReviewBook":
        path = pathlib.Path(path)
        if not path.exists():
            raise ReviewError(f"{path}: no reviews table there; import decisions first with `vlaforge report "
                              "import-review`")
        rows = pq.read_table(path).to_pylist()
        return cls({row["candidate_id"]: _review(row) for row in rows})

    def apply(self, candidates: Iterable[Candidate]) -> None:
        """Override each reviewed candidate's decision (and box) in place."""
        for candidate in candidates:
            review = self.reviews.get(candidate.candidate_id)
            if review is None:
                continue
            candidate.review = review
            candidate.decision, candidate.reason = review.decision, DecisionReason.REVIEWED
            corrected = ""
            if review.box is not None:
                candidate.fused_box = review.box
                candidate.fused_mask = None  # the consensus mask outlines the old box
                corrected = ", box corrected"
            candidate.detail += (f"; reviewed by {review.reviewer} at {review.reviewed_at}: "
                                 f"{review.decision.value}{corrected}")


def _review(row: dict[str, Any]) -> Review:
    box = tuple(row["box"]) if row["box"] else None
    return Review(Decision(row["decision"]), box, row["reviewer"], row["reviewed_at"], row["source"])  # type: ignore


def import_reviews(coco_path: str | pathlib.Path, audit_dir: str | pathlib.Path, *, reviewer: str,
                   now: datetime.datetime | None = None) -> ImportSummary:
    """Read a reviewed COCO export and append its decisions to `<audit_dir>/reviews.parquet`."""
    coco_path = pathlib.Path(coco_path)
    if not reviewer.strip():
        raise ReviewError("--reviewer must name who reviewed (it is recorded with every decision)")
    exported = _exported_boxes(coco_path)
    reviewed_at = (now or datetime.datetime.now(datetime.timezone.utc)).isoformat(timespec="seconds")
    rows, counts = [], {"accepted": 0, "rejected": 0, "corrected": 0, "unchanged": 0}
    seen: set[str] = set()
    for index, annotation in enumerate(_annotations(coco_path)):
        candidate_id = _attributes(annotation).get("candidate_id")
        if not candidate_id:
            continue  # a box the reviewer drew that is none of ours: nothing to override
        seen.add(candidate_id)
        decision, box = _decision(coco_path, index, annotation, exported.get(candidate_id))
        if decision is None:
            counts["unchanged"] += 1
            continue
        counts["corrected" if box is not None else f"{decision.value}"] += 1
        rows.append(_row(candidate_id, decision, box, reviewer, reviewed_at, coco_path))
    for candidate_id in exported.keys() - seen:  # deleted in the tool: the reviewer rejected it
        counts["rejected"] += 1
        rows.append(_row(candidate_id, Decision.REJECTED, None, reviewer, reviewed_at, coco_path))
    _append(pathlib.Path(audit_dir) / REVIEWS_NAME, rows)
    return ImportSummary(path=str(pathlib.Path(audit_dir) / REVIEWS_NAME), **counts)


def _row(candidate_id: str, decision: Decision, box: list[float] | None, reviewer: str, reviewed_at: str,
         source: pathlib.Path) -> dict[str, Any]:
    return {"candidate_id": candidate_id, "decision": decision.value, "box": box, "reviewer": reviewer,
            "reviewed_at": reviewed_at, "source": source.name}


def _load(path: pathlib.Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ReviewError(f"{path}: cannot read it as JSON ({error}); pass the COCO JSON the review tool "
                          "exported") from None
    if not isinstance(data, dict) or not isinstance(data.get("annotations"), list):
        raise ReviewError(f"{path}: not a COCO file (no 'annotations' list); export the task as COCO JSON")
    return data


def _annotations(path: pathlib.Path) -> list[dict[str, Any]]:
    return [a for a in _load(path)["annotations"] if isinstance(a, dict)]


def _exported_boxes(path: pathlib.Path) -> dict[str, list[float]]:
    """Candidate id -> the box we exported, from the file's `info.vlaforge_exported` record (tools keep `info`)."""
    info = _load(path).get("info") or {}
    exported = info.get("vlaforge_exported") if isinstance(info, dict) else None
    if not isinstance(exported, dict):
        raise ReviewError(f"{path}: its 'info' lacks 'vlaforge_exported' (the boxes as exported); import the file "
                          "exported by `vlaforge report export-review` after review, with its info block kept")
    return {str(k): [float(x) for x in v] for k, v in exported.items()}


def _attributes(annotation: dict[str, Any]) -> dict[str, Any]:
    attributes = annotation.get("attributes")
    return attributes if isinstance(attributes, dict) else {}


def _decision(path: pathlib.Path, index: int, annotation: dict[str, Any],
              exported: list[float] | None) -> tuple[Decision | None, list[float] | None]:
    """(decision, corrected box xyxy) of one reviewed annotation; (None, None) when the reviewer left it as is."""
    review = str(_attributes(annotation).get("review") or "").strip().lower()
    if review not in ("", ACCEPT, REJECT):
        raise ReviewError(f"{path}: annotation {index} has review {review!r}; use 'accept' or 'reject' (or leave it "
                          "empty and move the box to correct it)")
    box = _xyxy(path, index, annotation.get("bbox"))
    moved = exported is not None and max(abs(a - b) for a, b in zip(box, exported)) > MOVED_PIXELS
    if review == REJECT:
        return Decision.REJECTED, None
    if moved:
        return Decision.ACCEPTED, box
    return (Decision.ACCEPTED, None) if review == ACCEPT else (None, None)


def _xyxy(path: pathlib.Path, index: int, bbox: Any) -> list[float]:
    if not (isinstance(bbox, list) and len(bbox) == 4 and all(isinstance(v, (int, float)) for v in bbox)):
        raise ReviewError(f"{path}: annotation {index} has bbox {bbox!r}; COCO boxes are [x, y, width, height]")
    x, y, w, h = (float(v) for v in bbox)
    if w < 0 or h < 0:
        raise ReviewError(f"{path}: annotation {index} has a negative width or height in {bbox}")
    return [x, y, x + w, y + h]


def _append(path: pathlib.Path, rows: list[dict[str, Any]]) -> None:
    """Rewrite the table with the new rows after the old ones (small: one row per reviewed candidate)."""
    old = pq.read_table(path).to_pylist() if path.exists() else []
    table = pa.Table.from_pylist([*old, *rows], schema=REVIEW_SCHEMA)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".parquet.tmp")
    pq.write_table(table, temporary)
    temporary.replace(path)
