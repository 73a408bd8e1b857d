"""`vlaforge dataset filter|split|merge`: a new robot dataset from existing ones (`flows/dataset_edit.py`), with its
manifest, statistics, options and lineage to the inputs; the samples are the inputs', byte for byte."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.table import Table

from vlaforge.flows.cli_options import add_overwrite_option, add_runner_options


def add_parser(verbs: argparse._SubParsersAction) -> None:
    dataset = verbs.add_parser("dataset", help="filter, re-split or merge robot datasets into a new one")
    actions = dataset.add_subparsers(dest="action", required=True)
    selection = actions.add_parser("filter", help="keep the episodes that meet a selection")
    selection.add_argument("source", help="a robot dataset directory (written by vlaforge ingest or an edit)")
    selection.add_argument("--episode", dest="episodes", action="append", default=[], metavar="ID",
                           help="keep only this episode id (repeatable)")
    selection.add_argument("--exclude-episode", dest="exclude_episodes", action="append", default=[], metavar="ID",
                           help="drop this episode id (repeatable)")
    selection.add_argument("--embodiment", help="keep only this embodiment")
    outcome = selection.add_mutually_exclusive_group()
    outcome.add_argument("--success", dest="success", action="store_const", const=True,
                         help="keep only successful episodes")
    outcome.add_argument("--failed", dest="success", action="store_const", const=False,
                         help="keep only failed episodes")
    selection.add_argument("--min-steps", type=int, help="keep episodes with at least this many steps")
    selection.add_argument("--max-steps", type=int, help="keep episodes with at most this many steps")
    selection.add_argument("--instruction", help="keep episodes whose instruction contains this text (any case)")
    selection.add_argument("--split", dest="splits", action="append", default=[], choices=("train", "validation"),
                           help="keep only this split (repeatable)")
    resplit = actions.add_parser("split", help="give every episode a new train / validation split")
    resplit.add_argument("source", help="a robot dataset directory")
    how = resplit.add_mutually_exclusive_group(required=True)
    how.add_argument("--validation-fraction", type=float, help="episodes in validation, by a hash of the id")
    how.add_argument("--validation-episode", dest="validation_episodes", action="append", metavar="ID",
                     help="this episode goes to validation, every other to train (repeatable)")
    merge = actions.add_parser("merge", help="merge datasets of one embodiment into one")
    merge.add_argument("sources", nargs="+", help="robot dataset directories, in the order they are merged")
    for parser in (selection, resplit, merge):
        parser.add_argument("--output", required=True, help="the new dataset's directory")
        parser.add_argument("--name", help="the new dataset's name, in its shard names (default: --output's name)")
        parser.add_argument("--shard-samples", type=int, help="samples per shard")
        parser.add_argument("--shard-bytes", type=int, default=256 * 2**20, help="bytes per shard (default 256 MiB)")
        add_runner_options(parser)
        add_overwrite_option(parser)


def edit_options(args: argparse.Namespace) -> dict[str, Any]:
    if args.action == "filter":
        keys = ("episodes", "exclude_episodes", "embodiment", "success", "min_steps", "max_steps", "instruction",
                "splits")
        return {key: getattr(args, key) for key in keys if getattr(args, key) not in (None, [])}
    if args.action == "split":
        if args.validation_fraction is not None:
            return {"validation_fraction": args.validation_fraction}
        return {"validation_episodes": args.validation_episodes}
    return {}


def run(args: argparse.Namespace, console: Console) -> int:
    from vlaforge.flows.dataset_edit import edit_dataset

    sources = args.sources if args.action == "merge" else [args.source]
    summary = edit_dataset(
        operation=args.action, sources=sources, output=args.output, options=edit_options(args), name=args.name,
        shard_samples=args.shard_samples, shard_bytes=args.shard_bytes, runner=args.runner,
        ray_address=args.ray_address, workers=args.workers, progress=not args.no_progress, overwrite=args.overwrite)
    table = Table(title=f"dataset {args.action}: {', '.join(sources)} -> {args.output}")
    table.add_column("what")
    table.add_column("count", justify="right")
    rows = [("episodes read", summary["episodes_read"]), ("episodes written", summary["episodes_written"]),
            *((f"steps: {split}", n) for split, n in summary["steps_by_split"].items()),
            ("shards", summary["shards"]), *((f"dropped: {reason}", n) for reason, n in
                                             summary["drops_by_reason"].items())]
    for what, count in rows:
        table.add_row(what, f"{count:,}")
    console.print(table)
    console.print(f"lineage: {args.output}/lineage.parquet (one row per episode: input dataset, manifest sha256, "
                  "shards)", markup=False)
    return 0
