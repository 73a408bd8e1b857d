"""The auditor's report at scale: building it from audit tables of a million candidates, against reading those tables
as Python rows (what the report did before it went column-wise: its first step, before any number).

    python benchmarks/report.py                 # 1,000,000 candidates on 250,000 images (about a minute)
    python benchmarks/report.py --quick         # 100,000 candidates

The tables are synthetic but shaped like a real run's (written column-wise with pyarrow, not through the consensus,
so that writing them takes seconds): three detectors, every candidate with its detections and pairs, 30 phrases,
the decisions and reasons in a real run's proportions, and the JPEG kept for flagged images and a 5% sample of
accepted ones. Reported: seconds to build the report (the page, the gallery's data and images), the baseline's
seconds, their ratio, the peak memory of each (the tables are written by a child process, so that the build's
peak is its own), the gallery's size and the page's size (what the browser loads first).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import pathlib
import resource
import tempfile
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from vlaforge.annotators.audit_table import CANDIDATE_SCHEMA, FRAME_SCHEMA
from vlaforge.annotators.consensus import ConsensusStage
from vlaforge.annotators.report_page import build_report
from vlaforge.datasets.frames import FrameConfig, encode_jpeg
from vlaforge.datasets.synth.scenes import camera_frames

DETECTORS = ("grounding_dino", "llmdet", "owlv2")
DECISIONS = np.array(["accepted", "rejected", "needs_review"])
REASONS = {"accepted": "agreed", "rejected": "single_detector", "needs_review": "borderline_box_iou"}


def _list_of_structs(rows_per: np.ndarray, fields: dict[str, pa.Array]) -> pa.ListArray:
    offsets = pa.array(np.r_[0, np.cumsum(rows_per)].astype(np.int32))
    values = [v.combine_chunks() if isinstance(v, pa.ChunkedArray) else v for v in fields.values()]
    return pa.ListArray.from_arrays(offsets, pa.StructArray.from_arrays(values, list(fields)))


def write_tables(directory: pathlib.Path, candidates: int, per_image: int = 4, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    images = candidates // per_image
    image = np.repeat(np.arange(images), per_image)
    decision = DECISIONS[rng.choice(3, size=candidates, p=[0.7, 0.2, 0.1])]
    config = json.dumps(ConsensusStage.Config().as_dict(), sort_keys=True, default=list)
    n_det = len(DETECTORS)
    box = np.tile([10.0, 10.0, 50.0, 60.0], (candidates * n_det, 1)) + rng.normal(0, 2, (candidates * n_det, 4))
    detections = _list_of_structs(np.full(candidates, n_det), {
        "detector": pa.array(np.tile(DETECTORS, candidates)), "model": pa.array(np.tile(DETECTORS, candidates)),
        "revision": pa.array(["sha256:1"] * (candidates * n_det)), "status": pa.array(["ok"] * (candidates * n_det)),
        "error": pa.array([""] * (candidates * n_det)),
        "voted": pa.array(rng.random(candidates * n_det) < 0.8),
        "box": pa.FixedSizeListArray.from_arrays(pa.array(box.ravel()), 4).cast(pa.list_(pa.float64())),
        "score": pa.array(rng.uniform(0.3, 0.9, candidates * n_det))})
    pairs_a = np.tile(["grounding_dino", "grounding_dino", "llmdet"], candidates)
    pairs_b = np.tile(["llmdet", "owlv2", "owlv2"], candidates)
    pairs = _list_of_structs(np.full(candidates, 3), {
        "a": pa.array(pairs_a), "b": pa.array(pairs_b), "box_iou": pa.array(rng.uniform(0.3, 1.0, candidates * 3)),
        "mask_iou": pa.array(rng.uniform(0.3, 1.0, candidates * 3))})
    keys = pa.array([f"ep-{i // 8}_{i % 8:06d}_wrist" for i in range(images)]).take(pa.array(image))
    columns = {
        "candidate_id": pa.array([f"{i:016x}" for i in range(candidates)]), "image_key": keys,
        "dataset": pa.array(["droid"] * candidates), "episode_id": pa.array([f"ep-{i // 8}" for i in image]),
        "step": pa.array(image % 8), "source_key": keys, "camera": pa.array(["wrist"] * candidates),
        "selected_by": pa.array(["first"] * candidates), "image_height": pa.array(np.full(candidates, 180)),
        "image_width": pa.array(np.full(candidates, 320)),
        "phrase": pa.array([f"object {i}" for i in rng.integers(0, 30, candidates)]),
        "negative": pa.array(np.zeros(candidates, bool)), "decision": pa.array(decision),
        "reason": pa.array([REASONS[d] for d in decision]), "detail": pa.array(["2 of 3 detectors agree"] * candidates),
        "votes": pa.array(np.full(candidates, 3)), "detections": detections, "pairs": pairs,
        "box_iou": pa.array(rng.uniform(0.3, 1.0, candidates)), "fused_box": pa.FixedSizeListArray.from_arrays(
            pa.array(np.tile([10.0, 10.0, 50.0, 60.0], candidates)), 4).cast(pa.list_(pa.float64())),
        "fused_score": pa.array(rng.uniform(0.3, 0.9, candidates)), "config_hash": pa.array(["abc"] * candidates),
        "config": pa.array([config] * candidates),
    }
    table = pa.table({name: columns[name] if name in columns else
                      pa.nulls(candidates, CANDIDATE_SCHEMA.field(name).type)
                      for name in CANDIDATE_SCHEMA.names}).cast(CANDIDATE_SCHEMA)
    pq.write_table(table, directory / "audit.parquet", row_group_size=100_000)
    flagged = np.zeros(images, bool)
    np.logical_or.at(flagged, image, decision != "accepted")
    kept = flagged | (rng.random(images) < 0.05)
    jpeg = encode_jpeg(np.ascontiguousarray(camera_frames(0, 1, 180, 320)[0]), FrameConfig())
    frame_rows = pa.table({
        "image_key": keys.take(pa.array(np.arange(0, candidates, per_image))),
        "dataset": pa.array(["droid"] * images), "image_height": pa.array(np.full(images, 180)),
        "image_width": pa.array(np.full(images, 320)),
        "detectors": _list_of_structs(np.full(images, n_det), {
            "detector": pa.array(np.tile(DETECTORS, images)), "model": pa.array(np.tile(DETECTORS, images)),
            "revision": pa.array(["sha256:1"] * (images * n_det)), "status": pa.array(["ok"] * (images * n_det)),
            "error": pa.array([""] * (images * n_det)), "boxes": pa.array(np.full(images * n_det, 2))}),
        "image_jpeg": pa.array([jpeg if k else None for k in kept], pa.binary()),
        "image_kept": pa.array(kept), "config_hash": pa.array(["abc"] * images)})
    frames = pa.table({name: frame_rows.column(name) if name in frame_rows.column_names else
                       pa.nulls(images, FRAME_SCHEMA.field(name).type) for name in FRAME_SCHEMA.names})
    pq.write_table(frames.cast(FRAME_SCHEMA), directory / "audit_frames.parquet", row_group_size=50_000)


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--candidates", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true", help="100,000 candidates")
    args = parser.parse_args()
    candidates = 100_000 if args.quick else args.candidates
    with tempfile.TemporaryDirectory() as work:
        audit = pathlib.Path(work) / "droid"
        audit.mkdir()
        started = time.perf_counter()
        writer = multiprocessing.get_context("spawn").Process(target=write_tables, args=(audit, candidates))
        writer.start()
        writer.join()
        if writer.exitcode != 0:
            raise SystemExit(f"writing the tables failed (exit code {writer.exitcode})")
        written_s = time.perf_counter() - started
        started = time.perf_counter()
        summary = build_report([audit], pathlib.Path(work) / "report")
        build_s = time.perf_counter() - started
        build_peak_mb = peak_rss_mb()
        started = time.perf_counter()
        rows = pq.read_table(audit / "audit.parquet").to_pylist()
        baseline_s = time.perf_counter() - started
        del rows
        baseline_peak_mb = peak_rss_mb()
        page_kb = (pathlib.Path(work) / "report" / "index.html").stat().st_size / 1024
        data = list((pathlib.Path(work) / "report" / "data").iterdir())
    print(f"\nThe report over {candidates:,} candidates on {summary.images:,} images (tables written in "
          f"{written_s:.1f} s)")
    rows_out = [["build the report (page + gallery data + images)", f"{build_s:.1f}"],
                ["baseline: read the candidates as Python rows", f"{baseline_s:.1f}"],
                ["ratio (baseline / build)", f"{baseline_s / build_s:.2f}"],
                ["peak memory of the build, MB", f"{build_peak_mb:.0f}"],
                ["peak memory once the baseline ran too, MB", f"{baseline_peak_mb:.0f}"]]
    width = max(len(r[0]) for r in rows_out)
    for what, value in rows_out:
        print(f"  {what.ljust(width)}  {value}")
    print(f"  gallery: {summary.cards} cards in {len(data) - 1} data files; the page itself: {page_kb:.0f} KB")


if __name__ == "__main__":
    main()
