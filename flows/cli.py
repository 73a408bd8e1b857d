"""`vlaforge <verb>`: the command line. The only place that reads the environment, sets up logging and prints errors:
bad input and environment failures (`failures.py`) as one `error:` line, exit code 2.

Each verb is one module with `add_parser(verbs)` and `run(args, console) -> exit code`, listed in `VERBS`.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from rich.console import Console

from vlaforge.flows.failures import PREFECT_TIMEOUT_SETTING, QuietRunFailures, explain
from vlaforge.flows.object_arguments import mirrored_arguments

VERBS = {
    "ingest": "vlaforge.flows.ingest_cli",
    "demo": "vlaforge.flows.demo",
    "corpus": "vlaforge.flows.corpus_cli",
    "annotate": "vlaforge.flows.annotate_cli",
    "report": "vlaforge.flows.report_cli",
    "relabel": "vlaforge.flows.relabel_cli",
    "train": "vlaforge.flows.train_cli",
    "serve": "vlaforge.flows.serve_cli",
    "inspect": "vlaforge.flows.inspect_cli",
    "dataset": "vlaforge.flows.dataset_cli",
    "export": "vlaforge.flows.export_cli",
    "view": "vlaforge.flows.view_cli",
    "convert": "vlaforge.flows.convert_cli",
    "serve-policy": "vlaforge.flows.serve_policy_cli",
    "eval": "vlaforge.flows.eval_cli",
    "plan": "vlaforge.flows.plan_cli",
}
"""Verb -> the module that defines it. Explicit, so the command line is readable in one place."""
PREFECT_STARTUP_TIMEOUT_S = 90
"""Seconds Prefect's temporary API server gets to start (`PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`)."""


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
    mirrored = mirrored_arguments(arguments) if any("s3://" in argument for argument in arguments) else None
    if mirrored is not None:  # s3:// paths become their local mirrors (flows/object_arguments.py)
        arguments = mirrored.argv
    args = build_parser().parse_args(arguments)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.verbose:
        # Ray Data narrates every dataset execution at INFO; the progress bar and the summary table say enough.
        logging.getLogger("ray").setLevel(logging.WARNING)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # Prefect's default (20 s) is too short for its temporary server on a loaded machine; a user's value wins.
    os.environ.setdefault(PREFECT_TIMEOUT_SETTING, str(PREFECT_STARTUP_TIMEOUT_S))
    if not args.verbose:
        QuietRunFailures().install()  # the failure is printed below, once, not by each failed task and flow run
    console = Console(stderr=False)
    from vlaforge.datasets.source import SourceError

    try:
        return importlib.import_module(VERBS[args.verb]).run(args, console)
    except (SourceError, ValueError) as error:
        return _error(str(error), args.verbose)
    except Exception as error:
        line = explain(error, getattr(args, "output", None))
        if line is None:  # a bug: its traceback is what helps
            raise
        return _error(line, args.verbose)
    finally:
        if mirrored is not None:
            mirrored.push()  # what the run committed reaches the bucket, whether it finished or not


def _error(line: str, verbose: bool) -> int:
    """Print `line` as the run's one error (plain text: long paths must not be wrapped); exit code 2. With -v the
    traceback follows."""
    print(f"error: {line}", file=sys.stderr)
    if verbose:
        raise
    return 2


if __name__ == "__main__":
    sys.exit(main())
