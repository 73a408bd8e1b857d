"""`vlaforge export lerobot SHARDS_DIR --output DIR`: a robot dataset of ours as a LeRobot v3.0 dataset
(`pipelines/lerobot_export.py`), through the `export-lerobot` flow."""

from __future__ import annotations

import argparse

from rich.console import Console

from vlaforge.flows.cli_options import add_overwrite_option, add_runner_options


def add_parser(verbs: argparse._SubParsersAction) -> None:
    export = verbs.add_parser("export", help="write a dataset in another tool's format")
    formats = export.add_subparsers(dest="format", required=True)
    lerobot = formats.add_parser("lerobot", help="a LeRobot v3.0 dataset that LeRobot's LeRobotDataset loads")
    lerobot.add_argument("shards", help="a robot dataset directory (written by vlaforge ingest or an edit)")
    lerobot.add_argument("--output", required=True, help="the LeRobot dataset's directory")
    lerobot.add_argument("--codec", choices=("h264", "av1"), default="h264",
                         help="the videos' codec (default h264; av1 is LeRobot's own default, slower to encode)")
    add_runner_options(lerobot)
    add_overwrite_option(lerobot)


def run(args: argparse.Namespace, console: Console) -> int:
    from vlaforge.flows.export import export_lerobot

    summary = export_lerobot(shards=args.shards, output=args.output, codec=args.codec, runner=args.runner,
                             ray_address=args.ray_address, workers=args.workers, progress=not args.no_progress,
                             overwrite=args.overwrite)
    splits = ", ".join(f"{name} {span}" for name, span in summary["splits"].items())
    console.print(f"wrote LeRobot {summary['codebase_version']} dataset {args.output}: {summary['episodes']} episodes "
                  f"({splits}), {summary['frames']:,} frames at {summary['fps']} fps, {summary['tasks']} tasks, "
                  f"cameras {', '.join(summary['cameras'])}", markup=False, soft_wrap=True)
    return 0
