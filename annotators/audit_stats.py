"""What the auditor's report shows, computed from the audit tables: decisions and reasons, agreement per phrase
and per detector pair, each detector's record (failures, lone votes, hallucinations on negatives), IoU values.

Column-wise over Arrow tables (the audit as `audit_table.read_audit` gives it), so a million candidates take
seconds, not the minutes a row at a time would; each number can still be checked against the table.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

DECISIONS = ("accepted", "rejected", "needs_review")


@dataclasses.dataclass
class PhraseStats:
    phrase: str
    candidates: int = 0
    accepted: int = 0
    rejected: int = 0
    needs_review: int = 0

    @property
    def agreement(self) -> float:
        return self.accepted / self.candidates if self.candidates else 0.0


@dataclasses.dataclass
class PairStats:
    """Two detectors over candidates of images where both ran: how often, when either saw it, both agreed."""

    a: str
    b: str
    either: int = 0
    agreed: int = 0
    box_ious: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0))
    """The pair's box IoUs, one per candidate where both ran and voted."""

    @property
    def agreement(self) -> float:
        return self.agreed / self.either if self.either else 0.0


@dataclasses.dataclass
class DetectorStats:
    detector: str
    images_ok: int = 0
    images_failed: int = 0
    errors: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    votes: int = 0
    votes_accepted: int = 0
    lone_votes: int = 0
    """Candidates it alone saw (rejected as single detector)."""
    negative_hits: int = 0
    """Boxes for negative phrases: hallucinations."""


def decision_counts(table: pa.Table) -> dict[str, int]:
    counts = dict(zip(*_value_counts(table.column("decision"))))
    return {decision: counts.get(decision, 0) for decision in DECISIONS}


def reason_counts(table: pa.Table) -> list[tuple[str, str, int]]:
    """(decision, reason, count), most frequent first."""
    grouped = table.group_by(["decision", "reason"]).aggregate([("decision", "count")]).to_pylist()
    return sorted(((g["decision"], g["reason"], g["decision_count"]) for g in grouped), key=lambda t: (-t[2], t[:2]))


def phrase_stats(table: pa.Table) -> list[PhraseStats]:
    """Per asked object (negatives excluded: they have nothing to agree on), most candidates first."""
    asked = table.filter(pc.invert(pc.fill_null(table.column("negative"), False)))
    stats: dict[str, PhraseStats] = {}
    for group in asked.group_by(["phrase", "decision"]).aggregate([("phrase", "count")]).to_pylist():
        entry = stats.setdefault(group["phrase"], PhraseStats(group["phrase"]))
        entry.candidates += group["phrase_count"]
        setattr(entry, group["decision"], getattr(entry, group["decision"]) + group["phrase_count"])
    return sorted(stats.values(), key=lambda s: (-s.candidates, s.phrase))


def _exploded(table: pa.Table, column: str) -> tuple[pa.StructArray, np.ndarray]:
    """The list column's structs, flattened, and the row each came from."""
    values = table.column(column).combine_chunks()
    return pc.list_flatten(values), pc.list_parent_indices(values).to_numpy()


def _codes(values: pa.Array) -> tuple[list[str], np.ndarray]:
    """(the sorted distinct strings, each value's index in them): integer codes instead of a Python object per
    value, which at millions of values cost more than everything else."""
    names = sorted(pc.unique(values).drop_null().to_pylist())
    return names, pc.index_in(values, value_set=pa.array(names, pa.string())).to_numpy(zero_copy_only=False)


def _detector_matrix(table: pa.Table) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(detectors, ran [N, D], voted [N, D]) from each candidate's detections."""
    flat, rows = _exploded(table, "detections")
    detectors, column = _codes(flat.field("detector"))
    ran = np.zeros((table.num_rows, len(detectors)), bool)
    voted = np.zeros_like(ran)
    ran[rows, column] = flat.field("status").to_numpy(zero_copy_only=False) == "ok"
    voted[rows, column] = pc.fill_null(flat.field("voted"), False).to_numpy(zero_copy_only=False)
    return detectors, ran, voted


def _thresholds(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """Each row's (box IoU threshold, mask IoU threshold or NaN), from its consensus settings (few distinct ones)."""
    configs = table.select(["config_hash", "config"]).group_by(["config_hash", "config"]).aggregate([]).to_pylist()
    settings = [json.loads(c["config"]) for c in configs]
    box = np.array([s["box_iou"] for s in settings] or [0.0], float)
    mask = np.array([np.nan if s["mask_iou"] is None else s["mask_iou"] for s in settings] or [np.nan], float)
    keys = pa.array([c["config_hash"] for c in configs], pa.string())
    where = pc.fill_null(pc.index_in(table.column("config_hash"), value_set=keys), 0).to_numpy(zero_copy_only=False)
    return box[where], mask[where]


def pair_stats(table: pa.Table) -> list[PairStats]:
    """Every detector pair, over non-negative candidates of images where both detectors ran."""
    asked = table.filter(pc.invert(pc.fill_null(table.column("negative"), False)))
    detectors, ran, voted = _detector_matrix(asked)
    stats = {}
    for (i, a), (j, b) in itertools.combinations(enumerate(detectors), 2):
        both = ran[:, i] & ran[:, j]
        if both.any():
            stats[(a, b)] = PairStats(a, b, either=int((both & (voted[:, i] | voted[:, j])).sum()))
    flat, rows = _exploded(asked, "pairs")
    if len(flat):
        box = flat.field("box_iou").to_numpy(zero_copy_only=False).astype(float)
        mask = pc.fill_null(flat.field("mask_iou"), np.nan).to_numpy(zero_copy_only=False).astype(float)
        box_thr, mask_thr = (t[rows] for t in _thresholds(asked))
        agreed = (box >= box_thr) & (np.isnan(mask_thr) | (mask >= np.nan_to_num(mask_thr, nan=2.0)))
        ai = pc.index_in(flat.field("a"), value_set=pa.array(detectors)).to_numpy(zero_copy_only=False)
        bi = pc.index_in(flat.field("b"), value_set=pa.array(detectors)).to_numpy(zero_copy_only=False)
        counted = ran[rows, ai] & ran[rows, bi]
        low, high = np.minimum(ai, bi), np.maximum(ai, bi)
        for i, j in {(int(x), int(y)) for x, y in zip(low[counted], high[counted])}:
            mine = counted & (low == i) & (high == j)
            entry = stats.setdefault((detectors[i], detectors[j]), PairStats(detectors[i], detectors[j]))
            entry.box_ious = box[mine]
            entry.agreed = int(agreed[mine].sum())
    return [stats[key] for key in sorted(stats)]


def detector_stats(table: pa.Table, frames: pa.Table) -> list[DetectorStats]:
    """Each detector's record: images it ran on or failed (from the frames table) and how it voted."""
    stats: dict[str, DetectorStats] = {}
    flat, _ = _exploded(frames, "detectors")
    runs = pa.table({"detector": flat.field("detector"), "status": flat.field("status"),
                     "error": flat.field("error")})
    for group in runs.group_by(["detector", "status"]).aggregate([("detector", "count")]).to_pylist():
        entry = stats.setdefault(group["detector"], DetectorStats(group["detector"]))
        if group["status"] == "ok":
            entry.images_ok += group["detector_count"]
        else:
            entry.images_failed += group["detector_count"]
    failed = runs.filter(pc.not_equal(runs.column("status"), "ok"))
    for name, error in zip(failed.column("detector").to_pylist(), failed.column("error").to_pylist()):
        stats[name].errors[(error or "").split(":")[0][:80]] += 1
    detections, rows = _exploded(table, "detections")
    voted = pc.fill_null(detections.field("voted"), False).to_numpy(zero_copy_only=False)
    names, codes = _codes(detections.field("detector"))
    codes, rows = codes[voted], rows[voted]
    decision = pc.equal(table.column("decision"), "accepted").to_numpy(zero_copy_only=False)[rows]
    lone = pc.equal(table.column("reason"), "single_detector").to_numpy(zero_copy_only=False)[rows]
    negative = pc.fill_null(table.column("negative"), False).to_numpy(zero_copy_only=False)[rows]
    for code, name in enumerate(names):
        mine = codes == code
        if not mine.any():
            continue
        entry = stats.setdefault(name, DetectorStats(name))
        entry.votes = int(mine.sum())
        entry.votes_accepted = int((mine & decision).sum())
        entry.lone_votes = int((mine & lone).sum())
        entry.negative_hits = int((mine & negative).sum())
    return [stats[name] for name in sorted(stats)]


def iou_values(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    """(box IoUs, mask IoUs) of every detector pair in every candidate."""
    flat, _ = _exploded(table, "pairs")
    if not len(flat):
        return np.zeros(0), np.zeros(0)
    masks = flat.field("mask_iou")
    return (flat.field("box_iou").to_numpy(zero_copy_only=False).astype(float),
            masks.drop_null().to_numpy(zero_copy_only=False).astype(float))


def _value_counts(column: pa.ChunkedArray) -> tuple[list[str], list[int]]:
    counted = pc.value_counts(column.combine_chunks())
    return counted.field("values").to_pylist(), counted.field("counts").to_pylist()
