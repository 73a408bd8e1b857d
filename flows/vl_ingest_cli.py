"""`vlaforge ingest vl-parquet` (any format whose source yields VL rows, `datasets/registry.py`): a general VL dataset
into VL shards through the `ingest-vl` flow.

`ingest_cli` owns the verb; this module adds the options only VL datasets have and runs the flow.
"""

from __future__ import annotations

import argparse

from rich.console import Console

from vlaforge.datasets.registry import Yields, formats_yielding
from vlaforge.datasets.schema import VlTask
from vlaforge.flows.cli_options import print_vl_summary


def add_vl_options(ingest: argparse.ArgumentParser) -> None:
    group = ingest.add_argument_group(f"{', '.join(formats_yielding(Yields.VL_ROWS))} only")
    group.add_argument("--dataset", help="the VL dataset name (default: the input file or directory name)")
    group.add_argument("--task", choices=[t.value for t in VlTask],
                       help="what the dataset teaches (default: the format's: grounding for refcoco, caption for "
                            "caption-parquet and vl-webdataset, general otherwise)")
    group.add_argument("--limit", type=int, help="at most this many rows, after deduplication, in dataset order")
    group.add_argument("--no-dedup", action="store_true",
                       help="keep rows that repeat an earlier row's images and conversation")
    group.add_argument("--near-duplicates", choices=("report", "drop", "off"), default="report",
                       help="near-duplicate images of earlier rows: count them in the summary (default), drop them, "
                            "or do not look")
    group.add_argument("--image-root", help="where image paths resolve (default: the dataset directory)")
    group.add_argument("--max-side", type=int, help="shrink images larger than this on their long side")
    group.add_argument("--dataset-version", default="unknown", help="upstream version or commit, for provenance")


def run_vl_ingest(args: argparse.Namespace, console: Console) -> int:
    from vlaforge.flows.vl_ingest import ingest_vl

    source_options = dict(args.source_options)
    if args.image_root:
        source_options["image_root"] = args.image_root
    sample_options = {"validation_fraction": args.validation_fraction, "jpeg_quality": args.jpeg_quality,
                      "max_side": args.max_side, "dataset_version": args.dataset_version}
    summary = ingest_vl(
        input_path=args.input, output=args.output, dataset=args.dataset, task=args.task, limit=args.limit,
        dedup=not args.no_dedup, near_duplicates=args.near_duplicates, source_options=source_options,
        sample_options=sample_options,
        shard_samples=args.shard_samples or 2000, shard_bytes=args.shard_bytes, runner=args.runner,
        ray_address=args.ray_address, workers=args.workers, progress=not args.no_progress, input_format=args.source,
        overwrite=args.overwrite,
    )
    print_vl_summary(summary, console, f"ingest {args.source}")
    return 0
