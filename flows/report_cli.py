"""`vlaforge report build|serve|export-review|import-review`: the auditor's report from the audit tables of
`vlaforge annotate` (and the quality gates of any VL dataset), and the review loop: candidates out to a review tool
as COCO JSON, reviewers' decisions back as overrides the next consensus run applies (`--reviews`)."""

from __future__ import annotations

import argparse
import pathlib

from rich.console import Console

from vlaforge.annotators.audit_table import AuditTable

SUMMARY = "summary.json"


def audit_directories(paths: list[str]) -> list[pathlib.Path]:
    """Each path's dataset directories: the path itself when it holds audit tables (or a VL dataset's summary),
    else its subdirectories that do (an `annotate` output holds one per robot dataset)."""
    found: list[pathlib.Path] = []
    table = f"{AuditTable.FRAMES.value}.parquet"
    for path in map(pathlib.Path, paths):
        if (path / table).exists() or (path / SUMMARY).exists():
            found.append(path)
            continue
        below = sorted({p.parent for pattern in (f"*/{table}", f"*/{SUMMARY}") for p in path.glob(pattern)})
        if not below:
            raise ValueError(f"{path}: no {table} or {SUMMARY} in it or its subdirectories; run `vlaforge annotate` "
                             "first")
        found += below
    return found


def add_parser(verbs: argparse._SubParsersAction) -> None:
    report = verbs.add_parser("report", help="the grounding consensus report, and the review loop")
    actions = report.add_subparsers(dest="action", required=True)
    build = actions.add_parser("build", help="write the report (a page and its gallery's data) from audit tables")
    build.add_argument("audit", nargs="+", help="`vlaforge annotate` output directories (or their dataset dirs)")
    build.add_argument("--output", help="report directory (default: <first audit dir>/report)")
    build.add_argument("--per-stratum", type=int, default=12, help="gallery sample per dataset, phrase, decision")
    build.add_argument("--max-cards", type=int, default=2000, help="gallery images at most (default 2000)")
    build.add_argument("--seed", type=int, default=0, help="the gallery sample's seed")
    serve = actions.add_parser("serve", help="serve a built report on this machine")
    serve.add_argument("directory", help="the report directory (holding index.html)")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    export = actions.add_parser("export-review", help="candidates as COCO JSON with scores, for CVAT, Label Studio "
                                "or FiftyOne")
    export.add_argument("audit", nargs="+", help="`vlaforge annotate` output directories (or their dataset dirs)")
    export.add_argument("--output", required=True, help="the COCO JSON file (its images are written beside it)")
    export.add_argument("--decision", default="needs_review",
                        help="decisions to export, comma-separated (default needs_review)")
    imported = actions.add_parser("import-review", help="a reviewed COCO JSON back as overrides (reviews.parquet)")
    imported.add_argument("file", help="the COCO JSON the review tool exported")
    imported.add_argument("--audit", required=True, help="the dataset directory whose candidates were reviewed")
    imported.add_argument("--reviewer", required=True, help="who reviewed (recorded with every decision)")


def run(args: argparse.Namespace, console: Console) -> int:
    from vlaforge.annotators.report_gallery import GalleryOptions
    from vlaforge.annotators.report_page import ReportOptions, build_report, serve_report
    from vlaforge.annotators.review_decisions import import_reviews
    from vlaforge.annotators.review_export import export_review

    if args.action == "build":
        directories = audit_directories(args.audit)
        output = pathlib.Path(args.output or pathlib.Path(args.audit[0]) / "report")
        gallery = GalleryOptions(per_stratum=args.per_stratum, max_cards=args.max_cards, seed=args.seed)
        summary = build_report(directories, output, ReportOptions(gallery=gallery))
        console.print(f"{summary.path}: {summary.candidates} candidates on {summary.images} images; accepted "
                      f"{summary.accepted}, rejected {summary.rejected}, needs review {summary.needs_review}; "
                      f"{summary.cards} in the gallery (`vlaforge report serve {output}`)")
        return 0
    if args.action == "export-review":
        decisions = [d.strip() for d in args.decision.split(",") if d.strip()]
        summary = export_review(audit_directories(args.audit), pathlib.Path(args.output), decisions=decisions)
        console.print(f"{summary.path}: {summary.candidates} candidates on {summary.images} images"
                      + (f"; {summary.without_image} left out (no stored image: annotate with --set "
                         "consensus.keep_images=all)" if summary.without_image else ""))
        return 0
    if args.action == "import-review":
        summary = import_reviews(args.file, args.audit, reviewer=args.reviewer)
        console.print(f"{summary.path}: accepted {summary.accepted}, rejected {summary.rejected}, corrected "
                      f"{summary.corrected}, unchanged {summary.unchanged}; apply them with `--reviews "
                      f"{summary.path}` on the next consensus run (a new --output)")
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
