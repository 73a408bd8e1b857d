"""`vlaforge annotate consensus --detections FILE --images DIR --output PATH`: our consensus, audit tables, samples
and report over detections computed elsewhere (a cluster run, a model we do not wrap), through the
`annotate-detections` flow. The table's layout: `annotators/detection_table.py` and docs/grounding.md."""

from __future__ import annotations

import argparse
import pathlib

from rich.console import Console

from vlaforge.flows.cli_options import add_consensus_options, add_runner_options, apply_settings, consensus_recipe


def add_parser(actions: argparse._SubParsersAction) -> None:
    p = actions.add_parser("consensus", help="decide over a table of precomputed detections (Parquet or JSON Lines)")
    p.add_argument("--detections", required=True, help="the detections table: image, phrase, detector, box, score, "
                   "[mask, negative, error]")
    p.add_argument("--images", required=True, help="where the images are: a directory of files or of WebDataset "
                   "tars")
    p.add_argument("--output", required=True, help="output directory: the VL dataset, its audit tables, and report/")
    p.add_argument("--dataset", help="the dataset's name in the audit (default: the table's file name)")
    p.add_argument("--sam", help="mask the table's boxes with SAM (a transformers directory or an original .pth); "
                   "default: masks only where the table has them")
    p.add_argument("--device", default="auto", help="where SAM runs: auto, cpu or cuda[:N]")
    p.add_argument("--variants", type=lambda text: [v for v in text.split(",") if v],
                   default=["single", "multi", "referring"], help="samples per image")
    p.add_argument("--validation-fraction", type=float, default=0.05, help="images held out (default 0.05)")
    p.add_argument("--images-per-unit", type=int, default=256, help="images per unit of work")
    p.add_argument("--no-report", action="store_true", help="do not build the HTML report")
    add_consensus_options(p)
    add_runner_options(p)


def recipe_from_args(args: argparse.Namespace) -> dict:
    from vlaforge.annotators.detection_table import has_masks

    sam = None
    if args.sam:
        sam = {"model": args.sam, "device": args.device,
               **({"backend": "segment_anything"} if args.sam.endswith((".pth", ".pt")) else {})}
    masks = sam is not None or has_masks(args.detections)
    recipe = {
        "sam": sam,
        "consensus": consensus_recipe(args, masks=masks, why_no_masks="the table has no masks and no --sam runs"),
        "samples": {"variants": args.variants, "validation_fraction": args.validation_fraction},
        "source": {"images_per_unit": args.images_per_unit, **({"dataset": args.dataset} if args.dataset else {})},
        "shards": {},
    }
    return apply_settings(recipe, args.settings)


def run(args: argparse.Namespace, console: Console) -> int:
    from vlaforge.annotators.annotate_recipe import detections_dataset, detections_job
    from vlaforge.flows.annotate import annotate_detections, check_resumable

    recipe = recipe_from_args(args)
    target = pathlib.Path(args.output) / detections_dataset(recipe, args.detections, args.images)
    detections_job(recipe, args.detections, args.images, str(target)).source.build().plan()  # answered before Prefect
    check_resumable(target, recipe)
    result = annotate_detections(
        detections=args.detections, images=args.images, output=args.output, recipe=recipe, runner=args.runner,
        ray_address=args.ray_address, workers=args.workers, progress=not args.no_progress, report=not args.no_report)
    summary = result["summary"]
    console.print(f"{result['dataset']}: {summary['samples']} samples, {summary.get('tables', {}).get('audit', 0)} "
                  f"candidates, dropped {sum(summary['drops_by_reason'].values())}")
    if result.get("report"):
        report = result["report"]
        console.print(f"report: {report['path']} (accepted {report['accepted']}, rejected {report['rejected']}, "
                      f"needs review {report['needs_review']})")
    return 0
