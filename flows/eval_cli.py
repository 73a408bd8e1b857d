"""`vlaforge eval sim|offline|vl`: evaluate a checkpoint, through the `evaluate` flow (`flows/evaluate.py`).

    vlaforge eval sim --policy DIR|ws://HOST:PORT --env aloha-transfer-cube [--episodes 50] [--mode sync|async]
                      [--seed 0] [--videos 4] --output DIR
    vlaforge eval offline --policy DIR --corpus URL [--split validation] [--output DIR]
    vlaforge eval vl --vlm DIR [--vlm DIR2] --benchmark pope --data FILE [--benchmark mme --data DIR] [--output DIR]
"""

from __future__ import annotations

import argparse
import pathlib
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from vlaforge.flows.cli_options import height_width

SIM_ENVS = ("aloha-transfer-cube", "aloha-insertion", "libero-spatial", "libero-object", "libero-goal", "libero-10")
VL_BENCHMARKS = ("pope", "mmbench", "mme")
"""`evaluation/sim_envs.py` SIM_ENVS and `evaluation/vl_retention.py` VL_BENCHMARKS, listed here so that `vlaforge
--help` imports neither MuJoCo nor torch (a test holds them equal)."""


def add_parser(verbs: argparse._SubParsersAction) -> None:
    evaluation = verbs.add_parser("eval", help="evaluate a checkpoint: closed loop in simulation, offline on held-out "
                                               "episodes, or VL retention")
    kinds = evaluation.add_subparsers(dest="kind", required=True)
    _add_sim(kinds.add_parser("sim", help="closed-loop episodes in a simulator against the policy server"))
    _add_offline(kinds.add_parser("offline", help="the policy's chunks against held-out episodes"))
    _add_vl(kinds.add_parser("vl", help="VLMs on VL benchmarks from local files, side by side"))


def _add_sim(sim: argparse.ArgumentParser) -> None:
    sim.add_argument("--policy", required=True, help="policy directory (a server starts for the run) or ws://HOST:PORT")
    sim.add_argument("--env", required=True, choices=SIM_ENVS, help="simulated environment")
    sim.add_argument("--output", required=True, type=pathlib.Path, help="results.json, summary.html, videos/")
    sim.add_argument("--episodes", type=int, default=50, help="episodes per task (default 50)")
    sim.add_argument("--mode", choices=("sync", "async"), default="sync", help="chunk execution (default sync)")
    sim.add_argument("--seed", type=int, default=0, help="environment and noise seed (default 0)")
    sim.add_argument("--videos", type=int, default=4, help="episodes recorded as mp4 (default 4)")
    sim.add_argument("--tasks", type=int, nargs="+", help="task indices of a LIBERO suite (default: all 10)")
    sim.add_argument("--max-steps", type=int, help="episode step limit (default: the benchmark's)")
    sim.add_argument("--execute-steps", type=int, help="T_e, actions executed per chunk (default: half the chunk)")
    sim.add_argument("--prefix-steps", type=int, default=1, help="smallest Δtc in async mode (default 1)")
    sim.add_argument("--latency-ticks", type=int, help="simulated Δt_inf in control ticks (default: 80 ms)")
    sim.add_argument("--device", default="cpu", help="device of a policy directory's model (default cpu)")
    sim.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="model dtype (default: as saved)")
    sim.add_argument("--observation-map", type=pathlib.Path, help="server observation map (default: the policy's, "
                                                                    "else the environment's)")
    sim.add_argument("--image-size", type=height_width, help="HEIGHTxWIDTH frames reach the model at")
    sim.add_argument("--env-python", help="Python of the environment process (LIBERO: its own venv's)")


def _add_offline(offline: argparse.ArgumentParser) -> None:
    offline.add_argument("--policy", required=True, type=pathlib.Path, help="exported policy directory")
    offline.add_argument("--corpus", required=True, help="corpus manifest: path, file://, http(s):// or s3://")
    offline.add_argument("--split", default="validation", help="held-out split (default validation)")
    offline.add_argument("--seed", type=int, default=0, help="noise seed (default 0)")
    offline.add_argument("--max-samples", type=int, help="stop after this many robot samples")
    offline.add_argument("--image-size", type=height_width, help="HEIGHTxWIDTH (default: the policy's map, or 224)")
    offline.add_argument("--device", default="cpu", help="(default cpu)")
    offline.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), help="(default: as saved)")
    offline.add_argument("--output", type=pathlib.Path, help="write offline_results.json here")


def _add_vl(vl: argparse.ArgumentParser) -> None:
    vl.add_argument("--vlm", required=True, action="append", help="Qwen3-VL directory (or local:ID, http:URL); "
                                                                   "twice to compare, the first as reference")
    vl.add_argument("--benchmark", required=True, action="append", choices=VL_BENCHMARKS,
                    help="benchmark; repeat, each with its --data")
    vl.add_argument("--data", required=True, action="append", help="the benchmark's files, in the order of "
                                                                    "--benchmark")
    vl.add_argument("--output", type=pathlib.Path, help="write vl_results.json and the answers here")
    vl.add_argument("--batch-size", type=int, default=8, help="questions per generate call (default 8)")
    vl.add_argument("--max-new-tokens", type=int, default=16, help="answer length limit (default 16)")
    vl.add_argument("--device", default="auto", help="auto, cpu, cuda (default auto)")
    vl.add_argument("--dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"))


def options_of(args: argparse.Namespace) -> dict[str, Any]:
    """The flow's options (its config's fields, JSON-able) for the parsed command line."""
    if args.kind == "sim":
        return {"policy": args.policy, "env": args.env, "output": str(args.output), "episodes": args.episodes,
                "mode": args.mode, "seed": args.seed, "videos": args.videos,
                "tasks": tuple(args.tasks) if args.tasks else None, "max_steps": args.max_steps,
                "execute_steps": args.execute_steps, "prefix_steps": args.prefix_steps,
                "latency_ticks": args.latency_ticks, "device": args.device, "dtype": args.dtype,
                "observation_map": str(args.observation_map) if args.observation_map else None,
                "image_size": args.image_size, "env_python": args.env_python}
    if args.kind == "offline":
        return {"policy": str(args.policy), "corpus": args.corpus, "split": args.split, "seed": args.seed,
                "max_samples": args.max_samples, "image_size": args.image_size, "device": args.device,
                "dtype": args.dtype, "output": str(args.output) if args.output else None}
    if len(args.benchmark) != len(args.data):
        raise ValueError(f"give one --data per --benchmark: {len(args.benchmark)} benchmarks, {len(args.data)} paths")
    return {"vlms": tuple(args.vlm), "benchmarks": tuple(zip(args.benchmark, args.data)),
            "output": str(args.output) if args.output else None, "batch_size": args.batch_size,
            "max_new_tokens": args.max_new_tokens, "device": args.device, "dtype": args.dtype}


def run(args: argparse.Namespace, console: Console) -> int:
    from vlaforge.flows.evaluate import evaluate

    results = evaluate(kind=args.kind, options=options_of(args))
    console.print({"sim": sim_table, "offline": offline_table, "vl": vl_table}[args.kind](results))
    if args.kind == "sim":
        console.print(f"{args.output / 'results.json'}; open {args.output / 'summary.html'}", markup=False)
    return 0


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def sim_table(results: dict[str, Any]) -> Table:
    """Per task and overall, narrow enough for 80 columns; lengths, steps/s, the time split and the videos are on
    the summary page."""
    settings = results["settings"]
    table = Table(title=f"{settings['env']}, {settings['mode']} execution: {results['overall']['episodes']} episodes",
                  box=box.SIMPLE)
    for column in ("task", "success", "95% CI", "return", "p50 ms", "act/inf", "starved"):
        table.add_column(column, justify="left" if column == "task" else "right", no_wrap=column != "task")
    for name, metrics in [*results["tasks"].items(), ("overall", results["overall"])]:
        low, high = metrics["success_ci95"]
        table.add_row(name, f"{metrics['successes']}/{metrics['episodes']}", f"{low:.0%}-{high:.0%}",
                      f"{metrics['mean_return']:.1f}", _ms(metrics["latency_ms"]["p50"]),
                      f"{metrics['actions_per_inference']:.1f}", str(metrics["starved_ticks"]))
    return table


def offline_table(results: dict[str, Any]) -> Table:
    table = Table(title=f"offline: {results['settings']['corpus']} ({results['settings']['split']}), robot units")
    for column in ("embodiment", "samples", "L1", "MSE", "L1 step 1 / T", "choice L1 top / best", "top = best"):
        table.add_column(column, no_wrap=column == "embodiment")
    for name, entry in results["embodiments"].items():
        flow = entry["flow_matching"]
        choice = entry.get("choice_policies")
        table.add_row(name, str(entry["samples"]), f"{flow['l1']:.4f}", f"{flow['mse']:.4f}",
                      f"{flow['l1_by_step'][0]:.3f} / {flow['l1_by_step'][-1]:.3f}",
                      "-" if choice is None else f"{choice['top_scored']['l1']:.3f} / {choice['best_of_n']['l1']:.3f}",
                      "-" if choice is None else _percent(choice["top_picks_best"]))
    return table


def vl_table(results: dict[str, Any]) -> Table:
    labels = list(results["vlms"])
    table = Table(title="VL retention: accuracy per benchmark")
    table.add_column("benchmark")
    for row_key in results["comparison"][0]:
        if row_key != "benchmark":
            table.add_column(row_key, justify="right")
    for row in results["comparison"]:
        cells = [row["benchmark"]]
        for key, value in row.items():
            if key == "benchmark":
                continue
            cells.append(f"{value:+.1%}" if key not in labels else _percent(value))
        table.add_row(*cells)
    return table
