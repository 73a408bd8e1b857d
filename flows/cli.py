"""`vlaforge <verb>`: the command line. The only place that reads the environment and sets up logging.

Each verb is one module with `add_parser(verbs)` and `run(args, console) -> exit code`, listed in `VERBS`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from rich.console import Console

VERBS = {
    "ingest": "vlaforge.flows.ingest_cli",
    "demo": "vlaforge.flows.demo",
    "corpus": "vlaforge.flows.corpus_cli",
    "annotate": "vlaforge.flows.annotate_cli",
    "report": "vlaforge.flows.report_cli",
    "relabel": "vlaforge.flows.relabel_cli",
    "train": "vlaforge.flows.train_cli",
    "serve": "vlaforge.flows.serve_cli",
    "plan": "vlaforge.flows.plan_cli",
}
"""Verb -> the module that defines it. Explicit, so the command line is readable in one place."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vlaforge", description="Robot logs into training shards and checkpoints.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress details")
    verbs = parser.add_subparsers(dest="verb", required=True)
    for module in VERBS.values():
        importlib.import_module(module).add_parser(verbs)
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else argv
    if not {"-v", "--verbose"} & set(arguments):
        # Prefect reads its log level when it is first imported (verb modules import it): set it before parsing.
        # Each flow run's INFO lines would land between the tables; the progress bars and tables say enough.
        os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    args = build_parser().parse_args(arguments)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # Ray Data narrates every dataset execution at INFO; the progress bar and the summary table say enough.
        logging.getLogger("ray").setLevel(logging.WARNING)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    console = Console(stderr=False)
    from vlaforge.datasets.source import SourceError

    try:
        return importlib.import_module(VERBS[args.verb]).run(args, console)
    except (SourceError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)  # plain text: long paths must not be wrapped
        if args.verbose:
            raise
        return 2


if __name__ == "__main__":
    sys.exit(main())
