"""Grounding annotators on this CPU: images/s per detector (tiny random-weight models, for their relative cost), the
consensus engine's time as a fraction of detector time, and our weighted box fusion against `ensemble-boxes`.

    python benchmarks/annotate.py            # about a minute on 2 shared cores
    python benchmarks/annotate.py --quick    # fewer images and repeats

Frames are DROID-sized (180x320) views of real photos, each asked about 3 objects and 1 negative. Every time is the
median of `--repeats` runs, measured alternately in the same process, because these machines are shared and noisy:
compare ratios, not absolute numbers across runs. Torch runs `--threads` intra-op threads (1 by default, what a
Ray worker with one CPU gets).

1. Images/s per stage: Grounding DINO and LLMDet (MM-Grounding-DINO) through transformers, SAM (one mask per box
   of every detector), and the hosted-API client against a local server speaking the DDS v2 protocol with no model
   behind it (the client's own cost: encoding, HTTP, polling).
2. Consensus as a fraction of detector time (target < 5%): the decisions alone (clustering, box and mask IoU,
   fusion, decisions) and with the audit rows (mask RLE, row dicts), against the three tiny detectors, and against
   one full-size Grounding DINO (the grounding-dino-tiny architecture: Swin-T and BERT-base, 800 px inputs, random
   weights: a real model's cost without its weights; only with `--full-size`: about 30 s per image on one
   shared core).
3. Weighted box fusion: ours against `ensemble_boxes.weighted_boxes_fusion` on the same random inputs (3 models,
   3 boxes each as the consensus sees per phrase, and `--boxes` each), results checked equal first. Time ratio
   (theirs / ours > 1 means ours is faster).
4. The consensus at 4, 8 and 16 detectors (`--detectors`): frames of 3 objects each, every detector boxing each
   object with a few pixels of jitter (a SAM-like mask per box) plus one false positive in four, decided by
   `decide_frame` with its bounded group search (Bron-Kerbosch) against the baseline that tries every subset of
   voters (the engine before it); and one object whose boxes lie on a ring (every box in the candidate, only
   neighbours agreeing: the agreeing group must be searched for). Decisions are checked equal. Milliseconds per
   candidate (masks included), median of `--repeats` (one run of the baseline past 12 detectors: seconds each).
"""

from __future__ import annotations

import argparse
import copy
import pathlib
import tempfile
import time
from collections.abc import Callable
from statistics import median

import numpy as np

from vlaforge.annotators.box_fusion import weighted_boxes_fusion
from vlaforge.annotators.consensus import ConsensusStage, decide_frame
from vlaforge.annotators.grounding_dino import grounding_dino, llmdet
from vlaforge.annotators.grounding_frame import GroundingFrame
from vlaforge.annotators.hosted_detector import HostedDetector, RetryPolicy
from vlaforge.annotators.sam_masks import SamMasker
from vlaforge.annotators.scripted_detection_server import ScriptedDetectionServer
from vlaforge.datasets.frames import FrameConfig, encode_jpeg
from vlaforge.datasets.synth.scenes import PHOTOS, camera_frames
from vlaforge.flows.sample_data.tiny_detectors import write_tiny_detector, write_tiny_sam

CONSENSUS_TARGET = 0.05
PHRASES = ["red mug", "shelf", "blue block"]


def make_frames(n: int) -> list[GroundingFrame]:
    frames = []
    for i in range(n):
        pixels = np.ascontiguousarray(camera_frames(i % len(PHOTOS), 8, 180, 320)[i % 8])
        frames.append(GroundingFrame(
            dataset="bench", episode_id=f"ep-{i // 8}", source_file="bench.tar", step=i, camera="exterior_1",
            jpeg=encode_jpeg(pixels, FrameConfig()), pixels=pixels, selected_by="every_k", instructions=[],
            phrases=list(PHRASES), negatives=["elephant"]))
    return frames


def timed(run: Callable[[], object], repeats: int) -> float:
    """Median seconds of `repeats` calls, after one warm-up call."""
    run()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return median(times)


def fresh(frames: list[GroundingFrame], runs_from: list[GroundingFrame] | None = None) -> list[GroundingFrame]:
    """Copies of `frames` (optionally carrying another set's detector runs): each timed call starts clean."""
    copies = [copy.copy(f) for f in frames]
    for i, frame in enumerate(copies):
        frame.runs = copy.deepcopy(runs_from[i].runs) if runs_from else []
        frame.candidates = []
    return copies


def hosted_responder(pixels: np.ndarray, phrases: list[str]) -> list[dict]:
    height, width = pixels.shape[:2]
    return [{"bbox": [width * 0.1, height * 0.2, width * 0.4, height * 0.7], "score": 0.8, "category": p}
            for p in phrases]


def detector_section(work: pathlib.Path, frames: list[GroundingFrame], repeats: int, batch: int, runtime: dict):
    """Set up every stage, time each on the frames; returns (rows, detected frames, seconds per stage)."""
    gd = write_tiny_detector(work / "gdino")
    mm = write_tiny_detector(work / "llmdet", architecture="mm_grounding_dino", seed=1)
    sam = write_tiny_sam(work / "sam")
    # At most 2 boxes per phrase: the random tiny models would otherwise box every phrase 5 times, far more
    # candidates per image than real detectors give (consensus cost grows with candidates, not with model size).
    local = {**runtime, "box_threshold": 0.3, "text_threshold": 0.2, "batch_size": batch, "max_per_phrase": 2}
    server = ScriptedDetectionServer(hosted_responder, token="bench").__enter__()
    configs = {
        "grounding_dino": grounding_dino(str(gd), **local),
        "llmdet": llmdet(str(mm), **{**local, "box_threshold": 0.05, "text_threshold": 0.0}),
        "hosted client (local server)": HostedDetector.Config(
            base_url=server.url, api_token="bench", poll_interval_s=0.001, requests_per_second=10_000.0,
            retry=RetryPolicy(timeout_s=5.0), concurrency=4),
    }
    stages = {name: config.build() for name, config in configs.items()}
    for stage in stages.values():
        stage.setup()
    seconds = {name: timed(lambda s=stage: s(fresh(frames)), repeats) for name, stage in stages.items()}
    detected = fresh(frames)
    for stage in stages.values():
        stage(detected)
    masker = SamMasker.Config(model=str(sam), batch_size=batch, **runtime).build()
    masker.setup()
    seconds["sam (every box)"] = timed(lambda: masker(fresh(frames, detected)), repeats)
    masker(detected)
    server.__exit__(None, None, None)
    boxes = sum(len(r.detections) for f in detected for r in f.runs)
    rows = [[name, f"{len(frames) / s:.1f}", f"{1000 * s / len(frames):.1f}"] for name, s in seconds.items()]
    return rows, detected, seconds, boxes


def full_size_seconds(work: pathlib.Path, frames: list[GroundingFrame], repeats: int, batch: int,
                      runtime: dict) -> float:
    """Median seconds for a full-size Grounding DINO (default config: Swin-T + BERT-base) on `frames`."""
    import transformers

    from vlaforge.flows.sample_data.tiny_detectors import _tokenizer

    transformers.GroundingDinoForObjectDetection(transformers.GroundingDinoConfig()).save_pretrained(work / "full")
    transformers.GroundingDinoProcessor(image_processor=transformers.GroundingDinoImageProcessor(),
                                        tokenizer=_tokenizer()).save_pretrained(work / "full")
    stage = grounding_dino(str(work / "full"), batch_size=batch, max_per_phrase=2, **runtime).build()
    stage.setup()
    return timed(lambda: stage(fresh(frames)), max(repeats // 2, 1))


def fusion_inputs(rng: np.random.Generator, boxes: int, models: int = 3) -> tuple[list, list]:
    centers = rng.uniform(0.1, 0.9, size=(boxes, 2))
    per_model_boxes, per_model_scores = [], []
    for _ in range(models):
        jitter = centers + rng.normal(0, 0.02, size=centers.shape)
        half = rng.uniform(0.02, 0.1, size=centers.shape)
        per_model_boxes.append(np.clip(np.concatenate([jitter - half, jitter + half], axis=1), 0, 1))
        per_model_scores.append(rng.uniform(0.1, 1.0, size=boxes))
    return per_model_boxes, per_model_scores


def fusion_section(boxes: int, repeats: int) -> list[list[str]]:
    return [fusion_row(3, repeats), fusion_row(boxes, repeats)]


def fusion_row(boxes: int, repeats: int) -> list[str]:
    from ensemble_boxes import weighted_boxes_fusion as reference

    rng = np.random.default_rng(0)
    cases = [fusion_inputs(rng, boxes) for _ in range(20)]
    for b, s in cases:  # the comparison means something only if the answers are the same
        ours = weighted_boxes_fusion(b, s, iou_thr=0.55)
        ref_boxes, ref_scores, _ = reference([x.tolist() for x in b], [x.tolist() for x in s],
                                             [[0] * len(x) for x in s], iou_thr=0.55)
        np.testing.assert_allclose([f.box for f in ours], ref_boxes, atol=1e-5)
        np.testing.assert_allclose([f.score for f in ours], ref_scores, atol=1e-5)
    ours_s = timed(lambda: [weighted_boxes_fusion(b, s, iou_thr=0.55) for b, s in cases], repeats)
    theirs_s = timed(lambda: [reference(b, s, [[0] * len(x) for x in s], iou_thr=0.55) for b, s in cases], repeats)
    per_case = 1000 / len(cases)
    return [f"3 models x {boxes} boxes", f"{ours_s * per_case:.3f}", f"{theirs_s * per_case:.3f}",
            f"{theirs_s / ours_s:.2f}"]


class ExhaustiveGroups:
    """The baseline group search: every subset of voters, largest first (what the engine did before it was
    bounded); a drop-in for `consensus._GroupSearch`."""

    def __init__(self, votes, pairs, budget):
        self.by_pair = {(p.a, p.b): p for p in pairs}
        self.greedy = False

    def largest(self, among, box_thr, mask_thr):
        import itertools

        from vlaforge.annotators.consensus import _agree

        for size in range(len(among), 1, -1):
            groups = [g for g in itertools.combinations(among, size)
                      if all(_agree(self.by_pair[(a.detector, b.detector)], box_thr, mask_thr)
                             for a, b in itertools.combinations(g, 2))]
            if groups:
                return list(max(groups, key=lambda g: sum(v.confidence for v in g)))
        return [max(among, key=lambda v: v.confidence)] if among else []


def many_detector_frames(detectors: int, images: int, seed: int = 0) -> list[GroundingFrame]:
    """Frames where `detectors` detectors box 3 objects with jitter (masks from their boxes), plus false positives."""
    from vlaforge.annotators.grounding_frame import Detection, DetectorRun, RunStatus

    rng = np.random.default_rng(seed)
    height, width = 180, 320
    frames = make_frames(images)
    for frame in frames:
        objects = {p: rng.uniform([10, 10, 60, 50], [200, 100, 300, 170]) for p in PHRASES}
        frame.runs = []
        for d in range(detectors):
            found = []
            for phrase, (x1, y1, x2, y2) in objects.items():
                box = np.array([x1, y1, max(x2, x1 + 20), max(y2, y1 + 20)]) + rng.normal(0, 2.0, 4)
                found.append(Detection(phrase, tuple(float(v) for v in box), float(rng.uniform(0.3, 0.9)),
                                       _box_mask(box, height, width)))
                if rng.random() < 0.25:  # a false positive somewhere else
                    fp = rng.uniform([0, 0, 40, 40], [260, 120, 320, 180])
                    found.append(Detection(phrase, tuple(float(v) for v in fp), float(rng.uniform(0.3, 0.6)),
                                           _box_mask(fp, height, width)))
            frame.runs.append(DetectorRun(f"det{d:02d}", "bench", "r", RunStatus.OK, found))
    return frames


def _box_mask(box, height: int, width: int) -> np.ndarray:
    mask = np.zeros((height, width), bool)
    x1, y1, x2, y2 = (int(round(v)) for v in box)
    mask[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = True
    return mask


def ring_frame(detectors: int) -> GroundingFrame:
    """One object boxed by `detectors` detectors that disagree on its extent: boxes on a ring around it, so every box
    joins the candidate (IoU > 0.3 with the fused box) but only neighbours on the ring agree (IoU >= 0.6): the
    agreeing group must be searched for, the case where trying every subset costs seconds."""
    from vlaforge.annotators.grounding_frame import Detection, DetectorRun, RunStatus

    (frame,) = make_frames(1)
    frame.phrases, frame.negatives = ["red mug"], []
    frame.runs = []
    for d in range(detectors):
        angle = 2 * np.pi * d / detectors
        x, y = 110 + 22 * np.cos(angle), 40 + 22 * np.sin(angle)
        box = (x, y, x + 100.0, y + 100.0)
        frame.runs.append(DetectorRun(f"det{d:02d}", "bench", "r", RunStatus.OK, [
            Detection("red mug", box, 0.5 + d / 100, _box_mask(box, 180, 320))]))
    return frame


def many_detectors_section(counts: list[int], images: int, repeats: int) -> list[list[str]]:
    from vlaforge.annotators import consensus

    config = ConsensusStage.Config()
    rows = []
    for scenario in ("agreeing", "ring"):
        for n in counts:
            frames = many_detector_frames(n, images) if scenario == "agreeing" else [ring_frame(n)]
            bounded = [decide_frame(f, config) for f in frames]
            candidates = sum(len(c) for c in bounded)
            bounded_s = timed(lambda: [decide_frame(f, config) for f in frames], repeats) / candidates
            original = consensus._GroupSearch
            consensus._GroupSearch = ExhaustiveGroups
            try:
                baseline = [decide_frame(f, config) for f in frames]
                exhaustive_s = timed(lambda: [decide_frame(f, config) for f in frames],
                                     repeats if n <= 12 else 1) / candidates
            finally:
                consensus._GroupSearch = original
            same = all((a.decision, a.agreeing) == (b.decision, b.agreeing)
                       for got, want in zip(bounded, baseline) for a, b in zip(got, want))
            rows.append([scenario, str(n), str(candidates), f"{1000 * bounded_s:.2f}", f"{1000 * exhaustive_s:.1f}",
                         f"{exhaustive_s / bounded_s:.1f}x", "yes" if same else "NO"])
    return rows


def _verdict(fraction: float) -> str:
    return f"< {CONSENSUS_TARGET:.0%}: {'met' if fraction < CONSENSUS_TARGET else 'NOT met'}"


def print_table(title: str, header: list[str], rows: list[list[str]], notes: list[str] | None = None) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    for cells in [header, *rows]:
        print("  " + "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)))
    for note in notes or []:
        print(f"  {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8 images, 3 repeats")
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch", type=int, default=4, help="images per forward pass")
    parser.add_argument("--boxes", type=int, default=20, help="boxes per model in the fusion comparison")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--full-size", action="store_true", help="also time a full-size Grounding DINO (slow on CPU)")
    parser.add_argument("--device", default="cpu", help="where the models run: cpu or cuda")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    parser.add_argument("--detectors", default="4,8,16", help="detector counts for the consensus scaling table")
    parser.add_argument("--only-consensus", action="store_true", help="only section 4 (no models)")
    args = parser.parse_args()
    images, repeats = (8, 3) if args.quick else (args.images, args.repeats)
    counts = [int(n) for n in args.detectors.split(",")]
    scaling = ("4. The consensus at many detectors (bounded group search vs every subset; same decisions)",
               ["frames", "detectors", "candidates", "bounded ms/candidate", "every-subset ms/candidate",
                "speed-up", "same decisions"])
    if args.only_consensus:
        print_table(*scaling, many_detectors_section(counts, min(images, 8), repeats))
        return
    import torch

    torch.set_num_threads(args.threads)
    frames = make_frames(images)
    runtime = {"device": args.device, "dtype": args.dtype}
    with tempfile.TemporaryDirectory() as work:
        rows, detected, seconds, boxes = detector_section(pathlib.Path(work), frames, repeats, args.batch, runtime)
        full_s = (full_size_seconds(pathlib.Path(work), frames, repeats, args.batch, runtime) if args.full_size
                  else None)
    if full_s is not None:
        rows.append(["grounding_dino full size (random weights)", f"{images / full_s:.2f}",
                     f"{1000 * full_s / images:.0f}"])
    print_table(f"1. Images/s per stage ({images} images 180x320, 3 phrases + 1 negative, {args.device} "
                f"{args.dtype}, {args.threads} CPU thread(s), batch {args.batch})", ["stage", "images/s", "ms/image"], rows,
                [f"{boxes} boxes from the three tiny detectors; SAM prompts one mask per box"])
    consensus = ConsensusStage.Config().build()
    config = consensus.config
    decide_s = timed(lambda: [decide_frame(f, config) for f in detected], repeats)
    audit_s = timed(lambda: (consensus(detected), consensus.take_tables()), repeats)  # it only sets candidates
    tiny_s = sum(s for name, s in seconds.items() if not name.startswith("sam"))
    table = []
    for label, spent in (("decisions", decide_s), ("decisions + audit rows", audit_s)):
        table.append([label, "3 tiny detectors", f"{spent / tiny_s:.1%}", _verdict(spent / tiny_s)])
        if full_s is not None:
            table.append([label, "3 x full-size Grounding DINO", f"{spent / (3 * full_s):.4%}",
                          _verdict(spent / (3 * full_s))])
    print_table("2. Consensus time as a fraction of detector time", ["consensus", "detectors", "fraction", "target"],
                table, [f"{sum(len(f.candidates) for f in detected)} candidates on {images} images: decisions "
                        f"{1000 * decide_s / images:.2f} ms/image, with audit rows {1000 * audit_s / images:.2f} "
                        f"ms/image (the tiny SAM's masks are noise: many runs to encode)"])
    print_table("3. Weighted box fusion: ours vs ensemble-boxes (same inputs, same answers)",
                ["inputs", "ours ms", "ensemble-boxes ms", "ratio (theirs/ours)"], fusion_section(args.boxes, repeats))
    print_table(*scaling, many_detectors_section(counts, min(images, 8), repeats))


if __name__ == "__main__":
    main()
