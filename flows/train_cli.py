"""`vlaforge train`: one phase of the recipe on DeepSpeed ZeRO-2 (`training/trainer.py`).

The command builds a `TrainerConfig`, writes it to `<output>/trainer_config.json`, and either runs it in this process
(`--nproc 1`) or starts `torchrun --standalone --nproc_per_node N -m vlaforge.training.train_main --config ...`.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys

from rich.console import Console
from rich.table import Table

from vlaforge.flows.cli_options import height_width

PHASES = ("step1_choice", "step2_dit", "posttrain_sync", "posttrain_async")
MODELS = ("tiny", "report")
"""`Phase` values and `train_recipe.MODEL_PRESETS` names, listed here so that `vlaforge --help` imports no torch
(a test holds them equal)."""


def add_parser(verbs: argparse._SubParsersAction) -> None:
    train = verbs.add_parser("train", help="train one phase of the recipe on DeepSpeed ZeRO-2")
    train.add_argument("--phase", required=True, choices=PHASES, help="what trains, on which loss")
    train.add_argument("--corpus", required=True, help="corpus manifest: path, file://, http(s):// or s3://")
    start = train.add_mutually_exclusive_group(required=True)
    start.add_argument("--vlm", help="Qwen3-VL checkpoint to start from, with a fresh DiT (its processor too)")
    start.add_argument("--init-policy", help="policy directory to start from (post-training after step 2)")
    train.add_argument("--processor", help="Qwen3-VL processor (default: the --vlm dir, or the policy's vlm/)")
    train.add_argument("--output", required=True, type=pathlib.Path, help="checkpoints, train_log.jsonl, policy/")
    train.add_argument("--nproc", type=int, default=1, help="processes (ranks) on this machine (default 1)")
    train.add_argument("--model", choices=MODELS, default="report", help="DiT preset: report (16 layers) or tiny")
    train.add_argument("--chunk-len", type=int, help="action chunk T (default: the preset's)")
    train.add_argument("--chunk-length", dest="chunk_len", type=int, action=_RenamedFlag, new="--chunk-len",
                       help=argparse.SUPPRESS)
    train.add_argument("--max-steps", type=int, default=1000, help="optimizer steps in all (default 1000)")
    train.add_argument("--micro-batch-size", type=int, default=32, help="samples per rank per micro step")
    train.add_argument("--grad-accum", type=int, default=1, help="micro steps per optimizer step (default 1)")
    train.add_argument("--lr", type=float, default=1e-4, help="peak learning rate (default 1e-4)")
    train.add_argument("--weight-decay", type=float, default=0.01, help="AdamW weight decay (default 0.01)")
    train.add_argument("--warmup-steps", type=int, default=0, help="linear warm-up steps (default 0)")
    train.add_argument("--lr-decay", choices=("constant", "linear", "cosine"), default="constant",
                       help="the learning rate after warm-up, until --max-steps (default constant)")
    train.add_argument("--min-lr-ratio", type=float, default=0.0, help="where cosine decay ends, x lr (default 0)")
    train.add_argument("--grad-clip", type=float, default=1.0, help="gradient-norm clipping (default 1.0)")
    train.add_argument("--precision", choices=("fp32", "bf16"), default="fp32", help="(default fp32)")
    train.add_argument("--vl-loss-weight", type=float, default=1.0, help="VL next-token loss weight (default 1)")
    train.add_argument("--save-every", type=int, default=500, help="steps between checkpoints (default 500)")
    train.add_argument("--eval-every", type=int, default=0,
                       help="steps between passes over the validation split (default 0: none)")
    train.add_argument("--eval-max-batches", type=int, help="batches per rank per validation pass (default: all)")
    train.add_argument("--seed", type=int, default=0, help="weights and noise seed (default 0)")
    train.add_argument("--workers", type=int, default=2, help="loader worker processes per rank (default 2)")
    train.add_argument("--image-size", type=height_width, default=(224, 224),
                       help="HEIGHTxWIDTH frames (default 224x224)")
    train.add_argument("--cameras", nargs="+", help="camera slots in model order (default: every canonical camera)")
    train.add_argument("--no-resume", action="store_true", help="start over even if checkpoints exist")
    train.add_argument("--no-export", action="store_true", help="do not write <output>/policy at the end")
    train.add_argument("--log-sample-keys", action="store_true", help="write samples/rank<r>.jsonl per step")
    train.add_argument("--on-bad-sample", choices=("raise", "skip"), default="raise",
                       help="a sample that does not decode: stop the run (default), or skip it, logged with its "
                            "shard and key and counted")
    train.add_argument("--max-bad-fraction", type=float, default=0.01,
                       help="with --on-bad-sample skip: stop once more than this share of the samples drawn were "
                            "skipped (default 0.01, judged over at least 1,000 draws)")
    train.add_argument("--eval-sim", metavar="ENV", help="evaluate the policy closed loop in this simulated "
                                                         "environment during training (vlaforge eval sim)")
    train.add_argument("--eval-sim-every", type=int, default=0, metavar="K",
                       help="steps between those evaluations (default 0: none)")
    train.add_argument("--eval-sim-episodes", type=int, default=10, help="episodes per evaluation (default 10)")
    train.add_argument("--eval-sim-max-steps", type=int, help="episode step limit (default: the benchmark's)")
    train.add_argument("--s3-endpoint-url",
                       default=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
                       help="S3-compatible endpoint (default: $AWS_ENDPOINT_URL_S3 or $AWS_ENDPOINT_URL)")


class _RenamedFlag(argparse.Action):
    """A flag's old spelling, kept so that old scripts still run: hidden from --help, and a note on stderr names the
    new one."""

    def __init__(self, option_strings: list[str], dest: str, *, new: str, **kwargs) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # type: ignore[no-untyped-def]
        print(f"vlaforge train: {option_string} is deprecated; use {self.new}", file=sys.stderr)
        setattr(namespace, self.dest, values)


def build_config(args: argparse.Namespace):  # -> TrainerConfig
    """The run the options describe (`training/train_recipe.py`)."""
    from vlaforge.training.train_recipe import build_trainer_config

    return build_trainer_config(
        phase=args.phase, corpus=args.corpus, output=args.output, vlm=args.vlm, init_policy=args.init_policy,
        processor=args.processor, model=args.model, chunk_len=args.chunk_len, image_size=args.image_size,
        cameras=tuple(args.cameras) if args.cameras else None, workers=args.workers,
        micro_batch_size=args.micro_batch_size, s3_endpoint_url=args.s3_endpoint_url, lr=args.lr,
        weight_decay=args.weight_decay, warmup_steps=args.warmup_steps, lr_decay=args.lr_decay,
        min_lr_ratio=args.min_lr_ratio, max_steps=args.max_steps, gradient_accumulation=args.grad_accum,
        grad_clip=args.grad_clip, precision=args.precision, vl_loss_weight=args.vl_loss_weight,
        save_every=args.save_every, eval_every=args.eval_every, eval_max_batches=args.eval_max_batches,
        resume=not args.no_resume, seed=args.seed, log_sample_keys=args.log_sample_keys, export=not args.no_export,
        on_bad_sample=args.on_bad_sample, max_bad_fraction=args.max_bad_fraction)


def eval_sim_command(args: argparse.Namespace) -> tuple[str, ...]:
    """`vlaforge eval sim` on the exported policy of a step (`{policy}`, `{output}`: the trainer fills them in), with
    frames at the training size."""
    command = [sys.executable, "-m", "vlaforge.flows.cli", "eval", "sim", "--policy", "{policy}", "--env",
               args.eval_sim, "--episodes", str(args.eval_sim_episodes), "--videos", "0", "--output", "{output}",
               "--image-size", f"{args.image_size[0]}x{args.image_size[1]}"]
    if args.eval_sim_max_steps:
        command += ["--max-steps", str(args.eval_sim_max_steps)]
    return tuple(command)


def with_policy_evaluation(config, args: argparse.Namespace):  # TrainerConfig -> TrainerConfig
    """The config with `--eval-sim ENV --eval-sim-every K` as the trainer's policy evaluation."""
    if bool(args.eval_sim) != bool(args.eval_sim_every):
        raise ValueError("--eval-sim ENV and --eval-sim-every K go together (K > 0)")
    if not args.eval_sim:
        return config
    import dataclasses

    return dataclasses.replace(config, policy_eval_every=args.eval_sim_every,
                               policy_eval_command=eval_sim_command(args))


def run(args: argparse.Namespace, console: Console) -> int:
    if args.nproc < 1:
        raise ValueError(f"--nproc must be >= 1, got {args.nproc}")
    config = with_policy_evaluation(build_config(args), args)
    args.output.mkdir(parents=True, exist_ok=True)
    config_file = args.output / "trainer_config.json"
    config_file.write_text(json.dumps(config.to_dict(), indent=1))
    environment = {**_device_environment(), **_prefect_environment()} if args.eval_sim else _device_environment()
    if args.nproc == 1:
        os.environ.update(environment)
        from vlaforge.training import train_main

        train_main.run(config, single_process=True)
    else:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                   str(args.nproc), "-m", "vlaforge.training.train_main", "--config", str(config_file)]
        completed = subprocess.run(command, env={**os.environ, **environment}, check=False)
        if completed.returncode != 0:
            console.print(f"[red]training failed[/red] (torchrun exit code {completed.returncode})")
            return completed.returncode
    console.print(_log_table(args.output))
    if args.eval_sim:
        console.print(_policy_eval_table(args.output, args.eval_sim))
    return 0


def _device_environment() -> dict[str, str]:
    """DeepSpeed's CPU accelerator where there is no GPU (it would find it anyway; this makes it explicit)."""
    import torch

    return {} if torch.cuda.is_available() else {"DS_ACCELERATOR": "cpu"}


def _log_table(output: pathlib.Path) -> Table:
    from vlaforge.training.trainer import TRAIN_LOG

    lines = [json.loads(line) for line in (output / TRAIN_LOG).read_text().splitlines()]
    table = Table(title=f"{output / TRAIN_LOG}: losses averaged over micro batches and ranks")
    columns = {"step": "step", "loss": "loss", "flow_matching": "flow", "choice": "choice", "next_token": "VL NTP",
               "robot_samples": "robot", "vl_samples": "VL", "grad_norm": "grad norm", "seconds": "s"}
    for label in columns.values():
        table.add_column(label, justify="right", no_wrap=True)
    for line in lines[-20:]:
        table.add_row(*(_shown(line.get(key)) for key in columns))
    return table


def _shown(value) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def _prefect_environment() -> dict[str, str]:
    """The Prefect API this command talks to, for the `vlaforge eval sim` runs the trainer starts: their `evaluate`
    flow runs land on the same server (a child process would otherwise see only the environment's setting)."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    return {"PREFECT_API_URL": url} if url else {}


def _policy_eval_table(output: pathlib.Path, env: str) -> Table:
    from vlaforge.training.trainer import POLICY_EVAL_LOG

    lines = [json.loads(line) for line in (output / POLICY_EVAL_LOG).read_text().splitlines()]
    table = Table(title=f"{output / POLICY_EVAL_LOG}: closed loop in {env} during training")
    for label in ("step", "success", "episodes", "mean return", "results"):
        table.add_column(label, justify="left" if label == "results" else "right")
    for line in lines:
        table.add_row(str(line["step"]), _shown(line.get("success_rate")), _shown(line.get("episodes")),
                      _shown(line.get("mean_return")), str(line.get("results")))
    return table
