"""`vlaforge annotate --shards URL ... --output PATH`: cross-validated grounding labels, through the `annotate` flow."""

from __future__ import annotations

import argparse
import pathlib
from typing import Any

from rich.console import Console
from rich.table import Table

from vlaforge.annotators.annotate_recipe import default_recipe
from vlaforge.flows import annotate_detections_cli
from vlaforge.flows.cli_options import (
    add_consensus_options,
    add_overwrite_option,
    add_runner_options,
    add_stage_pool_options,
    apply_settings,
    consensus_recipe,
)


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _detector_option(text: str) -> tuple[str, str]:
    kind, eq, model = text.partition("=")
    if not (kind.strip() and eq and model.strip()):
        raise argparse.ArgumentTypeError(f"--detector takes KIND=MODEL (e.g. owlv2=google/owlv2-base-patch16); "
                                         f"got {text!r}")
    return kind.strip(), model.strip()


def add_parser(verbs: argparse._SubParsersAction) -> None:
    p = verbs.add_parser("annotate", help="ground robot shards with several detectors and keep what they agree on")
    p.add_argument("--shards", nargs="+", metavar="URL",
                   help="robot dataset directories written by `vlaforge ingest` (paths or file:// URLs); required")
    p.add_argument("--output", help="output directory: one VL dataset per input, and report/; required")
    annotate_detections_cli.add_parser(p.add_subparsers(dest="action", metavar="consensus"))
    models = p.add_argument_group("detectors and SAM (local dirs or hub ids)")
    models.add_argument("--gdino", default="IDEA-Research/grounding-dino-base", help="Grounding DINO checkpoint")
    models.add_argument("--llmdet", default="iSEE-Laboratory/llmdet_large", help="LLMDet checkpoint")
    models.add_argument("--sam", default="facebook/sam-vit-base",
                        help="SAM checkpoint: a transformers directory or hub id, or Meta's original .pth (run through "
                             "the segment-anything package)")
    models.add_argument("--hosted-url", default="https://api.deepdataspace.com", help="hosted Grounding DINO API")
    models.add_argument("--hosted-model", default="GroundingDino-1.5-Pro", help="the API's model name")
    models.add_argument("--hosted-token-block", help="Prefect Secret block with the API token (default: $DDS_API_TOKEN)")
    models.add_argument("--hosted-poll-interval", type=float, default=1.0, help="seconds between task status polls")
    models.add_argument("--hosted-rate", type=float, default=2.0, help="API requests per second per worker")
    models.add_argument("--without", type=_csv, default=[], metavar="LIST",
                        help="leave out some of: gdino,llmdet,hosted,sam")
    models.add_argument("--detector", dest="extra_detectors", type=_detector_option, action="append", default=[],
                        metavar="KIND=MODEL", help="one more detector of any registered kind (annotators/detectors.py),"
                        " e.g. owlv2=DIR or owlvit=DIR (repeat)")
    models.add_argument("--box-threshold", type=float, default=0.35, help="local detectors' box threshold")
    models.add_argument("--text-threshold", type=float, default=0.25, help="local detectors' text threshold")
    models.add_argument("--batch-size", type=int, default=4, help="images per forward pass")
    models.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    models.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    what = p.add_argument_group("what to ground")
    what.add_argument("--frames", type=_csv, default=["first", "gripper"], help="first,every_k,gripper")
    what.add_argument("--every-k", type=int, default=30, help="step interval of every_k")
    what.add_argument("--cameras", type=_csv, help="cameras to ground (default: all)")
    what.add_argument("--class", dest="ontology", action="append", default=[], help="object always asked (repeat)")
    what.add_argument("--negative", action="append", default=[], help="object that must not be found (repeat)")
    what.add_argument("--phrase-vlm", metavar="SPEC", help="extract phrases with a VLM: local:DIR or http:URL "
                      "(default: offline rules)")
    add_consensus_options(p)
    p.add_argument("--variants", type=_csv, default=["single", "multi", "referring"], help="samples per image")
    p.add_argument("--validation-fraction", type=float, default=0.05, help="episodes held out (default 0.05)")
    p.add_argument("--shards-per-unit", type=int, default=4, help="robot shards per unit of work")
    p.add_argument("--split", default="train", help="robot split to ground ('all' for every split)")
    p.add_argument("--no-report", action="store_true", help="do not build the HTML report")
    add_runner_options(p)
    add_overwrite_option(p)
    add_stage_pool_options(p)


def recipe_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The recipe dict the flow receives (no secret in it)."""
    unknown = set(args.without) - {"gdino", "llmdet", "hosted", "sam"}
    if unknown:
        raise ValueError(f"--without {sorted(unknown)}: choose among gdino, llmdet, hosted, sam")
    masks = "sam" not in args.without
    local = {"box_threshold": args.box_threshold, "text_threshold": args.text_threshold,
             "batch_size": args.batch_size, "device": args.device, "dtype": args.dtype}
    detectors = [
        *([{"kind": "grounding_dino", "model": args.gdino, **local}] if "gdino" not in args.without else []),
        *([{"kind": "llmdet", "model": args.llmdet, **local}] if "llmdet" not in args.without else []),
        *([{"kind": "hosted", "base_url": args.hosted_url, "model": args.hosted_model,
            "api_token_block": args.hosted_token_block, "poll_interval_s": args.hosted_poll_interval,
            "requests_per_second": args.hosted_rate}] if "hosted" not in args.without else []),
        *(_extra_detector(kind, model, args.device) for kind, model in args.extra_detectors),
    ]
    recipe = {
        **default_recipe(),
        "detectors": detectors,
        "sam": None if "sam" in args.without else _sam(args),
        "frames": {"policies": args.frames, "every_k": args.every_k, "cameras": args.cameras},
        "phrases": {"ontology": args.ontology, "negatives": args.negative, "vlm": args.phrase_vlm},
        "consensus": consensus_recipe(args, masks=masks, why_no_masks="--without sam runs no SAM"),
        "samples": {"variants": args.variants, "validation_fraction": args.validation_fraction},
        "source": {"shards_per_unit": args.shards_per_unit, "split": None if args.split == "all" else args.split},
    }
    return apply_settings(recipe, args.settings)


def _sam(args: argparse.Namespace) -> dict[str, Any]:
    """The SAM section: an original `.pth` goes to Meta's package, anything else to transformers."""
    original = args.sam.endswith((".pth", ".pt"))
    return {"model": args.sam, "device": args.device, "dtype": args.dtype,
            **({"backend": "segment_anything"} if original else {})}


def _extra_detector(kind: str, model: str, device: str) -> dict[str, Any]:
    """A `--detector KIND=MODEL` entry; the device goes to families that run locally."""
    import dataclasses

    from vlaforge.annotators.detectors import detector_family

    fields = {field.name for field in dataclasses.fields(detector_family(kind).config)}
    return {"kind": kind, "model": model, **({"device": device} if "device" in fields else {})}


def print_summary(result: dict[str, Any], console: Console) -> None:
    table = Table(title="annotate")
    for column in ("dataset", "episodes", "samples", "candidates", "images", "dropped"):
        table.add_column(column, justify="left" if column == "dataset" else "right")
    for name, summary in result["datasets"].items():
        tables = summary.get("tables", {})
        table.add_row(name, str(summary["episodes_read"]), str(summary["samples"]), str(tables.get("audit", 0)),
                      str(tables.get("audit_frames", 0)), str(sum(summary["drops_by_reason"].values())))
    console.print(table)
    if result.get("report"):
        report = result["report"]
        console.print(f"report: {report['path']} (accepted {report['accepted']}, rejected {report['rejected']}, "
                      f"needs review {report['needs_review']}); `vlaforge report serve {report['directory']}`")


def run(args: argparse.Namespace, console: Console) -> int:
    from vlaforge.annotators.annotate_recipe import annotate_job
    from vlaforge.flows.annotate import annotate, check_resumable, local_root

    if args.action == "consensus":
        return annotate_detections_cli.run(args, console)
    if not args.shards or not args.output:
        raise ValueError("vlaforge annotate needs --shards and --output (or `vlaforge annotate consensus "
                         "--detections FILE` for precomputed detections)")
    recipe = recipe_from_args(args)
    for url in args.shards:  # bad input is answered before Prefect and Ray start
        root = local_root(url)
        annotate_job(recipe, str(root), args.output)
        if not args.overwrite:
            check_resumable(pathlib.Path(args.output) / root.name, recipe)
    result = annotate(
        shards=args.shards, output=args.output, recipe=recipe, runner=args.runner,
        ray_address=args.ray_address, workers=args.workers, num_gpus_per_worker=args.num_gpus,
        stage_pools=dict(args.stage_pools) or None, progress=not args.no_progress, report=not args.no_report,
        overwrite=args.overwrite,
    )
    print_summary(result, console)
    return 0
