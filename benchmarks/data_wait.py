"""Does the loader keep up? The share of a training step spent waiting for data, per phase, with 1 and 2 loader
workers, and what one batch costs from a worker against in the trainer's process: robot pixel values made on the
training device from uint8 frames (`robot_pixels="device"`, now) side by side with the processor's float32 patches
made in the worker (`"worker"`, before).

    python benchmarks/data_wait.py            # about 8 minutes on a quiet machine
    python benchmarks/data_wait.py --quick    # about 3 minutes

Data and model: the tiny recipes (`<phase>_tiny`: 2-layer DiT, 8-action chunks cut to 4, 64x64 frames, micro batch
4, every camera) on the tiny random-weight Qwen3-VL, over the small corpus written with 128x128 frames (decoded at 1/2
DCT scale to 64x64, as a real 224x224 input is from larger frames); fp32, one rank, in this process.

1. Data-wait share: `Trainer` on DeepSpeed ZeRO-2 with the real `CorpusLoader` (`train_main.run`), per phase and
   number of workers; `data_wait_share` of `train_log.jsonl` (seconds in `next(loader)` over the step's seconds,
   the trainer's own measurement) and the step time, median over the steps after warm-up. Target: under 5% for every
   phase with 1 and with 2 workers.
2. Batch cost: `CorpusLoader` alone (step 1's kinds: robot and VL), batches drawn as fast as they come and made
   model-ready (`to_device` on the CPU: where the device path makes the pixel values), in-process (`num_workers=0`)
   against one worker; the four loaders take turns in blocks; ms per batch (median) and a batch's pickled size (what
   crosses the process boundary). Target: a worker batch no slower than an in-process one.

The trainer runs with one intra-op thread by default (`--threads`), leaving this 2-core machine's other core to the
loader workers, as a GPU trainer leaves the CPU's cores to them.

These machines are shared and noisy: compare the ratios, measured side by side in one run, not absolute numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import os
import pathlib
import pickle
import tempfile
import time
from statistics import median
from typing import Any

import torch

from vlaforge.flows.sample_data.small_corpus import CHUNK, write_small_corpus
from vlaforge.flows.sample_data.tiny_vlm import write_tiny_qwen3_vl
from vlaforge.training import recipes, train_main
from vlaforge.training.data.corpus_loader import CorpusLoader, RobotPixels
from vlaforge.training.trainer import TRAIN_LOG
from vlaforge.training.trainer_config import TrainerConfig

PHASES = ("step1_choice", "step2_dit", "posttrain_async")
PIXELS = (RobotPixels.DEVICE, RobotPixels.WORKER)
WAIT_TARGET = 0.05


BLOCK = 15
"""Batches a loader hands out in one turn of measurement 2."""


@dataclasses.dataclass(frozen=True)
class Sizes:
    warmup: int
    steps: int
    rounds: int


QUICK = Sizes(warmup=3, steps=8, rounds=2)
DEFAULT = Sizes(warmup=4, steps=16, rounds=5)


def config(phase: str, vlm: pathlib.Path, corpus: pathlib.Path, output: pathlib.Path, *, steps: int, workers: int,
           pixels: RobotPixels) -> TrainerConfig:
    where = recipes.RunLocation(corpus=str(corpus), output=str(output), vlm=str(vlm))
    return recipes.build(f"{phase}_tiny", where, {
        "chunk_len": CHUNK, "max_steps": steps, "precision": "fp32", "loader.num_workers": workers,
        "loader.robot_pixels": pixels.value, "save_every": 10**6, "resume": False, "export": False,
        "tensorboard": False, "progress": False})


def data_wait(vlm: pathlib.Path, corpus: pathlib.Path, work: pathlib.Path, sizes: Sizes,
              phases: tuple[str, ...] = PHASES) -> list[dict[str, Any]]:
    """Measurement 1: one training run per (phase, workers, pixels)."""
    rows = []
    for phase, workers, pixels in itertools.product(phases, (1, 2), PIXELS):
        output = work / f"{phase}-{workers}-{pixels.value}"
        train_main.run(config(phase, vlm, corpus, output, steps=sizes.warmup + sizes.steps, workers=workers,
                              pixels=pixels), single_process=True)
        timed = [json.loads(line) for line in (output / TRAIN_LOG).read_text().splitlines()][sizes.warmup:]
        rows.append({"phase": phase, "workers": workers, "pixels": pixels.value,
                     "share": median(r["data_wait_share"] for r in timed), "step": median(r["seconds"] for r in timed),
                     "wait": median(r["data_wait"] for r in timed)})
        print(f"  {phase} {workers} worker(s) pixels {pixels.value}: wait {rows[-1]['share']:.1%} of "
              f"{rows[-1]['step'] * 1000:.0f} ms", flush=True)
    return rows


def batch_cost(vlm: pathlib.Path, corpus: pathlib.Path, work: pathlib.Path, sizes: Sizes) -> list[dict[str, Any]]:
    """Measurement 2: ms per model-ready batch, in-process and from one worker, and a batch's pickled size. The four
    loaders take turns in blocks of `BLOCK` batches, `sizes.rounds` times; the first 3 of a block (which an idle
    worker may have prefetched) are not timed."""
    loaders, sizes_of, times = {}, {}, {}
    for pixels, workers in itertools.product(PIXELS, (0, 1)):
        loader_config = config("step1_choice", vlm, corpus, work / "loader", steps=1, workers=workers,
                               pixels=pixels).loader
        loader = CorpusLoader(loader_config)
        loaders[pixels, workers] = (loader, iter(loader))
        times[pixels, workers] = []
    for _ in range(sizes.rounds):
        for key, (loader, batches) in loaders.items():
            for index in range(BLOCK):
                started = time.perf_counter()
                batch = next(batches)
                loader.to_device(batch, "cpu")
                if index >= 3:
                    times[key].append(time.perf_counter() - started)
                sizes_of.setdefault(key, len(pickle.dumps(batch)))
    for loader, _ in loaders.values():
        loader.close()
    return [{"pixels": pixels.value, "workers": workers, "ms": median(times[pixels, workers]) * 1000,
             "bytes": sizes_of[pixels, workers]} for pixels, workers in loaders]


def print_tables(waits: list[dict], costs: list[dict], sizes: Sizes, phases: tuple[str, ...] = PHASES) -> None:
    print(f"\n1. Data wait as a share of the step, Trainer (ZeRO-2, 1 rank, in-process, real loader), tiny recipes, "
          f"{torch.get_num_threads()} threads; median of {sizes.steps} steps after {sizes.warmup} warm-up")
    print(f"  {'phase':<16} {'workers':>7} {'wait (device px)':>17} {'step ms':>8} {'wait (worker px)':>17} "
          f"{'step ms':>8} {'target <5%':>11}")
    for phase, workers in itertools.product(phases, (1, 2)):
        device, worker = (next(r for r in waits if (r["phase"], r["workers"], r["pixels"]) == (phase, workers, p.value))
                          for p in PIXELS)
        verdict = "ok" if device["share"] < WAIT_TARGET else "MISSED"
        print(f"  {phase:<16} {workers:>7} {device['share']:>17.1%} {device['step'] * 1000:>8.0f} "
              f"{worker['share']:>17.1%} {worker['step'] * 1000:>8.0f} {verdict:>11}")
    print("\n2. One model-ready batch (step 1: robot + VL), drawn as fast as it comes, then to_device on the CPU; "
          f"median ms over {sizes.rounds} turns of {BLOCK - 3} timed batches per loader, the four loaders in turn")
    print(f"  {'pixels made':<12} {'in-process ms':>14} {'1 worker ms':>12} {'worker/in-process':>18} "
          f"{'batch KiB':>10} {'target <=1':>11}")
    for pixels in PIXELS:
        inline, worker = (next(r for r in costs if (r["pixels"], r["workers"]) == (pixels.value, n)) for n in (0, 1))
        ratio = worker["ms"] / inline["ms"]
        print(f"  {'on device' if pixels is RobotPixels.DEVICE else 'in worker':<12} {inline['ms']:>14.1f} "
              f"{worker['ms']:>12.1f} {ratio:>18.2f} {worker['bytes'] / 1024:>10.0f} "
              f"{'ok' if ratio <= 1 else 'MISSED':>11}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps and batches")
    parser.add_argument("--threads", type=int, default=1,
                        help="the trainer's intra-op threads (default 1, so the loader workers have a core of this "
                             "2-core machine; a GPU trainer leaves the CPU to them)")
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=PHASES, help="the phases of measurement 1")
    args = parser.parse_args()
    phases = tuple(args.phases)
    sizes = QUICK if args.quick else DEFAULT
    torch.set_num_threads(args.threads)
    os.environ["DS_ACCELERATOR"] = "cpu"
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vlaforge-data-wait-") as directory:
        work = pathlib.Path(directory)
        vlm = write_tiny_qwen3_vl(work / "tiny-qwen3-vl")
        corpus = write_small_corpus(work / "corpus", image_size=(128, 128))
        print("2. batch cost", flush=True)
        costs = batch_cost(vlm, corpus, work, sizes)
        print("1. data wait", flush=True)
        waits = data_wait(vlm, corpus, work, sizes, phases)
    print_tables(waits, costs, sizes, phases)
    print(f"\nwall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
