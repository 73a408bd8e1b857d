"""`vlaforge ingest SOURCE`: one robot dataset into WebDataset shards, through the `ingest` flow (a VL dataset, when the
format's source yields VL rows, through `vl_ingest_cli`)."""

from __future__ import annotations

import argparse
from typing import Any

from rich.console import Console
from rich.table import Table

from vlaforge.datasets.registry import SOURCES, Yields, input_format
from vlaforge.flows.cli_options import add_overwrite_option, add_runner_options, height_width, key_value
from vlaforge.flows.vl_ingest_cli import add_vl_options, run_vl_ingest


def add_parser(verbs: argparse._SubParsersAction) -> None:
    ingest = verbs.add_parser("ingest", help="ingest a robot dataset into WebDataset shards")
    ingest.add_argument("source", choices=sorted(SOURCES), help="input format")
    ingest.add_argument("--input", required=True, help="dataset directory (DROID: the version dir, e.g. droid/1.0.1)")
    ingest.add_argument("--output", required=True, help="output directory for shards, manifest and tables")
    ingest.add_argument("--chunk-len", type=int, default=32, help="actions per step's chunk, T_max (default 32)")
    ingest.add_argument("--validation-fraction", type=float, default=0.05, help="episodes held out (default 0.05)")
    ingest.add_argument("--min-steps", type=int, default=10, help="drop shorter episodes (default 10)")
    ingest.add_argument("--keep-failed", action="store_true", help="keep episodes marked as failed")
    ingest.add_argument("--no-trim-idle", action="store_true", help="keep still stretches at start and end")
    ingest.add_argument("--idle-threshold", type=float, default=1e-3, help="state change that counts as motion")
    ingest.add_argument("--shard-samples", type=int, help="samples per shard")
    ingest.add_argument("--shard-bytes", type=int, default=256 * 2**20, help="bytes per shard (default 256 MiB)")
    ingest.add_argument("--frame-size", type=height_width, help="HEIGHTxWIDTH of stored frames (default: native)")
    ingest.add_argument("--jpeg-quality", type=int, default=90, help="quality of re-encoded frames (default 90)")
    ingest.add_argument("--verify-jpeg", choices=("header", "scan", "full"), default="scan",
                        help="scan (default): a 1/8-scale decode that reads every frame's entropy-coded data, so "
                             "damaged frames are caught; header: markers and header only; full: decode every frame")
    ingest.add_argument("--set", dest="source_options", type=key_value, action="append", default=[],
                        metavar="KEY=VALUE", help="a source option, e.g. --set files_per_unit=4")
    add_runner_options(ingest)
    add_overwrite_option(ingest)
    add_vl_options(ingest)


def ingest_options(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "chunk_len": args.chunk_len,
        "validation_fraction": args.validation_fraction,
        "min_steps": args.min_steps,
        "keep_failed": args.keep_failed,
        "trim_idle": not args.no_trim_idle,
        "idle_threshold": args.idle_threshold,
        "shard_max_samples": args.shard_samples,
        "shard_max_bytes": args.shard_bytes,
        "frame_size": args.frame_size,
        "jpeg_quality": args.jpeg_quality,
        "verify_jpeg": args.verify_jpeg,
    }


def print_report(report: dict[str, Any], console: Console) -> None:
    """The final summary table of one ingest run."""
    table = Table(title=f"ingest: {report['dataset']} -> {report['output']}")
    table.add_column("what")
    table.add_column("count", justify="right")
    rows = [
        ("units (finished earlier)", f"{report['units']} ({report['units_resumed']})"),
        ("episodes read", report["episodes_read"]),
        ("episodes written", report["episodes_written"]),
        *((f"steps: {split}", n) for split, n in report["steps_by_split"].items()),
        ("shards", report["shards"]),
        ("shard bytes", f"{report['bytes']:,}"),
        *((f"dropped: {reason}", n) for reason, n in report["drops_by_reason"].items()),
        ("quarantined episodes", report["quarantined"]),
        *_resampling_rows(report.get("resampling") or {}),
    ]
    for what, count in rows:
        table.add_row(what, str(count))
    console.print(table)


def _resampling_rows(summary: dict[str, Any]) -> list[tuple[str, str]]:
    """Rows of the timeline summary (teleop sources): outcomes, gaps, and per role how far ticks are from the
    measurements they took."""
    if not summary:
        return []
    outcomes = ", ".join(f"{n} {outcome}" for outcome, n in summary["outcomes"].items())
    rows = [
        ("resampled episodes", f"{summary['episodes']} ({outcomes})"),
        ("timeline ticks", f"{summary['ticks']:,}"),
        (f"gaps > {summary['gap_threshold_s'] * 1e3:g} ms", str(summary["gaps"])),
    ]
    for role, stats in summary["roles"].items():
        rows.append((f"{role}: |tick-sample| max/mean, dup, skip",
                     f"{stats['max_offset_ms']:.1f} / {stats['mean_offset_ms']:.1f} ms, {stats['duplicated']:,}, "
                     f"{stats['skipped']:,}"))
    return rows


def run(args: argparse.Namespace, console: Console) -> int:
    if input_format(args.source).yields is Yields.VL_ROWS:
        return run_vl_ingest(args, console)
    from vlaforge.flows.ingest import ingest

    report = ingest(
        source=args.source, input_path=args.input, output=args.output, options=ingest_options(args),
        source_options=dict(args.source_options), runner=args.runner, ray_address=args.ray_address,
        workers=args.workers, progress=not args.no_progress, overwrite=args.overwrite,
    )
    print_report(report, console)
    return 0
