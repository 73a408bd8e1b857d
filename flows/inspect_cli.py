"""`vlaforge inspect RAW_PATH`: what a raw dataset holds and how vlaforge would read it, before any ingest; ends with
the `vlaforge ingest` line to run (`datasets/inspection.py`)."""

from __future__ import annotations

import argparse
import pathlib

from rich.console import Console
from rich.table import Table


def add_parser(verbs: argparse._SubParsersAction) -> None:
    inspect = verbs.add_parser("inspect", help="show what a raw dataset holds and the ingest command for it")
    inspect.add_argument("path", type=pathlib.Path,
                         help="a raw dataset: MCAP logs, ALOHA HDF5 episodes, an RLDS (TFDS) version directory or "
                              "a LeRobot dataset (a directory, or one log or episode file)")
    inspect.add_argument("--max-files", type=int, default=20, help="logs or episode files read in detail (default 20)")
    inspect.add_argument("--output", help="the --output of the suggested command (default: shards/<name>)")


def run(args: argparse.Namespace, console: Console) -> int:
    from vlaforge.datasets.inspection import inspect_raw

    report = inspect_raw(args.path, max_files=args.max_files)
    console.print(f"{args.path}: {report.format}", markup=False)
    for line in report.summary:
        console.print(f"  {line}", markup=False, soft_wrap=True)
    for section in report.tables:
        table = Table(title=section.title)
        for column in section.columns:
            table.add_column(column, overflow="fold")
        for row in section.rows:
            table.add_row(*row)
        console.print(table)
    for problem in report.problems:
        console.print(f"problem: {problem}", markup=False, soft_wrap=True)
    console.print("suggested:", markup=False)
    console.print(f"  {report.command(args.output)}", markup=False, soft_wrap=True)
    return 0
