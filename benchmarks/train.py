"""Trainer speed: the DeepSpeed ZeRO-2 `Trainer` against a plain PyTorch loop, and 2 ranks against 1, on this CPU.

    python benchmarks/train.py            # about 4-5 minutes on a quiet machine
    python benchmarks/train.py --quick    # about 1 minute

Data and model: the tiny recipes (`training/recipes.py`: `<phase>_tiny`, 4-action chunks) on the tiny random-weight
Qwen3-VL that `flows/sample_data/tiny_vlm.py` saves for `from_pretrained`, over the test suite's small corpus
(`flows/sample_data/small_corpus.py`): two robot datasets and a VL one. Every run trains the same config, built by
`recipes.build` with the `--set` changes `SETTINGS` lists (what `vlaforge train --recipe ... --set ...` builds;
`train_argv` gives the same as flags): one 64x64 camera, micro batch 4 per rank, gradient accumulation 1, lr 1e-4,
clipping 1.0, one noise draw per VLM pass, fp32, VL co-training as the phase has it (step 1 only).

1. Optimizer-step time, per phase (step1_choice, step2_dit, posttrain_async): `Trainer` on DeepSpeed ZeRO-2, and on
   ZeRO stage 0, as a 1-rank job in this process (`train_main.run(config, single_process=True)`, what `vlaforge
   train --nproc 1` does) against a plain loop: the same `PhaseModel` built from the same seed, `torch.optim.AdamW`
   with the same settings, `clip_grad_norm_` to the same norm, the same per-micro-batch reseeding. The loader is OUT
   of all three: the batches are collated once by a real `CorpusLoader`, made model-ready (`to_device`) and replayed
   (the trainer's loader is swapped for a replay inside this process only). The time is CPU time of the step's
   forward, backward and optimizer step (the trainer's `_micro_step`: `engine.step()` with its gradient norm and
   flat-buffer copies; the plain loop's same work), with one intra-op thread by default (`--threads`): on a shared,
   loaded machine one thread's CPU time is what stays comparable, where wall time swings with the neighbours. The
   first 3 steps of each run (2 with `--quick`) are warm-up, not timed; the sides alternate 6 times (once with
   `--quick`) and the table shows the median step over all timed steps. Ratio = plain / DeepSpeed (below 1: what
   DeepSpeed's wrapper costs). "max |d loss|" compares the losses step by step: the same work gives the same
   losses, to fp32 rounding (ZeRO-2 sums gradients in flat buffers).
2. Scaling: `vlaforge train --nproc 2` (torchrun, 2 ranks over gloo, ZeRO-2) against `vlaforge train --nproc 1`, both
   as fresh processes with the REAL loader in (one DataLoader worker per rank: a batch must be decoded to train),
   the same per-rank micro batch (so 2 ranks train twice the samples per step). Steps/s and samples/s from the median
   of rank 0's logged step time after warm-up; launch to first step is the wall time from starting the command to
   the start of step 1 (interpreter and imports, torchrun, process-group and DeepSpeed init, loader start). torchrun
   gives each rank 1 intra-op thread (OMP_NUM_THREADS=1); the 1-rank run keeps torch's default (2 on this machine).
   DeepSpeed JIT-builds its shared-memory comm op the first time on a machine (cached under TORCH_EXTENSIONS_DIR,
   loaded from there by every later process): the table says whether the cache held it when the benchmark started,
   and by default the first 2-rank launch gets an empty cache so it pays the build (`--no-cold-jit`: it does not;
   `--quick` leaves it out unless `--cold-jit`). The second 2-rank launch is the warm one.
3. Precision: `Trainer` in bf16 against fp32 (DeepSpeed's bf16 mode: bf16 weights and activations, fp32 master
   weights), step1_choice, loader out and CPU time as in 1. Ratio = fp32 / bf16.

Every child process gets DS_ACCELERATOR=cpu. These machines are shared and noisy: compare the ratios, measured side
by side in one run, not absolute numbers.
"""

from __future__ import annotations

import argparse
import dataclasses
import glob
import itertools
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from statistics import median
from typing import Any
from unittest import mock

import numpy as np
import torch

from vlaforge.flows.sample_data.small_corpus import CHUNK, write_small_corpus
from vlaforge.flows.sample_data.tiny_vlm import write_tiny_qwen3_vl
from vlaforge.training import recipes, train_main
from vlaforge.training import trainer as trainer_module
from vlaforge.training.data.collate import CorpusBatch
from vlaforge.training.data.corpus_loader import CorpusLoader
from vlaforge.training.model.vla import VLAModel
from vlaforge.training.phase_model import LOSS, PhaseModel
from vlaforge.training.trainer import TRAIN_LOG
from vlaforge.training.trainer_config import TrainerConfig

REPO = pathlib.Path(__file__).resolve().parents[1]
PHASES = ("step1_choice", "step2_dit", "posttrain_async")
MICRO_BATCH = 4
DEVICE_ENV = {"DS_ACCELERATOR": "cpu"}
SHM_OP = "deepspeed_shm_comm"


@dataclasses.dataclass(frozen=True)
class Sizes:
    warmup: int
    """Steps at the start of every run that are not timed."""
    steps: int
    """Timed steps per run."""
    repeats: int
    """Alternations of the two sides in measurements 1 and 3."""
    scaling_steps: int
    """Timed steps of each `vlaforge train` run in measurement 2."""
    cold_jit: bool
    """Give the first 2-rank launch an empty TORCH_EXTENSIONS_DIR, so it pays DeepSpeed's JIT comm op build."""


QUICK = Sizes(warmup=2, steps=6, repeats=1, scaling_steps=6, cold_jit=False)
DEFAULT = Sizes(warmup=3, steps=12, repeats=6, scaling_steps=20, cold_jit=True)


def write_inputs(root: pathlib.Path) -> tuple[pathlib.Path, pathlib.Path]:
    """The tiny Qwen3-VL directory and the `small_corpus` fixture's corpus; (vlm_dir, corpus.json)."""
    return write_tiny_qwen3_vl(root / "tiny-qwen3-vl"), write_small_corpus(root / "corpus")


def settings(steps: int, precision: str = "fp32") -> dict[str, Any]:
    """The `--set` changes on top of a tiny recipe: one run as this benchmark times it."""
    return {"chunk_len": CHUNK, "max_steps": steps, "micro_batch_size": MICRO_BATCH,
            "loader.robot.image_size": [64, 64],
            "loader.robot.cameras": ["exterior_1"], "loader.num_workers": 1, "precision": precision, "lr": 1e-4,
            "save_every": 10**6, "resume": False, "export": False, "model.flow.training_repeat": 1, "freeze": [],
            "tensorboard": False, "progress": False}


def train_argv(phase: str, vlm: pathlib.Path, corpus: pathlib.Path, output: pathlib.Path, *, steps: int,
               nproc: int = 1, precision: str = "fp32") -> list[str]:
    """`vlaforge train` arguments for one run: the tiny recipe, no checkpoint before the last step, no export."""
    sets = [item for key, value in settings(steps, precision).items()
            for item in ("--set", f"{key}={json.dumps(value)}")]
    return ["train", "--recipe", f"{phase}_tiny", "--corpus", str(corpus), "--vlm", str(vlm), "--output", str(output),
            "--nproc", str(nproc), *sets]


def trainer_config(phase: str, vlm: pathlib.Path, corpus: pathlib.Path, output: pathlib.Path, *,
                   steps: int) -> TrainerConfig:
    """The TrainerConfig `vlaforge train` builds from `train_argv(phase, vlm, corpus, output, steps=steps)`: the same
    recipe and changes, through the function the command calls (`recipes.build`)."""
    where = recipes.RunLocation(corpus=str(corpus), output=str(output), vlm=str(vlm))
    return recipes.build(f"{phase}_tiny", where, settings(steps))


def collate_batches(config: TrainerConfig, count: int) -> list[CorpusBatch]:
    """`count` batches from a real CorpusLoader (in this process), exactly as rank 0 of a 1-rank run gets them, made
    model-ready (pixel values made, on the CPU)."""
    loader_config = dataclasses.replace(config.loader, num_workers=0)
    with CorpusLoader(loader_config) as loader:
        return [loader.to_device(batch, "cpu") for batch in itertools.islice(loader, count)]


class ReplayLoader:
    """Stands in for `CorpusLoader` inside `Trainer`: replays pre-collated batches, so no decoding is timed."""

    def __init__(self, batches: Sequence[CorpusBatch]) -> None:
        self.batches = batches

    def __enter__(self) -> "ReplayLoader":
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def __iter__(self) -> Iterator[CorpusBatch]:
        return iter(self.batches)

    def state_dict(self) -> dict[str, Any]:
        return {"replayed": len(self.batches)}  # the trainer's final checkpoint writes it

    @staticmethod
    def to_device(batch: CorpusBatch, device: Any) -> CorpusBatch:
        return batch  # replayed batches are model-ready on the CPU already


def deepspeed_run(config: TrainerConfig, batches: Sequence[CorpusBatch]) -> tuple[list[float], list[float]]:
    """The trainer in this process (1-rank DeepSpeed) on `batches`: (CPU seconds of each step's forward, backward
    and `engine.step()`, its losses)."""
    replay = lambda *args, **kwargs: ReplayLoader(batches)  # noqa: E731 - CorpusLoader(config, rank=, world_size=)
    cpu: list[float] = []
    micro_step = trainer_module.Trainer._micro_step

    def timed(self, *args, **kwargs):  # gradient accumulation 1: one micro step is one optimizer step
        started = time.process_time()
        micro_step(self, *args, **kwargs)
        cpu.append(time.process_time() - started)

    with mock.patch.object(trainer_module, "CorpusLoader", replay), \
            mock.patch.object(trainer_module.Trainer, "_micro_step", timed):
        records = train_main.run(config, single_process=True)
    return cpu, [r[LOSS] for r in records]


def plain_run(config: TrainerConfig, batches: Sequence[CorpusBatch]) -> tuple[list[float], list[float]]:
    """What the trainer does, in plain PyTorch: the same module, optimizer, clipping and seeds; (CPU seconds per
    step, losses)."""
    torch.manual_seed(config.seed)  # as Trainer.setup: the fresh DiT / Choice Policies weights
    module = PhaseModel(VLAModel.from_vlm_pretrained(config.vlm_dir, config.model), config.phase, config.choice,
                        config.vl_loss_weight)
    parameters = module.trainable_parameters()
    optimizer = torch.optim.AdamW(parameters, lr=config.lr, weight_decay=config.weight_decay, betas=config.betas)
    module.train()
    seconds, losses = [], []
    for step, batch in enumerate(batches[:config.max_steps], 1):
        started = time.process_time()
        losses.append(plain_step(config, module, parameters, optimizer, batch, step))
        seconds.append(time.process_time() - started)
    return seconds, losses


def plain_step(config: TrainerConfig, module: PhaseModel, parameters, optimizer, batch: CorpusBatch,
               step: int) -> float:
    """One optimizer step of one micro batch (gradient accumulation 1), seeded as `Trainer._micro_step` seeds it."""
    seed = np.random.SeedSequence([config.seed, 0, step, 0]).generate_state(1)[0]
    torch.manual_seed(int(seed))
    robot = batch.robot
    vl_inputs = None if batch.vl is None else dict(batch.vl.inputs)
    vl_labels = None if batch.vl is None else batch.vl.labels
    losses = module(robot, vl_inputs, vl_labels)
    losses[LOSS].backward()
    if config.grad_clip:
        torch.nn.utils.clip_grad_norm_(parameters, config.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    values = {name: float(value.detach()) for name, value in losses.items()}
    return values[LOSS]


def side_by_side(config: TrainerConfig, batches: Sequence[CorpusBatch], sizes: Sizes, first, second) -> dict:
    """Alternate two runs (`first`, `second`: config, batches -> seconds, losses) `sizes.repeats` times; the timed
    steps of each (warm-up dropped) and the largest loss difference between them at any step."""
    timed: dict[str, list[float]] = {"first": [], "second": []}
    gap = 0.0
    for _ in range(sizes.repeats):
        one, one_losses = first(config, batches)
        two, two_losses = second(config, batches)
        timed["first"] += one[sizes.warmup:]
        timed["second"] += two[sizes.warmup:]
        gap = max(gap, max(abs(a - b) for a, b in zip(one_losses, two_losses, strict=True)))
    return {"first": median(timed["first"]), "second": median(timed["second"]), "gap": gap,
            "timed": len(timed["first"])}


def wrapper_cost(vlm: pathlib.Path, corpus: pathlib.Path, work: pathlib.Path, sizes: Sizes) -> list[dict]:
    """Measurement 1: per phase, DeepSpeed's step (ZeRO-2, and ZeRO stage 0) against the plain loop's on the same
    replayed batches."""
    rows = []
    total = sizes.warmup + sizes.steps
    for phase in PHASES:
        config = trainer_config(phase, vlm, corpus, work / f"ds-{phase}", steps=total)
        stage0 = dataclasses.replace(config, zero_stage=0, output_dir=str(work / f"ds0-{phase}"))
        batches = collate_batches(config, total)
        result = side_by_side(config, batches, sizes, deepspeed_run, plain_run)
        zero = side_by_side(config, batches, sizes, lambda _, b: deepspeed_run(stage0, b), plain_run)
        rows.append({"phase": phase, "deepspeed": result["first"], "plain": result["second"], "gap": result["gap"],
                     "stage0": zero["first"], "plain0": zero["second"], "gap0": zero["gap"],
                     "timed": result["timed"], "samples": _samples(batches[sizes.warmup:])})
        print(f"  {phase}: ZeRO-2 {result['first'] * 1000:.1f} ms, stage 0 {zero['first'] * 1000:.1f} ms, plain "
              f"{result['second'] * 1000:.1f} / {zero['second'] * 1000:.1f} ms", flush=True)
    return rows


def precision_cost(vlm: pathlib.Path, corpus: pathlib.Path, work: pathlib.Path, sizes: Sizes) -> dict:
    """Measurement 3: the trainer in fp32 against bf16, step1_choice, the same replayed batches."""
    total = sizes.warmup + sizes.steps
    fp32 = trainer_config("step1_choice", vlm, corpus, work / "fp32", steps=total)
    bf16 = dataclasses.replace(fp32, precision="bf16", output_dir=str(work / "bf16"))
    batches = collate_batches(fp32, total)
    result = side_by_side(fp32, batches, sizes, deepspeed_run, lambda _, b: deepspeed_run(bf16, b))
    return {"fp32": result["first"], "bf16": result["second"], "gap": result["gap"], "timed": result["timed"]}


def _samples(batches: Sequence[CorpusBatch]) -> str:
    robot = sum(len(b.robot or ()) for b in batches) / len(batches)
    vl = sum(len(b.vl or ()) for b in batches) / len(batches)
    return f"{robot:.1f} robot + {vl:.1f} VL"


def shm_op_cached(extensions_dir: str | None) -> bool:
    """Whether a built DeepSpeed shared-memory comm op is in the extensions cache the child processes will use."""
    from torch.utils.cpp_extension import get_default_build_root

    root = extensions_dir or get_default_build_root()
    return bool(glob.glob(os.path.join(root, "**", SHM_OP, f"{SHM_OP}*.so"), recursive=True))


def launch(argv: list[str], output: pathlib.Path, environment: dict[str, str]) -> dict[str, Any]:
    """Run `vlaforge <argv>` as a fresh process; wall time from start to the start of step 1 (step 1's end, seen
    by polling the train log, less its logged length) and to exit, and the log's lines."""
    log = output / TRAIN_LOG
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "vlaforge.flows.cli", *argv], env=environment,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    first_seen = None
    while process.poll() is None:
        if first_seen is None and log.exists() and log.read_text().strip():
            first_seen = time.perf_counter() - started
        time.sleep(0.02)
    wall = time.perf_counter() - started
    text = process.stdout.read()
    if process.returncode != 0:
        raise RuntimeError(f"vlaforge {' '.join(argv)} failed ({process.returncode}):\n{text[-4000:]}")
    records = [json.loads(line) for line in log.read_text().splitlines()]
    first_seen = wall if first_seen is None else first_seen
    return {"records": records, "to_first_step": first_seen - records[0]["seconds"], "wall": wall}


def scaling(vlm: pathlib.Path, corpus: pathlib.Path, work: pathlib.Path, sizes: Sizes) -> dict[str, Any]:
    """Measurement 2: `vlaforge train --nproc 2` (twice: the first maybe with an empty JIT cache) and `--nproc 1`
    as fresh processes, real loader in; {row name: launch()'s result}."""
    environment = {**os.environ, **DEVICE_ENV}
    environment.pop("OMP_NUM_THREADS", None)  # torchrun then sets 1 per rank; the 1-rank run keeps torch's default
    first, first_env = "2 ranks, first launch", {}
    if sizes.cold_jit:
        first, first_env = "2 ranks, empty JIT cache", {"TORCH_EXTENSIONS_DIR": tempfile.mkdtemp(dir=work)}
    runs: dict[str, Any] = {}
    for name, nproc, extra in ((first, 2, first_env), ("1 rank", 1, {}), ("2 ranks", 2, {})):
        output = work / f"scaling-{len(runs)}"
        argv = train_argv("step1_choice", vlm, corpus, output, steps=sizes.warmup + sizes.scaling_steps, nproc=nproc)
        runs[name] = launch(argv, output, {**environment, **extra})
        print(f"  {name}: launch to first step {runs[name]['to_first_step']:.1f} s", flush=True)
    return runs


def print_wrapper_table(rows: list[dict], sizes: Sizes) -> None:
    print(f"\n1. Optimizer step, CPU ms (forward, backward, optimizer), DeepSpeed (1 rank, in-process; ZeRO-2 and ZeRO "
          f"stage 0) vs a plain PyTorch AdamW loop run beside each; loader out (pre-collated batches replayed); fp32, "
          f"micro batch {MICRO_BATCH}, {torch.get_num_threads()} intra-op thread(s); median of {rows[0]['timed']} "
          f"timed steps per side ({sizes.warmup} warm-up steps dropped per run)")
    print(f"  {'phase':<16} {'samples/step':>20} {'ZeRO-2 ms':>10} {'plain ms':>9} {'plain/Z2':>9} {'stage0 ms':>10} "
          f"{'plain ms':>9} {'plain/Z0':>9} {'max |d loss|':>13}")
    for row in rows:
        print(f"  {row['phase']:<16} {row['samples']:>20} {row['deepspeed'] * 1000:>10.1f} {row['plain'] * 1000:>9.1f}"
              f" {row['plain'] / row['deepspeed']:>9.2f} {row['stage0'] * 1000:>10.1f} {row['plain0'] * 1000:>9.1f}"
              f" {row['plain0'] / row['stage0']:>9.2f} {max(row['gap'], row['gap0']):>13.2e}")


def print_scaling_table(runs: dict[str, Any], sizes: Sizes, cached_at_start: bool) -> None:
    base = _throughput(runs["1 rank"], sizes.warmup)
    print(f"\n2. vlaforge train --nproc 2 (torchrun, ZeRO-2 over gloo) vs --nproc 1, step1_choice, real loader "
          f"(1 worker per rank), micro batch {MICRO_BATCH} per rank; median of {sizes.scaling_steps} steps after "
          f"{sizes.warmup} warm-up steps (rank 0's logged step time)")
    print(f"  {'run':<24} {'samples/step':>12} {'step ms':>8} {'steps/s':>8} {'x 1 rank':>9} {'samples/s':>10} "
          f"{'x 1 rank':>9} {'launch->step 1 s':>17} {'total wall s':>13}")
    for name, run in runs.items():
        numbers = _throughput(run, sizes.warmup)
        print(f"  {name:<24} {numbers['samples']:>12.1f} {numbers['step'] * 1000:>8.1f} {1 / numbers['step']:>8.2f} "
              f"{base['step'] / numbers['step']:>9.2f} {numbers['samples'] / numbers['step']:>10.1f} "
              f"{(numbers['samples'] / numbers['step']) / (base['samples'] / base['step']):>9.2f} "
              f"{run['to_first_step']:>17.1f} {run['wall']:>13.1f}")
    cache = "held" if cached_at_start else "did NOT hold (measurement 1's first DeepSpeed init built it)"
    print(f"  DeepSpeed's JIT comm op ({SHM_OP}): the extensions cache {cache} a build when this benchmark started; "
          + ("the first launch had an empty cache and built it, the others loaded it" if sizes.cold_jit else
             "every launch loaded it (pass --cold-jit to time a launch that builds it)"))
    if sizes.cold_jit:
        cold = next(iter(runs.values()))["to_first_step"]  # the first launch
        print(f"  the build's share of the cold launch (cold - warm 2-rank launch->step 1): "
              f"{cold - runs['2 ranks']['to_first_step']:.1f} s")


def _throughput(run: dict, warmup: int) -> dict[str, float]:
    timed = run["records"][warmup:]
    samples = median(r["robot_samples"] + r["vl_samples"] for r in timed)
    return {"step": median(r["seconds"] for r in timed), "samples": samples}


def print_precision_table(result: dict, sizes: Sizes) -> None:
    print(f"\n3. DeepSpeed bf16 vs fp32 (1 rank, in-process), step1_choice, loader out, CPU ms per step; median of "
          f"{result['timed']} timed steps per side ({sizes.warmup} warm-up steps dropped per run)")
    print(f"  {'fp32 ms':>8} {'bf16 ms':>8} {'fp32/bf16':>10} {'max |d loss|':>13}")
    print(f"  {result['fp32'] * 1000:>8.1f} {result['bf16'] * 1000:>8.1f} {result['fp32'] / result['bf16']:>10.2f} "
          f"{result['gap']:>13.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps and one alternation (under 2 minutes)")
    parser.add_argument("--cold-jit", action=argparse.BooleanOptionalAction, default=None,
                        help="give the first 2-rank launch an empty TORCH_EXTENSIONS_DIR, so it pays DeepSpeed's JIT "
                             "comm op build (default: on, off with --quick)")
    parser.add_argument("--skip-bf16", action="store_true", help="leave out measurement 3")
    parser.add_argument("--skip-scaling", action="store_true", help="leave out measurement 2")
    parser.add_argument("--threads", type=int, default=1,
                        help="intra-op threads of the in-process runs (default 1: on a shared machine one thread's CPU "
                             "time is what stays comparable)")
    args = parser.parse_args()
    sizes = QUICK if args.quick else DEFAULT
    if args.cold_jit is not None:
        sizes = dataclasses.replace(sizes, cold_jit=args.cold_jit)
    torch.set_num_threads(args.threads)
    cached_at_start = shm_op_cached(os.environ.get("TORCH_EXTENSIONS_DIR"))
    os.environ.update(DEVICE_ENV)  # the in-process runs; the launched ones get it in their environment
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="vlaforge-train-bench-") as directory:
        work = pathlib.Path(directory)
        vlm, corpus = write_inputs(work / "inputs")
        print("1. DeepSpeed vs plain loop", flush=True)
        wrapper = wrapper_cost(vlm, corpus, work, sizes)
        scaled = None
        if not args.skip_scaling:
            print("2. 2 ranks vs 1", flush=True)
            scaled = scaling(vlm, corpus, work, sizes)
        precision = None
        if not args.skip_bf16:
            print("3. bf16 vs fp32", flush=True)
            precision = precision_cost(vlm, corpus, work, sizes)
    print_wrapper_table(wrapper, sizes)
    if scaled is not None:
        print_scaling_table(scaled, sizes, cached_at_start)
    if precision is not None:
        print_precision_table(precision, sizes)
    print(f"\nwall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
