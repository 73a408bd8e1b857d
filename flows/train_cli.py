"""`vlaforge train`: one phase of the recipe on DeepSpeed ZeRO (`training/trainer.py`), from a named recipe.

    vlaforge train --recipe posttrain_async --corpus C --init-policy P --output O [--set key=value ...]

The command resolves the recipe (`training/recipes.py`) with its `--set` changes, writes the resolved config to
`<output>/trainer_config.json` (and the recipe name and changes to `<output>/recipe.json`), and runs it: in this
process (one process, one node), under `torchrun` (`--nproc` per node; several nodes by static rendezvous with
`--node-rank`, or by torchrun's c10d rendezvous without it), or under DeepSpeed's launcher (`--launcher deepspeed
--hostfile FILE`, which starts every host's processes over ssh/pdsh from this one).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import subprocess
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from vlaforge.flows.cli_options import height_width, key_value

RECIPES = ("step1_choice", "step2_dit", "posttrain_sync", "posttrain_async", "posttrain_async_training_rtc",
           "posttrain_async_paper", "step1_choice_tiny", "step2_dit_tiny", "posttrain_sync_tiny",
           "posttrain_async_tiny")
"""`training/recipes.py` `RECIPES`' names, listed here so that `vlaforge --help` imports no torch (a test holds them
equal)."""
PHASES = ("step1_choice", "step2_dit", "posttrain_sync", "posttrain_async")
LAUNCHERS = ("torchrun", "deepspeed")
ENTRY = "vlaforge.training.train_main"
CONFIG_FILE = "trainer_config.json"
RECIPE_FILE = "recipe.json"


def add_parser(verbs: argparse._SubParsersAction) -> None:
    train = verbs.add_parser("train", help="train one phase of the recipe on DeepSpeed ZeRO-2",
                             description="Train one phase from a named recipe; see docs/training.md.")
    train.add_argument("--recipe", choices=RECIPES, metavar="NAME",
                       help=f"the recipe: {', '.join(RECIPES)} (training/recipes.py)")
    train.add_argument("--set", dest="overrides", action="append", type=key_value, default=[], metavar="KEY=VALUE",
                       help="change a recipe field by its dotted path, VALUE as JSON (repeatable), e.g. "
                            "--set max_steps=1000 --set model.prefix.async_probability=1.0 --set chunk_len=10")
    train.add_argument("--corpus", required=True, help="corpus manifest: path, file://, http(s):// or s3://")
    start = train.add_mutually_exclusive_group(required=True)
    start.add_argument("--vlm", help="Qwen3-VL checkpoint to start from, with a fresh DiT (its processor too)")
    start.add_argument("--init-policy", help="policy directory to start from (post-training after step 2)")
    train.add_argument("--processor", help="Qwen3-VL processor (default: the --vlm dir, or the policy's vlm/)")
    train.add_argument("--output", required=True, type=pathlib.Path, help="checkpoints, train_log.jsonl, policy/")
    train.add_argument("--no-resume", action="store_true", help="start over even if checkpoints exist")
    train.add_argument("--print-config", action="store_true", help="print the resolved config as JSON and exit")
    train.add_argument("--s3-endpoint-url",
                       default=os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL"),
                       help="S3-compatible endpoint (default: $AWS_ENDPOINT_URL_S3 or $AWS_ENDPOINT_URL)")
    launch = train.add_argument_group("launch (docs/training.md: one node, SLURM, a set of hosts)")
    launch.add_argument("--nproc", type=int, default=1, help="processes (ranks) per node (default 1)")
    launch.add_argument("--nnodes", type=int, default=1, help="nodes, each running this command (default 1)")
    launch.add_argument("--node-rank", type=int,
                        help="this node's rank (static rendezvous: node 0 holds rank 0); without it several nodes "
                             "meet by torchrun's c10d rendezvous and ranks follow arrival")
    launch.add_argument("--master-addr", default="127.0.0.1", help="node 0's address, reachable from every node")
    launch.add_argument("--master-port", type=int, default=29500, help="the rendezvous port on it (default 29500)")
    launch.add_argument("--rdzv-id", help="c10d rendezvous id, the same on every node (default: from --output)")
    launch.add_argument("--launcher", choices=LAUNCHERS, default="torchrun",
                        help="torchrun on every node (default), or DeepSpeed's launcher from one host")
    launch.add_argument("--hostfile", type=pathlib.Path,
                        help="DeepSpeed launcher hostfile ('host slots=N' lines); with --launcher deepspeed")
    data = train.add_argument_group("bad samples (docs/training.md)")
    data.add_argument("--on-bad-sample", choices=("raise", "skip"),
                      help="a sample that does not decode: stop the run (the recipe's default), or skip it, logged "
                           "with its shard and key and counted (the same as --set on_bad_sample=...)")
    data.add_argument("--max-bad-fraction", type=float,
                      help="with --on-bad-sample skip: stop once more than this share of the samples drawn were "
                           "skipped (default 0.01, judged over at least 1,000 draws)")
    evaluation = train.add_argument_group("policy evaluation during training (docs/evaluation.md)")
    evaluation.add_argument("--eval-sim", metavar="ENV", help="evaluate the policy closed loop in this simulated "
                                                              "environment during training (vlaforge eval sim)")
    evaluation.add_argument("--eval-sim-every", type=int, default=0, metavar="K",
                            help="steps between those evaluations (default 0: none)")
    evaluation.add_argument("--eval-sim-episodes", type=int, default=10, help="episodes per evaluation (default 10)")
    evaluation.add_argument("--eval-sim-max-steps", type=int, help="episode step limit (default: the benchmark's)")
    _add_old_flags(train)


_OLD_FLAGS: dict[str, tuple[str, Any]] = {
    "--max-steps": ("max_steps", int), "--micro-batch-size": ("micro_batch_size", int),
    "--grad-accum": ("gradient_accumulation", int), "--lr": ("lr", float), "--weight-decay": ("weight_decay", float),
    "--warmup-steps": ("warmup_steps", int), "--lr-decay": ("lr_decay", str), "--min-lr-ratio": ("min_lr_ratio", float),
    "--grad-clip": ("grad_clip", float), "--precision": ("precision", str),
    "--vl-loss-weight": ("vl_loss_weight", float),
    "--save-every": ("save_every", int), "--eval-every": ("eval_every", int),
    "--eval-max-batches": ("eval_max_batches", int), "--seed": ("seed", int), "--workers": ("loader.num_workers", int),
    "--image-size": ("loader.robot.image_size", height_width), "--chunk-len": ("chunk_len", int),
    "--chunk-length": ("chunk_len", int),
}
"""Flags of the command before recipes, each now a `--set` key: still accepted (hidden), with a note naming it."""


def _add_old_flags(train: argparse.ArgumentParser) -> None:
    train.add_argument("--phase", choices=PHASES, action=_OldPhase, help=argparse.SUPPRESS)
    train.add_argument("--model", choices=("tiny", "report"), action=_OldPhase, help=argparse.SUPPRESS)
    for flag, (key, kind) in _OLD_FLAGS.items():
        train.add_argument(flag, dest="overrides", type=kind, action=_OldFlag, key=key, help=argparse.SUPPRESS)
    train.add_argument("--cameras", dest="overrides", nargs="+", action=_OldFlag, key="loader.robot.cameras",
                       help=argparse.SUPPRESS)
    for flag, key, value in (("--no-export", "export", False), ("--log-sample-keys", "log_sample_keys", True)):
        train.add_argument(flag, dest="overrides", nargs=0, action=_OldFlag, key=key, value=value,
                           help=argparse.SUPPRESS)


class _OldFlag(argparse.Action):
    """A flag of the command before recipes: appends its `--set` and says so on stderr."""

    def __init__(self, option_strings, dest, *, key: str, value: Any = None, **kwargs) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.key, self.value = key, value

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # type: ignore[no-untyped-def]
        value = self.value if self.value is not None else values
        shown = json.dumps(list(value) if isinstance(value, (tuple, list)) else value)
        print(f"vlaforge train: {option_string} is deprecated; use --set {self.key}={shown}", file=sys.stderr)
        namespace.overrides = [*(namespace.overrides or []), (self.key, value)]


class _OldPhase(argparse.Action):
    """--phase / --model of the command before recipes: together they name a recipe (`_recipe_name`)."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:  # type: ignore[no-untyped-def]
        setattr(namespace, self.dest, values)


def _recipe_name(args: argparse.Namespace) -> str:
    """--recipe, or the recipe the old --phase (and --model) named."""
    if args.recipe is not None:
        if getattr(args, "phase", None) is not None:
            raise ValueError("give --recipe, or the deprecated --phase, not both")
        return args.recipe
    if getattr(args, "phase", None) is None:
        raise ValueError("vlaforge train needs --recipe NAME (one of: " + ", ".join(RECIPES) + ")")
    name = args.phase + ("_tiny" if getattr(args, "model", None) == "tiny" else "")
    print(f"vlaforge train: --phase/--model are deprecated; use --recipe {name}", file=sys.stderr)
    return name


def build_config(args: argparse.Namespace):  # -> TrainerConfig
    """The run the options describe: the recipe at this location, with the --set changes."""
    from vlaforge.training import recipes

    where = recipes.RunLocation(corpus=args.corpus, output=str(args.output), vlm=args.vlm,
                                init_policy=args.init_policy, processor=args.processor,
                                s3_endpoint_url=args.s3_endpoint_url)
    overrides = dict(args.overrides or [])
    if args.no_resume:
        overrides["resume"] = False
    for flag, key in (("on_bad_sample", "loader.bad_samples"),
                      ("max_bad_fraction", "loader.bad_sample_budget.max_fraction")):
        if getattr(args, flag, None) is not None:
            overrides[key] = getattr(args, flag)
    return with_policy_evaluation(recipes.build(_recipe_name(args), where, overrides), args)


def eval_sim_command(args: argparse.Namespace, image_size: tuple[int, int]) -> tuple[str, ...]:
    """`vlaforge eval sim` on the exported policy of a step (`{policy}`, `{output}`: the trainer fills them in), with
    frames at the training size."""
    command = [sys.executable, "-m", "vlaforge.flows.cli", "eval", "sim", "--policy", "{policy}", "--env",
               args.eval_sim, "--episodes", str(args.eval_sim_episodes), "--videos", "0", "--output", "{output}",
               "--image-size", f"{image_size[0]}x{image_size[1]}"]
    if args.eval_sim_max_steps:
        command += ["--max-steps", str(args.eval_sim_max_steps)]
    return tuple(command)


def with_policy_evaluation(config, args: argparse.Namespace):  # TrainerConfig -> TrainerConfig
    """The config with `--eval-sim ENV --eval-sim-every K` as the trainer's policy evaluation."""
    if bool(getattr(args, "eval_sim", None)) != bool(getattr(args, "eval_sim_every", 0)):
        raise ValueError("--eval-sim ENV and --eval-sim-every K go together (K > 0)")
    if not getattr(args, "eval_sim", None):
        return config
    import dataclasses

    return dataclasses.replace(config, policy_eval_every=args.eval_sim_every,
                               policy_eval_command=eval_sim_command(args, tuple(config.loader.robot.image_size)))


def run(args: argparse.Namespace, console: Console) -> int:
    _check_launch(args)
    config = build_config(args)
    document = config.to_dict()
    if args.print_config:
        console.print_json(json.dumps(document))
        return 0
    args.output.mkdir(parents=True, exist_ok=True)
    config_file = args.output / CONFIG_FILE
    _write_atomic(config_file, json.dumps(document, indent=1))  # every node may write it: same bytes, whole
    _write_atomic(args.output / RECIPE_FILE, json.dumps({"recipe": _recipe_name(args),
                                                        "set": dict(args.overrides or [])}, indent=1))
    environment = {**_device_environment(), **_prefect_environment()} if args.eval_sim else _device_environment()
    command = launch_command(args, config_file)
    if command is None:
        os.environ.update(environment)
        from vlaforge.training import train_main

        train_main.run(config, single_process=True)
    else:
        completed = subprocess.run(command, env={**os.environ, **environment}, check=False)
        if completed.returncode != 0:
            console.print(f"[red]training failed[/red] ({command[2]} exit code {completed.returncode})")
            return completed.returncode
    log_file = args.output / "train_log.jsonl"
    if log_file.exists():
        for table in _log_tables(log_file):
            console.print(table)
    if args.eval_sim:
        console.print(_policy_eval_table(args.output, args.eval_sim))
    return 0


def _check_launch(args: argparse.Namespace) -> None:
    for name in ("nproc", "nnodes"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.node_rank is not None and not 0 <= args.node_rank < args.nnodes:
        raise ValueError(f"--node-rank must be in [0, --nnodes={args.nnodes}), got {args.node_rank}")
    if (args.launcher == "deepspeed") != (args.hostfile is not None):
        raise ValueError("--launcher deepspeed goes with --hostfile FILE (and --hostfile with --launcher deepspeed)")
    if args.hostfile is not None and not args.hostfile.is_file():
        raise ValueError(f"--hostfile {args.hostfile}: no such file")


def launch_command(args: argparse.Namespace, config_file: pathlib.Path) -> list[str] | None:
    """The launcher command line for this run, or None to run in this process (one process, one node, torchrun)."""
    entry = ["-m", ENTRY, "--config", str(config_file)]
    if args.launcher == "deepspeed":
        return [sys.executable, "-m", "deepspeed.launcher.runner", "--hostfile", str(args.hostfile),
                "--master_addr", args.master_addr, "--master_port", str(args.master_port), "--module", ENTRY,
                "--config", str(config_file)]
    if args.nnodes == 1 and args.nproc == 1:
        return None
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(args.nproc)]
    if args.nnodes == 1:
        return [*torchrun, "--standalone", *entry]
    if args.node_rank is not None:
        rendezvous = ["--node-rank", str(args.node_rank), "--master-addr", args.master_addr,
                      "--master-port", str(args.master_port)]
    else:
        rdzv_id = args.rdzv_id or hashlib.sha256(str(args.output.resolve()).encode()).hexdigest()[:16]
        rendezvous = ["--rdzv-backend", "c10d", "--rdzv-endpoint", f"{args.master_addr}:{args.master_port}",
                      "--rdzv-id", rdzv_id]
    return [*torchrun, "--nnodes", str(args.nnodes), *rendezvous, *entry]


def _device_environment() -> dict[str, str]:
    """DeepSpeed's CPU accelerator where there is no GPU (it would find it anyway; this makes it explicit)."""
    import torch

    return {} if torch.cuda.is_available() else {"DS_ACCELERATOR": "cpu"}


def _write_atomic(path: pathlib.Path, text: str) -> None:
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    partial.write_text(text)
    os.replace(partial, path)


def _log_tables(log_file: pathlib.Path) -> list[Table]:
    """The last 20 steps: the losses, then the optimizer and the clock. Two tables, so each fits an 80-column
    terminal: rich cuts cells that do not fit, which would cut the losses themselves."""
    lines = [json.loads(line) for line in log_file.read_text().splitlines()][-20:]
    losses = {"step": "step", "loss": "loss", "flow_matching": "flow", "choice": "choice", "next_token": "VL NTP",
              "robot_samples": "robot", "vl_samples": "VL"}
    timing = {"step": "step", "lr": "lr", "grad_norm": "grad norm", "seconds": "s", "data_wait_share": "data wait",
              "samples_per_s": "samples/s"}
    tables = []
    for title, columns in ((f"{log_file}: losses averaged over micro batches and ranks", losses),
                           ("the optimizer and the clock (rank 0's step time; data wait: its share of the step)",
                            timing)):
        table = Table(title=title)
        for label in columns.values():
            table.add_column(label, justify="right", no_wrap=True)
        for line in lines:
            table.add_row(*(_shown(line.get(key), key) for key in columns))
        tables.append(table)
    return tables


def _shown(value, key: str = "") -> str:
    if value is None:
        return "-"
    if key == "data_wait_share":
        return f"{value:.1%}"
    if key == "lr":
        return f"{value:.2e}"
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
