"""Command-line options and output shared by several `vlaforge` verbs (one home, so the verbs never import each
other)."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from rich.console import Console
from rich.table import Table


def height_width(text: str) -> tuple[int, int]:
    """An image-size option's HEIGHTxWIDTH value (argparse names the option in its error)."""
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes HEIGHTxWIDTH, e.g. 180x320; got {text!r}") from None
    return height, width


def key_value(text: str) -> tuple[str, Any]:
    """A `--set KEY=VALUE` option's value: VALUE parsed as JSON, or kept as a plain string."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"--set takes KEY=VALUE (VALUE as JSON, or a plain string); got {text!r}")
    key, raw = text.split("=", 1)
    try:
        return key, json.loads(raw)
    except json.JSONDecodeError:
        return key, raw


def add_runner_options(parser: argparse.ArgumentParser) -> None:
    """Where the parallel work runs: options shared by every verb that runs a flow on Ray Data."""
    parser.add_argument("--runner", choices=("ray", "local"), default="ray",
                        help="ray: Ray Data actor pool (default); local: this process only")
    parser.add_argument("--ray-address", default=os.environ.get("RAY_ADDRESS"),
                        help="join this Ray cluster (default: $RAY_ADDRESS, else start a local one)")
    parser.add_argument("--workers", type=int, help="parallel workers (default: one per CPU)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")



def stage_pool(text: str) -> tuple[str, dict[str, float]]:
    """A `--stage-pool NAME=num_gpus=0.5,actors=2,num_cpus=1` option's value: a pooled stage's placement on Ray."""
    name, _, fields = text.partition("=")
    placement: dict[str, float] = {}
    for part in filter(None, fields.split(",")):
        key, _, value = part.partition("=")
        if key not in ("num_gpus", "num_cpus", "actors"):
            raise argparse.ArgumentTypeError(f"--stage-pool {text!r}: {key!r} is not one of num_gpus, num_cpus, actors")
        try:
            placement[key] = int(value) if key == "actors" else float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"--stage-pool {text!r}: {key} takes a number, got {value!r}") from None
    if not name or not placement:
        raise argparse.ArgumentTypeError(f"--stage-pool takes NAME=num_gpus=G,actors=N,num_cpus=C; got {text!r}")
    return name, placement


def add_stage_pool_options(parser: argparse.ArgumentParser) -> None:
    """Where the model stages run on a Ray cluster: each in its own actor pool (`pipelines/stage_pools.py`)."""
    parser.add_argument("--num-gpus", type=float, default=0,
                        help="GPUs per actor of every model stage's pool (fractions share a GPU; default 0)")
    parser.add_argument("--stage-pool", dest="stage_pools", type=stage_pool, action="append", default=[],
                        metavar="NAME=num_gpus=G,actors=N",
                        help="one model stage's pool, by name (e.g. grounding_dino, llmdet, sam, vlm)")


def print_vl_summary(summary: dict[str, Any], console: Console, title: str) -> None:
    """The counts of one VL run (relabel or VL ingest)."""
    table = Table(title=f"{title}: {summary['dataset']} ({summary['task']}) -> {summary['shards']} shards")
    table.add_column("what")
    table.add_column("count", justify="right")
    rows = [("units", summary.get("units")), ("inputs read", summary.get("episodes_read")),
            *((f"samples: {split}", n) for split, n in summary["samples_by_split"].items()),
            ("shard bytes", f"{summary['bytes']:,}"),
            *((f"dropped: {reason}", n) for reason, n in summary.get("drops_by_reason", {}).items()),
            ("quarantined", summary.get("quarantined")),
            *((f"rows: {status}", n) for status, n in summary.get("rows", {}).items())]
    for what, count in rows:
        table.add_row(what, str(count))
    console.print(table)
