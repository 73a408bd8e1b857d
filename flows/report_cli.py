"""`vlaforge report build|serve`: the auditor's consensus report from the audit tables of `vlaforge annotate`."""

from __future__ import annotations

import argparse
import pathlib

from rich.console import Console

from vlaforge.annotators.audit_table import AuditTable


def audit_directories(paths: list[str]) -> list[pathlib.Path]:
    """Each path's audit directory: the path itself when it holds the tables, else its subdirectories that do
    (an `annotate` output holds one per robot dataset)."""
    found: list[pathlib.Path] = []
    table = f"{AuditTable.FRAMES.value}.parquet"
    for path in map(pathlib.Path, paths):
        below = sorted(p.parent for p in path.glob(f"*/{table}"))
        found += [path] if (path / table).exists() else below
        if not (path / table).exists() and not below:
            raise ValueError(f"{path}: no {table} in it or its subdirectories; run `vlaforge annotate` first")
    return found


def add_parser(verbs: argparse._SubParsersAction) -> None:
    report = verbs.add_parser("report", help="build or serve the grounding consensus report")
    actions = report.add_subparsers(dest="action", required=True)
    build = actions.add_parser("build", help="write a self-contained HTML report from audit tables")
    build.add_argument("audit", nargs="+", help="`vlaforge annotate` output directories (or their dataset dirs)")
    build.add_argument("--output", help="report directory (default: <first audit dir>/report)")
    build.add_argument("--max-cards", type=int, default=400, help="gallery cards at most (default 400)")
    serve = actions.add_parser("serve", help="serve a built report on this machine")
    serve.add_argument("directory", help="the report directory (holding index.html)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")


def run(args: argparse.Namespace, console: Console) -> int:
    from vlaforge.annotators.report_page import ReportOptions, build_report, serve_report

    if args.action == "build":
        directories = audit_directories(args.audit)
        output = pathlib.Path(args.output or pathlib.Path(args.audit[0]) / "report")
        summary = build_report(directories, output, ReportOptions(max_cards=args.max_cards))
        console.print(f"{summary.path}: {summary.candidates} candidates on {summary.images} images; accepted "
                      f"{summary.accepted}, rejected {summary.rejected}, needs review {summary.needs_review}")
        return 0
    server = serve_report(pathlib.Path(args.directory), host=args.host, port=args.port)
    console.print(f"serving {args.directory} at http://{args.host}:{server.server_address[1]}/ (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
