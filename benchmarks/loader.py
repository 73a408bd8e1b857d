"""Corpus loader speed and memory: our loader against bare webdataset and against LeRobot's own LeRobotDataset.

    python benchmarks/loader.py --lerobot-python /work/lerobot-venv/bin/python          # about 6 minutes
    python benchmarks/loader.py --quick --lerobot-python /work/lerobot-venv/bin/python  # about 2 minutes

For each variant (one 240x320 camera; three 240x320 cameras; one 480x640 camera) the script writes the same
episodes as a LeRobot v3.0 dataset with AV1 videos (`datasets/synth/lerobot.py`), re-encodes each video the way
LeRobot's recorder does (libsvtav1, crf 30, a keyframe every 2 frames, which is what makes its random access
cheap), ingests the dataset into our shards (`pipelines.job`, JPEG quality 90 at the native size, no idle
trimming, so both sides hold the same frames) and builds a one-component corpus manifest. Then, in one run:

1. Our loader, `CorpusLoader` with `num_workers=0` (the whole pipeline in this process: corpus stream, JPEG decode
   with simplejpeg at the native size, state/action normalization and padding to 32, the 30-step action chunk,
   collation into batches of 32), against bare `webdataset` reading the same shards in order and doing the same
   decoding (`decode_frame`, `np.load(allow_pickle=False)`, JSON meta, the same normalization and padding) with its
   own `.batched(32)`. Alternately, `--repeats` times; medians. Target: ours / webdataset >= 1.2 (issue 15's aim;
   JPEG decode, the same work on both sides, bounds the ratio where frames are large).
2. The same loader against `LeRobotDataset` on the same episodes, read at random (a permutation of all frames), with
   its torchcodec backend and with its pyav backend, in the separate LeRobot venv (`--lerobot-python`;
   `benchmarks/loader_lerobot.py` is its side). LeRobot hands out float32 CHW frames and one action; ours uint8 HWC
   frames, a normalized state and a 30-step normalized action chunk. Video decoders run several threads, so the
   per-core rate is samples per CPU second (all threads). Targets per core: >= 1.8x torchcodec, >= 4x pyav.
3. Memory: the loader with 2 DataLoader workers over `--memory-samples` samples (epochs of the 240x320 data, over
   and over); peak memory of the trainer process plus its workers (PSS, so pages the forked workers share count
   once) over the first tenth against over the whole run. Target: within 10%.

These machines are shared and noisy: compare the ratios, measured side by side in one run, not absolute numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import itertools
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from statistics import median
from typing import Any

import av
import numpy as np
import psutil
import webdataset as wds

from vlaforge.datasets.lerobot import camera_name
from vlaforge.datasets.synth.lerobot import write_lerobot_dataset
from vlaforge.pipelines.corpus_manifest import ComponentKind, CorpusConfig, CorpusInput, build_corpus, write_corpus
from vlaforge.pipelines.ingest_recipe import IngestOptions, build_ingest_job
from vlaforge.pipelines.job import run_job
from vlaforge.pipelines.runners import LocalRunner
from vlaforge.training.data.collate import Batcher
from vlaforge.training.data.corpus_loader import CorpusLoader
from vlaforge.training.data.normalization import EPSILON, MODEL_WIDTH
from vlaforge.training.data.robot_transform import RobotSampleTransform, decode_frame

BATCH = 32
CHUNK = 30
FPS = 30
WDS_TARGET = 1.2
TORCHCODEC_TARGET = 1.8
PYAV_TARGET = 4.0
MEMORY_TARGET = 1.10
LEROBOT_ENCODER = {"crf": "30", "g": "2"}
"""LeRobot's `encode_video_frames` defaults for libsvtav1 (yuv420p)."""


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    cameras: tuple[str, ...]
    """LeRobot camera names (MolmoAct's), which the ingest maps to exterior_1, exterior_2, wrist."""
    size: tuple[int, int]
    episodes: int
    steps: int

    @property
    def samples(self) -> int:
        return self.episodes * self.steps

    @property
    def canonical(self) -> tuple[str, ...]:
        return tuple(camera_name(f"observation.images.{camera}") for camera in self.cameras)


def variants(quick: bool) -> list[Variant]:
    episodes, steps = (8, 100) if quick else (20, 150)
    return [
        Variant("1 cam 240x320", ("first_view",), (240, 320), episodes, steps),
        Variant("3 cams 240x320", ("first_view", "second_view", "wrist_image"), (240, 320), episodes, steps),
        Variant("1 cam 480x640", ("first_view",), (480, 640), episodes, steps),
    ]


@dataclasses.dataclass(frozen=True)
class Data:
    lerobot: pathlib.Path
    corpus: pathlib.Path
    shards: list[str]
    stats: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Timing:
    samples: int
    wall: float
    cpu: float

    @property
    def rate(self) -> float:
        return self.samples / self.wall

    @property
    def per_cpu(self) -> float:
        return self.samples / self.cpu


# Data ---------------------------------------------------------------------------------------------------------


def reencode_like_lerobot(path: pathlib.Path) -> None:
    """Rewrite an mp4 with the same frames and timestamps, encoded with LeRobot's recorder settings."""
    with av.open(str(path)) as source:
        stream = source.streams.video[0]
        rate = int(stream.average_rate)
        frames = [frame.to_ndarray(format="rgb24") for frame in source.decode(stream)]
    temporary = path.with_suffix(".tmp.mp4")
    with av.open(str(temporary), "w") as target:
        out = target.add_stream("libsvtav1", rate=rate)
        out.height, out.width = frames[0].shape[:2]
        out.pix_fmt = "yuv420p"
        out.options = dict(LEROBOT_ENCODER)
        for index, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index  # the synthetic writer's frame i sits at i / fps, episodes end to end
            target.mux(out.encode(frame))
        target.mux(out.encode())
    temporary.replace(path)


def prepare(root: pathlib.Path, variant: Variant) -> Data:
    """The LeRobot dataset, our shards of it, and a corpus manifest over the shards."""
    lerobot = write_lerobot_dataset(root / "lerobot", n_episodes=variant.episodes, min_steps=variant.steps,
                                    max_steps=variant.steps, fps=FPS, cameras=variant.cameras,
                                    image_size=variant.size, codec="av1")
    for video in sorted(lerobot.glob("videos/**/*.mp4")):
        reencode_like_lerobot(video)
    shards = root / "shards"
    options = IngestOptions(validation_fraction=0.0, trim_idle=False, min_steps=1)
    run_job(build_ingest_job("lerobot", str(lerobot), str(shards), options), LocalRunner())
    corpus = root / "corpus.json"
    write_corpus(build_corpus([CorpusInput(path=shards, kind=ComponentKind.ROBOT, name="bench")], corpus,
                              CorpusConfig()), corpus)
    urls = sorted(str(path) for path in (shards / "train").glob("*.tar"))
    return Data(lerobot, corpus, urls, json.loads((shards / "stats.json").read_text()))


# Measurements -------------------------------------------------------------------------------------------------


def loader_config(data: Data, variant: Variant, workers: int) -> CorpusLoader.Config:
    robot = RobotSampleTransform.Config(cameras=variant.canonical, image_size=variant.size, chunk_len=CHUNK)
    return CorpusLoader.Config(corpus_url=str(data.corpus), robot=robot, batch=Batcher.Config(batch_size=BATCH),
                               num_workers=workers)


def ours(data: Data, variant: Variant, samples: int) -> Timing:
    """Our loader in this process, until `samples` samples have come out in batches."""
    wall, cpu = time.perf_counter(), time.process_time()
    loader = CorpusLoader(loader_config(data, variant, workers=0))
    count = 0
    for batch in loader:
        count += len(batch)
        if count >= samples:
            break
    return Timing(count, time.perf_counter() - wall, time.process_time() - cpu)


def bare_webdataset(data: Data, variant: Variant, samples: int) -> Timing:
    """webdataset over the same shards, with the same decoding, normalization, padding and batch size."""
    (embodiment,) = data.stats["embodiments"].values()
    mean = {f: np.asarray(embodiment[f]["mean"], np.float32) for f in ("state", "action")}
    scale = {f: np.asarray(embodiment[f]["std"], np.float32) + np.float32(EPSILON) for f in ("state", "action")}
    members = [f"{camera}.jpg" for camera in variant.canonical]

    def decode(sample: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, int, str]:
        images = np.stack([decode_frame(sample[member], variant.size) for member in members])
        meta = json.loads(sample["meta.json"])
        state_raw = np.load(io.BytesIO(sample["state.npy"]), allow_pickle=False)
        chunk = np.load(io.BytesIO(sample["action.npy"]), allow_pickle=False)[:CHUNK]
        valid = min(meta["valid_len"], CHUNK)
        state = np.zeros(MODEL_WIDTH, np.float32)
        state[:len(state_raw)] = (state_raw - mean["state"]) / scale["state"]
        actions = np.zeros((CHUNK, MODEL_WIDTH), np.float32)
        actions[:valid, :chunk.shape[1]] = (chunk[:valid] - mean["action"]) / scale["action"]
        return images, state, actions, valid, meta["instruction"]

    wall, cpu = time.perf_counter(), time.process_time()
    pipeline = wds.WebDataset(data.shards, shardshuffle=False, empty_check=False).map(decode).batched(BATCH)
    count = 0
    for batch in itertools.islice(itertools.chain.from_iterable(itertools.repeat(pipeline)), samples // BATCH):
        count += len(batch[0])
    return Timing(count, time.perf_counter() - wall, time.process_time() - cpu)


def lerobot(python: str, data: Data, backend: str, samples: int) -> Timing | str:
    """LeRobotDataset in the LeRobot venv; the error's last line when it cannot run."""
    script = pathlib.Path(__file__).with_name("loader_lerobot.py")
    command = [python, str(script), "--root", str(data.lerobot), "--backend", backend, "--samples", str(samples)]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1")
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    if result.returncode != 0:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        return lines[-1] if lines else f"exit status {result.returncode}"
    report = json.loads(result.stdout.strip().splitlines()[-1])
    return Timing(report["samples"], report["wall_s"], report["cpu_s"])


def tree_pss() -> int:
    """Proportional set size in bytes of this process and its children (the DataLoader workers): pages shared
    after the fork count once in all, not once per process as RSS would count them."""
    process = psutil.Process()
    total = process.memory_full_info().pss
    for child in process.children(recursive=True):
        try:
            total += child.memory_full_info().pss
        except psutil.NoSuchProcess:
            continue
    return total


def memory(data: Data, variant: Variant, samples: int) -> dict[str, float]:
    """Peak memory (PSS of this process + 2 workers, sampled every 10 batches) over the first tenth of `samples`
    and over all of them."""
    loader = CorpusLoader(loader_config(data, variant, workers=2))
    count, early, peak = 0, 0, 0
    wall = time.perf_counter()
    for index, batch in enumerate(loader):
        count += len(batch)
        if index % 10 == 0:
            peak = max(peak, tree_pss())
            if count <= samples // 10:
                early = peak
        if count >= samples:
            break
    return {"samples": count, "early": early, "peak": peak, "rate": count / (time.perf_counter() - wall)}


# Report -------------------------------------------------------------------------------------------------------


def row(cells: list[str], widths: list[int]) -> str:
    return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths)) + " |"


def table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = [row(header, widths), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    return "\n".join(lines + [row(r, widths) for r in rows])


def comparison_rows(variant: Variant, ours_t: Timing, baselines: dict[str, Timing | str]) -> list[list[str]]:
    targets = {"webdataset": (WDS_TARGET, "wall"), "LeRobot torchcodec": (TORCHCODEC_TARGET, "per core"),
               "LeRobot pyav": (PYAV_TARGET, "per core")}
    rows = []
    for name, base in baselines.items():
        target, basis = targets[name]
        if isinstance(base, str):
            rows.append([variant.name, name, "-", f"{ours_t.rate:,.0f}", "-", "-", f"{ours_t.per_cpu:,.0f}", "-",
                         f"skipped: {base[:70]}"])
            continue
        ratio = ours_t.rate / base.rate if basis == "wall" else ours_t.per_cpu / base.per_cpu
        verdict = "ok" if ratio >= target else "MISSED"
        rows.append([variant.name, name, f"{base.rate:,.0f}", f"{ours_t.rate:,.0f}", f"{ours_t.rate / base.rate:.2f}",
                     f"{base.per_cpu:,.0f}", f"{ours_t.per_cpu:,.0f}", f"{ours_t.per_cpu / base.per_cpu:.2f}",
                     f">= {target} {basis}: {verdict}"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller data and fewer samples")
    parser.add_argument("--repeats", type=int, default=3, help="alternating runs of ours and webdataset (median)")
    parser.add_argument("--lerobot-python", help="python of a venv with lerobot; without it LeRobot is skipped")
    parser.add_argument("--memory-samples", type=int, help="samples of the memory run (default 100,000; quick 20,000)")
    parser.add_argument("--workdir", help="where to write the data (default: a temporary directory)")
    args = parser.parse_args()
    memory_samples = args.memory_samples or (20_000 if args.quick else 100_000)
    python = args.lerobot_python
    if python and not pathlib.Path(python).exists():
        print(f"--lerobot-python {python} does not exist: LeRobot is skipped", file=sys.stderr)
        python = None
    elif not python:
        print("no --lerobot-python given: LeRobot is skipped (make a venv with lerobot, see benchmarks/"
              "loader_lerobot.py)", file=sys.stderr)

    rows, memory_result = [], None
    with tempfile.TemporaryDirectory(dir=args.workdir) as work:
        for number, variant in enumerate(variants(args.quick)):
            print(f"[{variant.name}] writing {variant.samples} steps as LeRobot v3.0 (AV1) and ingesting them",
                  file=sys.stderr)
            data = prepare(pathlib.Path(work) / f"v{number}", variant)
            samples = variant.samples
            ours(data, variant, BATCH)  # warm-up: page cache, imports
            mine, base = [], []
            for _ in range(args.repeats):
                base.append(bare_webdataset(data, variant, samples))
                mine.append(ours(data, variant, samples))
            ours_t = Timing(samples, median(t.wall for t in mine), median(t.cpu for t in mine))
            baselines: dict[str, Timing | str] = {
                "webdataset": Timing(samples, median(t.wall for t in base), median(t.cpu for t in base))}
            for backend in ("torchcodec", "pyav"):
                name = f"LeRobot {backend}"
                baselines[name] = lerobot(python, data, backend, samples) if python else "no --lerobot-python"
            rows.extend(comparison_rows(variant, ours_t, baselines))
            if number == 0:
                print(f"[memory] {memory_samples:,} samples with 2 workers", file=sys.stderr)
                memory_result = memory(data, variant, memory_samples)

    print(f"\nSamples/s, one process, batches of {BATCH}, actions chunked to {CHUNK} (median of {args.repeats} for "
          "ours and webdataset)\n")
    header = ["variant", "baseline", "baseline/s", "ours/s", "ratio", "baseline/CPU-s", "ours/CPU-s", "ratio/core",
              "target"]
    print(table(header, rows))
    if memory_result:
        ratio = memory_result["peak"] / memory_result["early"]
        tenth = memory_result["samples"] // 10
        print(f"\nPeak memory (PSS), trainer + 2 workers: {memory_result['early'] / 2**20:,.0f} MiB over the first "
              f"{tenth:,} samples, {memory_result['peak'] / 2**20:,.0f} MiB over {memory_result['samples']:,}: ratio "
              f"{ratio:.3f} (target <= {MEMORY_TARGET}: {'ok' if ratio <= MEMORY_TARGET else 'MISSED'}); "
              f"{memory_result['rate']:,.0f} samples/s with 2 workers")


if __name__ == "__main__":
    main()
