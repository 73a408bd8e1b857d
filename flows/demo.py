"""`vlaforge demo`: the whole pipeline, as far as it is built, on built-in sample data, with no network and no weights.

Raw episodes in, a few training steps out, each step through the flow or API its CLI verb uses:
1. five robot datasets in their published formats -> the `ingest` flow -> robot shards;
2. a general VL Parquet file -> the `ingest-vl` flow -> VL shards;
3. the `relabel` flow on the DROID shards: trajectories (projection, no VLM) and captions (a tiny random-weight
   Qwen3-VL: noise);
4. the `annotate` flow on the DROID shards (tiny random-weight Grounding DINO, LLMDet, SAM) and the auditor's report;
5. a corpus manifest over every dataset, and what `vlaforge corpus inspect` prints;
6. `CorpusLoader` batches of both kinds; 7. three AdamW steps of the tiny VLA model, step 2's policy evaluated
   closed loop while the training waits (`vlaforge train --eval-sim`); 8. a short closed-loop episode of the
   exported policy in gym-aloha, through the policy server (`vlaforge eval sim`).

Everything goes under `--output`; `demo_summary.json` there lists what ran, the counts, the paths and the losses.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time
from typing import Any

from rich.console import Console
from rich.table import Table

from vlaforge.datasets.schema import VlTask
from vlaforge.flows.cli_options import add_runner_options
from vlaforge.flows.demo_steps import (
    DemoDataset,
    DemoSizes,
    build_demo_corpus,
    component_counts,
    ground,
    ingest_general_vl,
    ingest_robot,
    relabel_robot,
)
from vlaforge.pipelines.corpus_manifest import ComponentKind

SUMMARY_NAME = "demo_summary.json"
STEP_OF_TASK = {VlTask.GENERAL.value: "ingest-vl", VlTask.GROUNDING.value: "annotate"}
"""The flow that made a VL dataset of each task (the others come from `relabel`)."""
NOTES = {VlTask.TRAJECTORY.value: " (projected)", VlTask.CAPTION.value: " (tiny VLM: noise)",
         VlTask.GROUNDING.value: " (tiny detectors)"}


def add_parser(verbs: argparse._SubParsersAction) -> None:
    demo = verbs.add_parser("demo", help="run the whole pipeline on built-in sample data: ingest, VL data, "
                                         "grounding, corpus, loader, training steps")
    demo.add_argument("--output", default="demo-output", help="where to write (default ./demo-output)")
    demo.add_argument("--quick", action="store_true", help="smaller sample datasets (every step still runs)")
    add_runner_options(demo)


def run(args: argparse.Namespace, console: Console) -> int:
    run_demo(args, console)
    return 0


def run_demo(args: argparse.Namespace, console: Console) -> dict[str, Any]:
    """Every step in order; returns (and writes to `<output>/demo_summary.json`) what they made."""
    from vlaforge.evaluation.sim_evaluation import offscreen_rendering_problem
    from vlaforge.flows.demo_training import closed_loop, stream_batches, train_steps

    started = time.monotonic()
    output = pathlib.Path(args.output)
    sizes = DemoSizes.quick() if args.quick else DemoSizes()
    # overwrite: each run of the demo writes its outputs anew (after a `git pull` the code that shapes the bytes has
    # changed, and an output refuses a rerun by other code: see pipelines/output_claim.py).
    flow_run = {"runner": args.runner, "ray_address": args.ray_address, "workers": args.workers, "overwrite": True,
                "progress": not args.no_progress}
    datasets = ingest_robot(output, sizes, flow_run, console)
    datasets.append(ingest_general_vl(output, sizes, flow_run, console))
    datasets += relabel_robot(output, sizes, flow_run, console)
    grounding, report = ground(output, sizes, flow_run, console)
    datasets.append(grounding)
    corpus, included = build_demo_corpus(output, datasets, sizes, console)
    vlm_dir = output / "models" / "tiny-qwen3-vl"
    batches = stream_batches(corpus, vlm_dir, sizes, console)
    rendering_problem = offscreen_rendering_problem("egl")  # gym-aloha renders its camera every step
    losses, policy_evals = train_steps(corpus, vlm_dir, output, sizes, console, eval_sim=rendering_problem is None)
    episodes = closed_loop(output / "train" / "policy", output, sizes.closed_loop_steps, console, rendering_problem)
    summary = {
        "output": str(output), "runner": args.runner, "quick": bool(args.quick),
        "datasets": [_dataset_entry(d, d in included) for d in datasets],
        "report": report, "corpus": str(corpus), "components": component_counts(corpus),
        "models": {path.name: str(path) for path in sorted((output / "models").iterdir())},
        "batches": [{"robot": len(b.robot or ()), "vl": len(b.vl or ()),
                     "components": (b.robot.components if b.robot else []) + (b.vl.components if b.vl else [])}
                    for b in batches],
        "losses": losses,
        "policy_evals": [{k: line.get(k) for k in ("step", "episodes", "steps", "success_rate", "results")}
                         for line in policy_evals],
        "closed_loop": None if episodes is None else {
            "env": episodes["settings"]["env"], "mode": episodes["settings"]["mode"],
            **{k: episodes["overall"][k] for k in ("episodes", "steps", "success_rate", "starved_ticks",
                                                   "actions_per_inference")},
            "results": str(output / "eval-sim" / "results.json"),
            "summary": str(output / "eval-sim" / "summary.html")},
        "seconds": round(time.monotonic() - started, 1),
    }
    (output / SUMMARY_NAME).write_text(json.dumps(summary, indent=1))
    print_summary(summary, console)
    return summary


def _dataset_entry(dataset: DemoDataset, in_corpus: bool) -> dict[str, Any]:
    return {"name": dataset.name, "kind": dataset.kind.value, "task": dataset.task, "path": str(dataset.path),
            "samples": dataset.samples, "in_corpus": in_corpus}


def print_summary(summary: dict[str, Any], console: Console) -> None:
    """One screen: what ran, how many samples each step made, where it is (relative to the output directory)."""
    output = pathlib.Path(summary["output"])

    def where(path: str) -> str:
        return str(pathlib.Path(path).relative_to(output)) if pathlib.Path(path).is_relative_to(output) else path

    console.rule(f"vlaforge demo: done in {summary['seconds']:.0f} s ({summary['runner']} runner)")
    table = Table(title=f"under {output}/")
    for column in ("step", "made", "samples", "where"):
        table.add_column(column, justify="right" if column == "samples" else "left", no_wrap=column == "where")
    for entry in summary["datasets"]:
        robot = entry["kind"] == ComponentKind.ROBOT.value
        step = "ingest" if robot else STEP_OF_TASK.get(entry["task"], "relabel")
        made = entry["name"] + NOTES.get(entry["task"], "") + ("" if entry["in_corpus"] else " (not in corpus)")
        table.add_row(step, made, f"{entry['samples']:,}", where(entry["path"]))
    table.add_row("report", "consensus report", "", where(summary["report"]))
    kinds = {kind: sum(c["samples"] for c in summary["components"].values() if c["kind"] == kind.value)
             for kind in ComponentKind}
    table.add_row("corpus", f"{len(summary['components'])} components, VL:robot 1:6",
                  f"{kinds[ComponentKind.ROBOT]:,} + {kinds[ComponentKind.VL]:,} VL", where(summary["corpus"]))
    batches = summary["batches"]
    table.add_row("loader", f"{len(batches)} batches, both kinds",
                  f"{sum(b['robot'] for b in batches)} + {sum(b['vl'] for b in batches)} VL", "CorpusLoader")
    losses = " ".join(f"{loss['loss']:.2f}" for loss in summary["losses"])
    table.add_row("train", f"{len(summary['losses'])} steps of pre-training step 1, loss {losses}",
                  f"{sum(loss['robot_samples'] + loss['vl_samples'] for loss in summary['losses'])}",
                  "DeepSpeed ZeRO-2, 2 ranks: train/")
    for line in summary["policy_evals"]:
        table.add_row("eval during training", f"step {line['step']}: {line['episodes']} episode, success "
                                              f"{line['success_rate']:.0%}", f"{line['steps']}",
                      where(line["results"]))
    loop = summary["closed_loop"]
    if loop is None:
        table.add_row("eval sim", "closed loop skipped (no offscreen rendering)", "", "")
    else:
        table.add_row("eval sim", f"{loop['episodes']} episode of {loop['env']}, {loop['mode']}, success "
                                  f"{loop['success_rate']:.0%}", f"{loop['steps']}", where(loop["summary"]))
    console.print(table)
    report_dir = pathlib.Path(summary["report"]).parent
    console.print(f"the report: `vlaforge report serve {report_dir}` (its gallery loads page by page); every count and "
                  f"path: {output / SUMMARY_NAME}", markup=False)
