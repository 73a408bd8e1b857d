"""The GPU check, ready for the day a GPU is lent: the report-scale model's training phases, its sampling latency and
the trainer's collectives, in one command that prints one table and writes it as JSON.

    python benchmarks/gpu.py                    # a CUDA machine: under 8 minutes on one H100
    python benchmarks/gpu.py --cpu-dry-run      # the same procedure, CPU-sized (tiny model, fp32): about 4 minutes

Without CUDA (and without --cpu-dry-run) it says why it skips and exits 0. Nothing is downloaded: the model is the
report's (Qwen3-VL-4B-Instruct's architecture, `presets.qwen3_vl_4b_instruct()`, and the 16-layer DiT) with random
weights, saved once with `save_pretrained` and loaded by the trainer through `from_pretrained` like a real checkpoint.

1. Training. Per phase (step2_dit, posttrain_async, step1_choice, posttrain_sync), `vlaforge train --recipe <phase>`
   (CPU dry run: `<phase>_tiny`) in a fresh process for 3 optimizer steps of DeepSpeed ZeRO-2 on one device, over a
   small corpus of 224x224 frames and 30-step chunks (CPU: 64x64, 8-step); precision auto (bf16 on the GPU),
   micro batch 8 (CPU: 4), no accumulation, the recipe's activation checkpointing, the optimizer state offloaded to
   the CPU when the trainable parameters' training state (16 bytes each, plus 2 per frozen parameter) would not fit
   60% of the GPU's memory. From the run's `train_log.jsonl`: step time (median of steps 2 and 3), peak memory, the
   model TFLOP/s and the MFU estimate (`training/flops.py`; the CPU's peak is a measured fp32 matmul rate).
2. Sampling latency of the full model at batch 1: two 224x224 camera frames and an instruction, the VLM's prefill
   and 5 Euler steps of the DiT (`VLAModel.sample_actions`), median of 20 after 3 warm-up; the prefill alone beside
   it. The report gives 80 ms on an RTX 4090.
3. The collectives. With 2 or more GPUs: `vlaforge train --recipe step2_dit --nproc N` for 3 steps, so every logged
   step all-reduces the trainer's tally on each rank's GPU over NCCL. With one GPU: an NCCL group of one all-reducing
   the tally's tensor on cuda:0. CPU dry run: 2 ranks over gloo.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile
import time
from statistics import median
from typing import Any

import numpy as np
import torch

from vlaforge.flows.sample_data.small_corpus import write_small_corpus
from vlaforge.training.model import presets
from vlaforge.training.model.vla import VLAModel
from vlaforge.training.recipes import phase_of
from vlaforge.training.trainer import TRAIN_LOG

PHASES = ("step2_dit", "posttrain_async", "step1_choice", "posttrain_sync")
STEPS = 3
OFFLOAD_SHARE = 0.6
"""Offload the optimizer state when the training state would take more than this share of the GPU's memory."""
REPORT_LATENCY_MS = 80.0


@dataclasses.dataclass(frozen=True)
class Scale:
    """What differs between the GPU check and its CPU-sized dry run."""

    device: str
    recipe_suffix: str
    image_size: tuple[int, int]
    chunk_len: int
    micro_batch: int
    workers: int

    def vlm_config(self):
        return presets.qwen3_vl_4b_instruct() if self.device == "cuda" else presets.qwen3_vl_tiny()

    def vla_config(self):
        return presets.report_scale() if self.device == "cuda" else presets.vla_tiny()

    @property
    def dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.device == "cuda" else torch.float32


GPU = Scale(device="cuda", recipe_suffix="", image_size=(224, 224), chunk_len=30, micro_batch=8, workers=4)
CPU = Scale(device="cpu", recipe_suffix="_tiny", image_size=(64, 64), chunk_len=8, micro_batch=4, workers=1)


def write_vlm(directory: pathlib.Path, scale: Scale) -> pathlib.Path:
    """A random-weight Qwen3-VL of the scale's architecture and its processor, through save_pretrained."""
    from transformers import Qwen3VLForConditionalGeneration

    torch.manual_seed(0)
    with torch.device(scale.device):
        model = Qwen3VLForConditionalGeneration._from_config(scale.vlm_config(), dtype=scale.dtype)
    model.save_pretrained(directory)
    presets.tiny_processor(max_side=448).save_pretrained(directory)
    del model
    if scale.device == "cuda":
        torch.cuda.empty_cache()
    return directory


def parameter_counts(scale: Scale) -> dict[str, int]:
    """Parameters of the VLM, its token embeddings and the DiT, counted on the meta device."""
    with torch.device("meta"):
        model = VLAModel.from_vlm_config(scale.vlm_config(), scale.vla_config())
    embeddings = model.vlm.model.model.language_model.embed_tokens.weight.numel()
    return {"vlm": sum(p.numel() for p in model.vlm.parameters()), "embeddings": embeddings,
            "dit": sum(p.numel() for p in model.dit.parameters())}


def needs_offload(phase: str, counts: dict[str, int], scale: Scale) -> bool:
    """Whether the phase's training state (16 bytes per trainable parameter: bf16 weight and gradient, fp32 master
    and two Adam moments; 2 per frozen one) exceeds OFFLOAD_SHARE of the GPU."""
    if scale.device != "cuda":
        return False
    vlm_trains = phase != "step2_dit"
    trainable = (counts["vlm"] - counts["embeddings"] if vlm_trains else 0) + (counts["dit"] if phase != "step1_choice"
                                                                               else 0)
    frozen = counts["vlm"] + counts["dit"] - trainable
    total = torch.cuda.get_device_properties(0).total_memory
    return 16 * trainable + 2 * frozen > OFFLOAD_SHARE * total


def train_phase(phase: str, vlm: pathlib.Path, corpus: pathlib.Path, output: pathlib.Path, scale: Scale, *,
                offload: bool, nproc: int = 1, peak_tflops: float | None = None) -> dict[str, Any]:
    """`vlaforge train` for STEPS steps in a fresh process; numbers from its log (or the error's tail)."""
    sets = {"max_steps": STEPS, "global_batch_size": None, "gradient_accumulation": 1,
            "micro_batch_size": scale.micro_batch, "chunk_len": scale.chunk_len,
            "loader.robot.image_size": list(scale.image_size), "loader.num_workers": scale.workers,
            "save_every": 10**6, "eval_every": 0, "export": False, "resume": False, "tensorboard": False,
            "progress": False, "offload_optimizer": offload, "peak_tflops": peak_tflops}
    argv = [sys.executable, "-m", "vlaforge.flows.cli", "train", "--recipe", phase + scale.recipe_suffix, "--corpus",
            str(corpus), "--vlm", str(vlm), "--output", str(output), "--nproc", str(nproc)]
    for key, value in sets.items():
        argv += ["--set", f"{key}={json.dumps(value)}"]
    environment = {**os.environ, **({} if scale.device == "cuda" else {"DS_ACCELERATOR": "cpu"})}
    started = time.perf_counter()
    result = subprocess.run(argv, env=environment, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        return {"phase": phase, "error": (result.stdout + result.stderr).strip().splitlines()[-1][:200], "wall_s": wall}
    records = [json.loads(line) for line in (output / TRAIN_LOG).read_text().splitlines()]
    timed = records[1:] or records
    return {"phase": phase, "ranks": nproc, "offload": offload, "step_s": median(r["seconds"] for r in timed),
            "peak_memory_gb": max(r["peak_memory_gb"] for r in records),
            "tflops": median(r["tflops"] for r in timed), "mfu": median(r["mfu"] for r in timed)
            if all(r["mfu"] is not None for r in timed) else None,
            "samples_per_step": records[-1]["robot_samples"] + records[-1]["vl_samples"], "loss": records[-1]["loss"],
            "precision": json.loads((output / "run.json").read_text())["precision"], "wall_s": wall}


def sampling_latency(vlm: pathlib.Path, scale: Scale, repeats: int = 20) -> dict[str, float]:
    """ms of `sample_actions` (prefill + num_steps Euler steps) and of the prefill alone, batch 1, two frames."""
    from transformers import AutoProcessor

    from vlaforge.training.data.collate import robot_prompt

    model = VLAModel.from_vlm_pretrained(str(vlm), scale.vla_config(), dtype=scale.dtype).to(scale.device).eval()
    model.dit.to(scale.dtype)
    processor = AutoProcessor.from_pretrained(vlm)
    frames = [np.random.default_rng(i).integers(0, 255, (*scale.image_size, 3), dtype=np.uint8) for i in range(2)]
    text = processor.apply_chat_template(robot_prompt(2, "fold the towel in half"), tokenize=False)
    inputs = {k: v.to(scale.device) for k, v in processor(text=[text], images=frames, return_tensors="pt").items()}
    width, length = model.config.dit.action_dim, model.config.dit.chunk_len
    state = torch.zeros(1, width, device=scale.device)
    mask = torch.ones(1, width, dtype=torch.bool, device=scale.device)

    def timed(call) -> float:
        times = []
        for index in range(3 + repeats):
            _synchronize(scale)
            started = time.perf_counter()
            with torch.no_grad():
                call()
            _synchronize(scale)
            if index >= 3:
                times.append(time.perf_counter() - started)
        return median(times) * 1000

    noise = torch.randn(1, length, width, device=scale.device)
    sample = timed(lambda: model.sample_actions(inputs, state, mask, noise))
    prefill = timed(lambda: model.vlm.encode(inputs))
    return {"sample_ms": sample, "prefill_ms": prefill, "euler_steps": model.config.flow.num_steps,
            "vlm_tokens": int(inputs["input_ids"].shape[1])}


def _synchronize(scale: Scale) -> None:
    if scale.device == "cuda":
        torch.cuda.synchronize()


def collectives(vlm: pathlib.Path, corpus: pathlib.Path, work: pathlib.Path, scale: Scale) -> dict[str, Any]:
    """The trainer's reductions across devices (see the module docstring, 3)."""
    devices = torch.cuda.device_count() if scale.device == "cuda" else 2
    if devices >= 2:
        result = train_phase("step2_dit", vlm, corpus, work / "collectives", scale, offload=False, nproc=devices)
        return {"ranks": devices, "path": "vlaforge train, NCCL" if scale.device == "cuda" else "vlaforge train, gloo",
                "ok": "error" not in result, **result}
    return single_gpu_reduce()


def single_gpu_reduce() -> dict[str, Any]:
    """An NCCL group of one: the trainer's tally tensor made on cuda:0 and all-reduced there."""
    import torch.distributed as dist

    from vlaforge.training.step_tally import StepTally

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1,
                            device_id=torch.device("cuda", 0))
    try:
        tally = StepTally(("loss",))
        tally.add({"loss": 2.5}, robot_samples=4, tokens=100)
        totals = tally.totals(torch.device("cuda", 0))
        dist.all_reduce(totals)
        record = tally.record(totals.tolist(), world_size=1)
    finally:
        dist.destroy_process_group()
    return {"ranks": 1, "path": "NCCL group of one on cuda:0", "ok": record["loss"] == 2.5 and record["tokens"] == 100}


def measured_cpu_tflops() -> float:
    """This CPU's fp32 matmul rate (best of 5 at 1024²): the peak its MFU estimate is taken against."""
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    best = float("inf")
    for _ in range(5):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * 1024**3 / best / 1e12


def print_table(report: dict[str, Any]) -> None:
    print(f"\nGPU check on {report['device']} ({report['mode']}); {STEPS} ZeRO-2 steps per phase, one device")
    print(f"  {'phase':<16} {'precision':>9} {'offload':>7} {'samples':>7} {'step s':>7} {'peak GB':>8} "
          f"{'TFLOP/s':>8} {'MFU':>6} {'wall s':>7}")
    for row in report["training"]:
        if "error" in row:
            print(f"  {row['phase']:<16} failed: {row['error']}")
            continue
        mfu = "-" if row["mfu"] is None else f"{row['mfu']:.1%}"
        print(f"  {row['phase']:<16} {row['precision']:>9} {str(row['offload']):>7} {row['samples_per_step']:>7} "
              f"{row['step_s']:>7.2f} {row['peak_memory_gb']:>8.1f} {row['tflops']:>8.3g} {mfu:>6} "
              f"{row['wall_s']:>7.0f}")
    latency = report["latency"]
    print(f"  sampling at batch 1 ({latency['vlm_tokens']} VLM tokens, {latency['euler_steps']} Euler steps): "
          f"{latency['sample_ms']:.1f} ms (prefill alone {latency['prefill_ms']:.1f} ms); report: "
          f"{REPORT_LATENCY_MS:.0f} ms on an RTX 4090")
    reduce = report["collectives"]
    print(f"  collectives: {reduce['path']}, {reduce['ranks']} rank(s): {'ok' if reduce['ok'] else 'FAILED'}")
    print(f"  peak for MFU: {report['peak_tflops']} TFLOP/s per device; wall time {report['wall_s']:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cpu-dry-run", action="store_true", help="the same procedure, CPU-sized (no CUDA needed)")
    parser.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES), help="phases to train")
    parser.add_argument("--output", type=pathlib.Path, default=pathlib.Path("gpu_check.json"), help="the JSON table")
    parser.add_argument("--workdir", help="where the random checkpoint and corpus go (default: a temporary dir)")
    args = parser.parse_args()
    if not args.cpu_dry_run and not torch.cuda.is_available():
        print("benchmarks/gpu.py: skipped: no CUDA device here (torch.cuda.is_available() is False). Run it on a GPU "
              "machine, or pass --cpu-dry-run for the CPU-sized procedure.")
        return 0
    scale = CPU if args.cpu_dry_run else GPU
    started = time.perf_counter()
    peak = round(measured_cpu_tflops(), 4) if args.cpu_dry_run else None
    with tempfile.TemporaryDirectory(dir=args.workdir, prefix="vlaforge-gpu-check-") as directory:
        work = pathlib.Path(directory)
        print("writing the random-weight checkpoint and the corpus", flush=True)
        vlm = write_vlm(work / "vlm", scale)
        corpus = write_small_corpus(work / "corpus", image_size=scale.image_size, chunk_len=max(scale.chunk_len, 4))
        counts = parameter_counts(scale)
        training = []
        for phase in args.phases:
            assert phase_of(phase).value == phase
            print(f"training {phase}", flush=True)
            training.append(train_phase(phase, vlm, corpus, work / phase, scale,
                                        offload=needs_offload(phase, counts, scale), peak_tflops=peak))
        print("sampling latency", flush=True)
        latency = sampling_latency(vlm, scale)
        print("collectives", flush=True)
        reduce = collectives(vlm, corpus, work, scale)
    device = torch.cuda.get_device_name(0) if scale.device == "cuda" else "CPU"
    report = {"device": device, "mode": "CPU dry run (tiny model, fp32)" if args.cpu_dry_run else "report scale, bf16",
              "parameters": counts, "training": training, "latency": latency, "collectives": reduce,
              "peak_tflops": peak if args.cpu_dry_run else "by GPU name (training/flops.py)",
              "wall_s": time.perf_counter() - started}
    print_table(report)
    args.output.write_text(json.dumps(report, indent=1))
    print(f"  written: {args.output}")
    return 0 if all("error" not in row for row in training) and reduce["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
