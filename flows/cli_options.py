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


def add_overwrite_option(parser: argparse.ArgumentParser) -> None:
    """`--overwrite`: every verb that writes a dataset (its output remembers the options it was written with)."""
    parser.add_argument("--overwrite", action="store_true",
                        help="start the output over, removing what earlier runs wrote (a rerun with other options "
                             "is refused without it)")



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
    rows += [(f"gate {gate}: dropped / checked", f"{g['dropped']} / {g['checked']} ({g['drop_rate']:.1%})")
             for gate, g in summary.get("gates", {}).items()]
    for what, count in rows:
        table.add_row(what, str(count))
    console.print(table)


DEFAULT_MASK_IOU = 0.6
"""The SAM mask IoU two detectors need to agree on, when masks are judged."""


def recipe_setting(text: str) -> tuple[str, str, Any]:
    """A `--set SECTION.KEY=VALUE` option: VALUE parsed as JSON, or kept as a plain string."""
    section, _, rest = text.partition(".")
    key, eq, raw = rest.partition("=")
    if not (section and key and eq):
        raise argparse.ArgumentTypeError(f"--set takes SECTION.KEY=VALUE (e.g. consensus.keep_images=all); got {text!r}")
    try:
        return section, key, json.loads(raw)
    except json.JSONDecodeError:
        return section, key, raw


def score_threshold(text: str) -> tuple[str, float]:
    """A `--score-threshold DETECTOR=SCORE` option."""
    name, _, value = text.partition("=")
    try:
        score = float(value)
    except ValueError:
        score = float("nan")
    if not name.strip() or score != score:
        raise argparse.ArgumentTypeError(f"--score-threshold takes DETECTOR=SCORE (e.g. owlv2=0.1); got {text!r}")
    return name.strip(), score



def add_consensus_options(parser: argparse.ArgumentParser) -> None:
    """The consensus thresholds and `--set`, shared by `vlaforge annotate` and `vlaforge annotate consensus`."""
    rules = parser.add_argument_group("consensus")
    rules.add_argument("--min-votes", type=int, default=2, help="k: detectors that must agree (default 2)")
    rules.add_argument("--box-iou", type=float, default=0.6, help="box IoU for two detectors to agree")
    rules.add_argument("--mask-iou", type=float, default=None,
                       help=f"mask IoU for two detectors to agree (default {DEFAULT_MASK_IOU} when masks exist; "
                            "without masks they are not judged: box-only consensus)")
    rules.add_argument("--score-threshold", dest="score_thresholds", type=score_threshold, action="append",
                       default=[], metavar="DETECTOR=SCORE", help="a detector's own score test (repeat; scores are not "
                       "comparable across detectors). Calibrations: --set consensus.detector_scores='[{...}]'")
    rules.add_argument("--review-margin", type=float, default=0.1, help="borderline band below the thresholds")
    rules.add_argument("--reviews", help="a reviews.parquet (`vlaforge report import-review`) whose decisions "
                       "override the consensus")
    parser.add_argument("--set", dest="settings", type=recipe_setting, action="append", default=[],
                        metavar="SECTION.KEY=VALUE", help="any other recipe field, e.g. --set consensus.keep_images=all")


def consensus_recipe(args: argparse.Namespace, *, masks: bool, why_no_masks: str) -> dict[str, Any]:
    """The recipe's consensus section from the options of `add_consensus_options`."""
    if not masks and args.mask_iou is not None:
        raise ValueError(f"--mask-iou judges masks, and {why_no_masks}: leave --mask-iou out for box-only "
                         "consensus")
    return {
        "min_votes": args.min_votes, "box_iou": args.box_iou,
        "mask_iou": (args.mask_iou if args.mask_iou is not None else DEFAULT_MASK_IOU) if masks else None,
        "review_margin": args.review_margin,
        **({"detector_scores": [{"detector": name, "threshold": value} for name, value in args.score_thresholds]}
           if args.score_thresholds else {}),
        **({"reviews": args.reviews} if args.reviews else {}),
    }


def apply_settings(recipe: dict[str, Any], settings: list[tuple[str, str, Any]]) -> dict[str, Any]:
    """`--set SECTION.KEY=VALUE` options applied to a recipe's sections."""
    for section, key, value in settings:
        if section not in recipe or not isinstance(recipe[section], dict):
            sections = ", ".join(name for name, options in recipe.items() if isinstance(options, dict))
            raise ValueError(f"--set {section}.{key}: {section!r} is not a recipe section with options ({sections})")
        recipe[section][key] = value
    return recipe
