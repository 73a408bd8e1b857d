"""Model speed: the tiny preset on this CPU, and the report-scale model on a GPU when one is present.

    python benchmarks/model.py                 # CPU table; the GPU section says it was skipped
    python benchmarks/model.py --compile       # on a GPU, also time the DiT under torch.compile
    python benchmarks/model.py --gpu-dry-run   # run the GPU section's code on this CPU with the tiny preset

The GPU section builds the report-scale model (Qwen3-VL-4B + 16-layer DiT, about 4.7B parameters) with random
weights in bf16, then measures the 5-step sampling latency the report quotes (80 ms on an RTX 4090) and the MFU
of a training step: model FLOPs counted by torch's FlopCounterMode over the measured step time, against the
GPU's dense bf16 peak. Inputs are synthetic processor outputs: `--cameras` images of `--image-side` pixels and an
instruction of `--text-tokens` tokens. Numbers are medians of `--repeats` timed runs after warm-up; these machines
are shared, so compare ratios taken in one run.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode

from vlaforge.training.model import presets
from vlaforge.training.model.phase import Phase
from vlaforge.training.model.vla import RobotBatch, VLAModel

# Dense bf16 tensor-core peaks (no sparsity), by a substring of torch.cuda.get_device_name().
PEAK_BF16_FLOPS = (("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("A100", 312e12),
                   ("RTX 4090", 165e12), ("L40S", 362e12))


@dataclasses.dataclass
class Row:
    section: str
    what: str
    milliseconds: float
    note: str = ""


def synthetic_inputs(vlm_config, batch: int, cameras: int, image_side: int, text_tokens: int, device):
    """What Qwen3VLProcessor returns for `cameras` images and an instruction, with random pixels and words."""
    vision = vlm_config.vision_config
    grid = image_side // vision.patch_size
    image_tokens = grid * grid // vision.spatial_merge_size**2
    per_sample = []
    for _ in range(cameras):
        per_sample += [vlm_config.vision_start_token_id] + [vlm_config.image_token_id] * image_tokens
        per_sample += [vlm_config.vision_end_token_id]
    per_sample += torch.randint(1000, 100_000, (text_tokens,)).tolist()
    input_ids = torch.tensor([per_sample] * batch, device=device)
    patch_width = 3 * vision.temporal_patch_size * vision.patch_size**2
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones_like(input_ids),
        "mm_token_type_ids": (input_ids == vlm_config.image_token_id).long(),
        "pixel_values": torch.randn(batch * cameras * grid * grid, patch_width, device=device),
        "image_grid_thw": torch.tensor([[1, grid, grid]] * (batch * cameras), device=device),
    }


def robot_batch(model: VLAModel, vlm_inputs, batch: int, device) -> RobotBatch:
    dit = model.config.dit
    return RobotBatch(
        vlm_inputs=vlm_inputs,
        state=torch.randn(batch, dit.state_dim, device=device),
        actions=torch.randn(batch, dit.chunk_len, dit.action_dim, device=device),
        action_mask=torch.ones(batch, dit.action_dim, dtype=torch.bool, device=device),
        valid_len=torch.full((batch,), dit.chunk_len, device=device),
    )


def median_ms(fn: Callable[[], object], repeats: int, warmup: int, device) -> float:
    """Median wall time of fn in ms; on a GPU, synchronized around each call."""
    sync = torch.cuda.synchronize if torch.device(device).type == "cuda" else (lambda: None)
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def sampling_rows(section, model, vlm_inputs, repeats, warmup, device, compiled_dit=None) -> list[Row]:
    """VLM prefill, one DiT velocity, and the whole 5-step sample, for one observation."""
    batch = robot_batch(model, vlm_inputs, 1, device)
    noise = torch.randn_like(batch.actions)
    with torch.no_grad():
        context = model.vlm.encode(vlm_inputs)
        tau, no_prefix = torch.zeros(1, device=device), torch.zeros(1, dtype=torch.long, device=device)
        rows = [
            Row(section, "VLM prefill (images + instruction)",
                median_ms(lambda: model.vlm.encode(vlm_inputs), repeats, warmup, device)),
            Row(section, "DiT forward (one velocity)",
                median_ms(lambda: model.velocity(noise, tau, batch.state, context, no_prefix, batch.action_mask),
                          repeats, warmup, device)),
        ]
        steps = model.config.flow.num_steps
        sample = lambda: model.sample_actions(vlm_inputs, batch.state, batch.action_mask, noise)  # noqa: E731
        rows.append(Row(section, f"{steps}-step sampling (prefill + {steps} DiT)",
                        median_ms(sample, repeats, warmup, device), "the report: 80 ms on an RTX 4090"))
        if compiled_dit is not None:
            eager, model.dit = model.dit, compiled_dit
            try:
                rows.append(Row(section, f"{steps}-step sampling, DiT under torch.compile",
                                median_ms(sample, repeats, warmup + 2, device)))
            finally:
                model.dit = eager
    return rows


def training_row(section, model, phase, vlm_inputs, batch_size, repeats, warmup, device, peak) -> Row:
    """One optimizer step of `phase`, with its FLOPs counted once and the MFU they imply."""
    model.set_phase(phase)
    model.train()
    batch = robot_batch(model, vlm_inputs, batch_size, device)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-5, foreach=True)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        model.flow_matching_loss(batch)["loss"].backward()
        optimizer.step()

    flops = count_flops(lambda: model.flow_matching_loss(batch)["loss"].backward())
    ms = median_ms(step, repeats, warmup, device)
    model.eval()
    if flops is None:
        return Row(section, f"train step: {phase.value}", ms,
                   f"batch {batch_size}, FLOPs n/a: torch {torch.__version__}'s counter rejects grouped-query SDPA")
    achieved = flops / (ms / 1000)
    note = f"batch {batch_size}, {flops / 1e9:,.1f} GFLOP/step, {achieved / 1e12:.3f} TFLOP/s"
    if torch.device(device).type == "cuda":
        note += f", MFU {achieved / peak:.1%}" if peak else ", MFU n/a (unknown peak: pass --peak-tflops)"
    return Row(section, f"train step: {phase.value}", ms, note)


def count_flops(fn: Callable[[], None]) -> int | None:
    """FLOPs of one call of `fn`, or None where this torch's counter cannot count an op it meets (older torch
    asserts on SDPA with fewer key/value heads than query heads)."""
    counter = FlopCounterMode(display=False)
    try:
        with counter:
            fn()
    except AssertionError:
        return None
    return counter.get_total_flops()


def cpu_section(args) -> list[Row]:
    torch.manual_seed(0)
    vlm_config = presets.qwen3_vl_tiny()
    model = VLAModel.from_vlm_config(vlm_config, presets.vla_tiny()).eval()
    inputs = synthetic_inputs(vlm_config, 1, args.cameras, 64, 12, "cpu")
    section = f"CPU tiny ({torch.get_num_threads()} threads)"
    rows = sampling_rows(section, model, inputs, args.repeats, 3, "cpu")
    train_inputs = synthetic_inputs(vlm_config, 8, args.cameras, 64, 12, "cpu")
    rows.append(training_row(section, model, Phase.POSTTRAIN_SYNC, train_inputs, 8, args.repeats, 2, "cpu", None))
    return rows


def gpu_section(args) -> list[Row]:
    dry = args.gpu_dry_run
    device, dtype = ("cpu", torch.float32) if dry else ("cuda", torch.bfloat16)
    vlm_config, config = (presets.qwen3_vl_tiny(), presets.vla_tiny()) if dry else (
        presets.qwen3_vl_4b_instruct(), presets.report_scale())
    name = "dry run on CPU, tiny preset" if dry else torch.cuda.get_device_name()
    peak = None if dry else gpu_peak(name, args.peak_tflops)
    torch.manual_seed(0)
    with torch.device(device):
        model = VLAModel.from_vlm_config(vlm_config, config)
    model = model.to(dtype).eval()
    params = sum(p.numel() for p in model.parameters())
    section = f"GPU {name}, {str(dtype).removeprefix('torch.')}, {params / 1e9:.2f}B params"
    side = 64 if dry else args.image_side
    inputs = synthetic_inputs(vlm_config, 1, args.cameras, side, args.text_tokens, device)
    inputs["pixel_values"] = inputs["pixel_values"].to(dtype)
    compiled = torch.compile(model.dit) if args.compile else None
    rows = sampling_rows(section, model, inputs, args.repeats, 3, device, compiled)
    for phase, batch_size in ((Phase.STEP2_DIT, args.train_batch), (Phase.POSTTRAIN_SYNC, args.train_batch)):
        train_inputs = synthetic_inputs(vlm_config, batch_size, args.cameras, side, args.text_tokens, device)
        train_inputs["pixel_values"] = train_inputs["pixel_values"].to(dtype)
        rows.append(training_row(section, model, phase, train_inputs, batch_size, max(3, args.repeats // 4), 2,
                                 device, peak))
    return rows


def gpu_peak(name: str, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    return next((peak for key, peak in PEAK_BF16_FLOPS if key in name), None)


def print_table(rows: list[Row]) -> None:
    width = max(len(r.what) for r in rows)
    for section in dict.fromkeys(r.section for r in rows):
        print(f"\n{section}")
        print(f"  {'measurement'.ljust(width)}  {'median ms':>10}  note")
        for row in (r for r in rows if r.section == section):
            print(f"  {row.what.ljust(width)}  {row.milliseconds:10.2f}  {row.note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--cameras", type=int, default=3, help="images per observation (the real robot has 3)")
    parser.add_argument("--image-side", type=int, default=224, help="GPU section: square image side in pixels")
    parser.add_argument("--text-tokens", type=int, default=32, help="GPU section: instruction length in tokens")
    parser.add_argument("--train-batch", type=int, default=8, help="GPU section: training batch size")
    parser.add_argument("--compile", action="store_true", help="GPU section: also time the DiT under torch.compile")
    parser.add_argument("--peak-tflops", type=float, default=None, help="dense bf16 peak for MFU, if not known")
    parser.add_argument("--gpu-dry-run", action="store_true", help="run the GPU section's code on CPU, tiny preset")
    parser.add_argument("--skip-cpu", action="store_true")
    args = parser.parse_args()
    rows = [] if args.skip_cpu else cpu_section(args)
    if torch.cuda.is_available() or args.gpu_dry_run:
        rows += gpu_section(args)
    print_table(rows)
    if not (torch.cuda.is_available() or args.gpu_dry_run):
        print("\nGPU section: skipped (no CUDA device on this machine); no GPU latency or MFU was measured.")


if __name__ == "__main__":
    main()
