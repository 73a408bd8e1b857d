"""The report's gallery: a seeded random sample of candidates per stratum (dataset, phrase, decision), shown as one
card per image with all of that image's candidates, written as data the page loads page by page.

At a million candidates the page cannot hold every image or every box, so the gallery is data beside the page:

- `images/<card>.jpg`: each card's image at full resolution, as the audit stored it (read only for chosen images);
- `data/cards-<page>.json`: `page_size` cards each (image size, every candidate with its decision, reason, sentence,
  IoUs, fused box and every detector's box and score);
- `data/index.json`: one small entry per card (what the page filters and sorts on: dataset, phrases, decisions,
  detectors, weakest IoU, best score, the strata that chose it, its data page) and the detectors' colours.

Sampling: every candidate whose image the audit kept (flagged images, and a hashed share of accepted-only ones;
`ConsensusStage.Config.accepted_images`) gets a rank from a hash of `seed` and its id; each stratum takes its
`per_stratum` best ranked, and the images of those candidates become cards, strata taking turns until `max_cards`.
The same tables and seed always give the same cards.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vlaforge.annotators.audit_table import AuditTable, read_audit
from vlaforge.pipelines.atomic_files import atomic_write_bytes

DATA_DIR, IMAGES_DIR = "data", "images"
CARD_COLUMNS = ["candidate_id", "dataset", "image_key", "phrase", "negative", "decision", "reason", "detail",
                "detections", "box_iou", "mask_iou", "fused_box", "fused_score", "review"]
"""The candidate columns a card shows (the table `write_gallery` is given must have them)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class GalleryOptions:
    """What the gallery samples."""

    per_stratum: int = 12
    """Candidates drawn per (dataset, phrase, decision) stratum."""
    max_cards: int = 2000
    """Images at most (strata take turns, so every stratum is shown before any shows more)."""
    seed: int = 0
    """The sample's seed: the same seed draws the same candidates."""
    page_size: int = 50
    """Cards per data file (what the page fetches at once)."""
    per_page: int = 24
    """Cards the page shows at once."""

    def __post_init__(self) -> None:
        if min(self.per_stratum, self.max_cards, self.page_size, self.per_page) < 1:
            raise ValueError(f"GalleryOptions: per_stratum, max_cards, page_size and per_page must be >= 1, got "
                             f"{self.per_stratum}, {self.max_cards}, {self.page_size}, {self.per_page}")


@dataclasses.dataclass(frozen=True)
class GallerySummary:
    cards: int
    strata: int
    eligible: int
    """Candidates whose image was kept (the population sampled)."""
    pages: int


_FRAME_BATCH = 1024
"""Frames decoded at a time when the chosen images' JPEGs are read."""


def detector_colors(names: Sequence[str]) -> dict[str, str]:
    """A distinct colour per detector, however many: hues a golden angle apart (sorted names, so every card and
    legend agree)."""
    return {name: f"hsl({(i * 137.508) % 360:.1f}, 75%, 45%)" for i, name in enumerate(sorted(set(names)))}


def write_gallery(directories: Sequence[pathlib.Path], candidates: pa.Table, output: pathlib.Path,
                  detectors: Sequence[str], options: GalleryOptions = GalleryOptions()) -> GallerySummary:
    """Choose the cards among `candidates` (the audit's, with `CARD_COLUMNS`) and write their images and data under
    `output`."""
    kept = _kept_images(directories)
    ids = _image_ids(candidates)
    eligible_rows = pc.is_in(ids, value_set=pa.array(sorted(kept), pa.string()))
    eligible = candidates.select(["candidate_id", "dataset", "image_key", "phrase", "decision"]).filter(eligible_rows)
    chosen = _chosen_images(eligible, options)
    cards = [_card(i, image, strata) for i, (image, strata) in enumerate(chosen)]
    _fill(cards, directories, candidates.filter(pc.is_in(ids, value_set=pa.array([i for i, _ in chosen],
                                                                                   pa.string()))), output)
    colors = detector_colors(detectors)
    index = []
    pages = [cards[start : start + options.page_size] for start in range(0, len(cards), options.page_size)]
    for number, page in enumerate(pages):
        atomic_write_bytes(output / DATA_DIR / f"cards-{number:05d}.json", json.dumps(page).encode())
        index += [_entry(card, number) for card in page]
    atomic_write_bytes(output / DATA_DIR / "index.json", json.dumps(
        {"colors": colors, "detectors": sorted(colors), "page_size": options.page_size, "per_page": options.per_page,
         "seed": options.seed,
         "per_stratum": options.per_stratum, "cards": index}).encode())
    return GallerySummary(cards=len(cards), strata=len({s for _, st in chosen for s in st}),
                          eligible=eligible.num_rows, pages=len(pages))


def _image_ids(table: pa.Table) -> pa.ChunkedArray:
    return pc.binary_join_element_wise(table.column("dataset"), table.column("image_key"), "/")


def _kept_images(directories: Sequence[pathlib.Path]) -> set[str]:
    frames = pa.concat_tables([read_audit(d, AuditTable.FRAMES, columns=["dataset", "image_key", "image_kept"])
                               for d in directories])
    frames = frames.filter(pc.fill_null(frames.column("image_kept"), False))
    return set(_image_ids(frames).to_pylist())


def _rank(seed: int, ids: list[str]) -> np.ndarray:
    return np.array([int.from_bytes(hashlib.sha256(f"{seed}|{i}".encode()).digest()[:8], "big") for i in ids],
                    dtype=np.uint64)


def _chosen_images(eligible: pa.Table, options: GalleryOptions) -> list[tuple[str, list[str]]]:
    """(image id, the strata that chose it) in the order strata take turns, at most `max_cards`."""
    if not eligible.num_rows:
        return []
    strata = pc.binary_join_element_wise(eligible.column("dataset"), eligible.column("phrase"),
                                         eligible.column("decision"), " | ").combine_chunks().dictionary_encode()
    codes = strata.dictionary.to_pylist()
    inverse = strata.indices.to_numpy(zero_copy_only=False)
    images = _image_ids(eligible).combine_chunks()
    rank = _rank(options.seed, eligible.column("candidate_id").to_pylist())
    order = np.lexsort((rank, inverse))
    sorted_codes = inverse[order]
    starts = np.r_[0, np.flatnonzero(sorted_codes[1:] != sorted_codes[:-1]) + 1]
    within = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    picked = order[within < options.per_stratum]
    turns = np.lexsort((inverse[picked], within[within < options.per_stratum]))  # round 0 of every stratum first
    chosen: dict[str, list[str]] = {}
    in_turn = picked[turns]
    for row, image in zip(in_turn.tolist(), images.take(pa.array(in_turn)).to_pylist()):
        if image not in chosen and len(chosen) >= options.max_cards:
            continue
        chosen.setdefault(image, []).append(str(codes[inverse[row]]))
    return list(chosen.items())


def _card(number: int, image: str, strata: list[str]) -> dict[str, Any]:
    dataset, _, key = image.partition("/")
    return {"id": number, "dataset": dataset, "image_key": key, "image": f"{IMAGES_DIR}/{number:06d}.jpg",
            "strata": sorted(set(strata)), "candidates": []}


def _fill(cards: list[dict[str, Any]], directories: Sequence[pathlib.Path], rows: pa.Table,
          output: pathlib.Path) -> None:
    """Each card's candidates (from `rows`, the chosen images' candidates), size and image file. The images are
    read for the chosen ones only; the files are the report's own (rebuilt at will), so they are written plainly."""
    if not cards:
        return
    by_image = {f"{c['dataset']}/{c['image_key']}": c for c in cards}
    for row in rows.to_pylist():
        by_image[f"{row['dataset']}/{row['image_key']}"]["candidates"].append(_candidate(row))
    (output / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    keys = pa.array(sorted({c["image_key"] for c in cards}), pa.string())
    for directory in directories:
        index = read_audit(directory, AuditTable.FRAMES, columns=["dataset", "image_key"])
        wanted = np.flatnonzero(pc.is_in(index.column("image_key"), value_set=keys).to_numpy(zero_copy_only=False))
        for frame in _frame_rows(directory, wanted):
            card = by_image.get(f"{frame['dataset']}/{frame['image_key']}")
            if card is not None and frame["image_jpeg"]:
                card["width"], card["height"] = frame["image_width"], frame["image_height"]
                (output / card["image"]).write_bytes(frame["image_jpeg"])


def _frame_rows(directory: pathlib.Path, rows: np.ndarray) -> list[dict[str, Any]]:
    """The frames table's rows at these indices, with their JPEGs: only the row groups holding them are read, a
    batch at a time (a whole row group of JPEGs in memory at once took 3.7 GB at a million candidates)."""
    if not len(rows):
        return []
    parquet = pq.ParquetFile(pathlib.Path(directory) / f"{AuditTable.FRAMES.value}.parquet")
    starts = np.cumsum([0] + [parquet.metadata.row_group(g).num_rows for g in range(parquet.num_row_groups)])
    groups = sorted(set(np.searchsorted(starts, rows, side="right") - 1))
    columns = ["dataset", "image_key", "image_height", "image_width", "image_jpeg"]
    found = []
    for group in groups:
        first = starts[group]
        for batch in parquet.iter_batches(batch_size=_FRAME_BATCH, row_groups=[group], columns=columns):
            local = rows[(rows >= first) & (rows < first + batch.num_rows)] - first
            if len(local):
                found += batch.take(pa.array(local)).to_pylist()
            first += batch.num_rows
    return found


def _candidate(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["candidate_id"], "phrase": row["phrase"], "negative": row["negative"], "decision": row["decision"],
        "reason": row["reason"], "detail": row["detail"], "box_iou": row["box_iou"], "mask_iou": row["mask_iou"],
        "fused_box": row["fused_box"], "fused_score": row["fused_score"], "review": row["review"],
        "detections": [{k: d[k] for k in ("detector", "status", "error", "voted", "box", "score")}
                       for d in row["detections"]],
    }


def _entry(card: dict[str, Any], page: int) -> dict[str, Any]:
    """What the page filters and sorts a card by, without its data."""
    candidates = card["candidates"]
    ious = [c["box_iou"] for c in candidates if c["box_iou"] is not None]
    scores = [c["fused_score"] for c in candidates if c["fused_score"] is not None]
    return {"id": card["id"], "page": page, "dataset": card["dataset"], "image_key": card["image_key"],
            "phrases": sorted({c["phrase"] for c in candidates}),
            "decisions": sorted({c["decision"] for c in candidates}),
            "min_iou": min(ious) if ious else None, "max_score": max(scores) if scores else None,
            "strata": card["strata"]}
