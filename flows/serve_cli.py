"""`vlaforge serve --schedules FILE`: the scheduled flows of a schedule file (`flows/schedules.py`), on a Prefect
server.

Registers every deployment with the server `PREFECT_API_URL` names, then runs in this process each flow run the
server schedules for them (or a user triggers: `prefect deployment run 'ingest/droid-nightly'`) until stopped. A
schedule needs a server that outlives this process, so the embedded API is refused.
"""

from __future__ import annotations

import argparse
import pathlib

from rich.console import Console
from rich.table import Table


def add_parser(verbs: argparse._SubParsersAction) -> None:
    serve = verbs.add_parser("serve", help="serve the scheduled flows of a schedule file on a Prefect server")
    serve.add_argument("--schedules", required=True, type=pathlib.Path,
                       help="TOML file of [[deployment]] entries (see infra/schedules.toml)")
    serve.add_argument("--limit", type=int, default=None, help="flow runs at once in this process (default: no limit)")
    serve.add_argument("--check", action="store_true", help="check the file and list the deployments, then exit")


def run(args: argparse.Namespace, console: Console) -> int:
    from vlaforge.flows.schedules import load_schedules

    schedules = load_schedules(args.schedules)
    table = Table(title=f"{len(schedules)} deployments in {args.schedules}")
    for column in ("deployment", "when", "parameters"):
        table.add_column(column)
    for s in schedules:
        when = (f"cron {s.cron} ({s.timezone})" if s.cron else f"every {s.interval_s:g} s"
                if s.interval_s is not None else "when triggered")
        table.add_row(f"{s.flow}/{s.name}", when, ", ".join(f"{k}={v}" for k, v in sorted(s.parameters.items())))
    console.print(table)
    if args.check:
        return 0
    from prefect import serve
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        console.print("[red]schedules need a Prefect server:[/red] start one (`prefect server start`) and set "
                      "PREFECT_API_URL (e.g. http://127.0.0.1:4200/api)")
        return 2
    serve(*(s.to_deployment() for s in schedules), limit=args.limit)
    return 0
