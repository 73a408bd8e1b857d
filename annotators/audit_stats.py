"""What the auditor's report shows, computed from the audit tables: decisions and reasons, agreement per phrase
and per detector pair, each detector's record (failures, lone votes, hallucinations on negatives), IoU values.

Pure functions over audit rows (dicts as in `audit_table`), so each number can be tested against the table.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import json
from typing import Any

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
    box_ious: list[float] = dataclasses.field(default_factory=list)

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


def decision_counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts = collections.Counter(row["decision"] for row in rows)
    return {decision: counts.get(decision, 0) for decision in DECISIONS}


def reason_counts(rows: list[dict[str, Any]]) -> list[tuple[str, str, int]]:
    """(decision, reason, count), most frequent first."""
    counts = collections.Counter((row["decision"], row["reason"]) for row in rows)
    return [(d, r, n) for (d, r), n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


def phrase_stats(rows: list[dict[str, Any]]) -> list[PhraseStats]:
    """Per asked object (negatives excluded: they have nothing to agree on), most candidates first."""
    stats: dict[str, PhraseStats] = {}
    for row in rows:
        if row["negative"]:
            continue
        entry = stats.setdefault(row["phrase"], PhraseStats(row["phrase"]))
        entry.candidates += 1
        setattr(entry, row["decision"], getattr(entry, row["decision"]) + 1)
    return sorted(stats.values(), key=lambda s: (-s.candidates, s.phrase))


def _thresholds(row: dict[str, Any], cache: dict[str, tuple[float, float | None]]) -> tuple[float, float | None]:
    if row["config_hash"] not in cache:
        config = json.loads(row["config"])
        cache[row["config_hash"]] = (config["box_iou"], config["mask_iou"])
    return cache[row["config_hash"]]


def pair_stats(rows: list[dict[str, Any]]) -> list[PairStats]:
    """Every detector pair, over non-negative candidates of images where both detectors ran."""
    stats: dict[tuple[str, str], PairStats] = {}
    cache: dict[str, tuple[float, float | None]] = {}
    for row in rows:
        if row["negative"]:
            continue
        box_thr, mask_thr = _thresholds(row, cache)
        ran = sorted(d["detector"] for d in row["detections"] if d["status"] == "ok")
        voted = {d["detector"] for d in row["detections"] if d["voted"]}
        pairs = {(p["a"], p["b"]): p for p in row["pairs"]}
        for a, b in itertools.combinations(ran, 2):
            entry = stats.setdefault((a, b), PairStats(a, b))
            if a not in voted and b not in voted:
                continue
            entry.either += 1
            pair = pairs.get((a, b)) or pairs.get((b, a))
            if pair is None:
                continue
            entry.box_ious.append(pair["box_iou"])
            masks_agree = mask_thr is None or (pair["mask_iou"] is not None and pair["mask_iou"] >= mask_thr)
            entry.agreed += pair["box_iou"] >= box_thr and masks_agree
    return [stats[key] for key in sorted(stats)]


def detector_stats(rows: list[dict[str, Any]], frames: list[dict[str, Any]]) -> list[DetectorStats]:
    """Each detector's record: images it ran on or failed (from the frames table) and how it voted."""
    stats: dict[str, DetectorStats] = {}
    for frame in frames:
        for run in frame["detectors"]:
            entry = stats.setdefault(run["detector"], DetectorStats(run["detector"]))
            if run["status"] == "ok":
                entry.images_ok += 1
            else:
                entry.images_failed += 1
                entry.errors[run["error"].split(":")[0][:80]] += 1
    for row in rows:
        for detection in row["detections"]:
            if not detection["voted"]:
                continue
            entry = stats.setdefault(detection["detector"], DetectorStats(detection["detector"]))
            entry.votes += 1
            entry.votes_accepted += row["decision"] == "accepted"
            entry.lone_votes += row["reason"] == "single_detector"
            entry.negative_hits += bool(row["negative"])
    return [stats[name] for name in sorted(stats)]


def iou_values(rows: list[dict[str, Any]]) -> tuple[list[float], list[float]]:
    """(box IoUs, mask IoUs) of every detector pair in every candidate."""
    boxes = [p["box_iou"] for row in rows for p in row["pairs"]]
    masks = [p["mask_iou"] for row in rows for p in row["pairs"] if p["mask_iou"] is not None]
    return boxes, masks
