"""`vlaforge plan`: the cluster, hours, storage and egress the corpus and the training run need, with every
assumption printed (`pipelines/capacity_plan.py`)."""

from __future__ import annotations

import argparse
import json
import pathlib
from typing import Any

from rich.console import Console
from rich.table import Table

from vlaforge.flows.cli_options import key_value
from vlaforge.pipelines.capacity_plan import Cluster, CorpusTarget, plan, resolve_rates


def add_parser(verbs: argparse._SubParsersAction) -> None:
    parser = verbs.add_parser("plan", help="capacity plan for the corpus and the training run, with its assumptions")
    parser.add_argument("--rates", type=pathlib.Path, action="append", default=[], metavar="FILE",
                        help="a JSON object {rate name: value} (a benchmark's --json output); repeatable, later wins")
    parser.add_argument("--set", dest="overrides", type=key_value, action="append", default=[], metavar="NAME=VALUE",
                        help="one rate by hand, e.g. --set annotate.sam.images_per_gpu_s=25 (after --rates)")
    parser.add_argument("--cpu-cores", type=int, default=Cluster().cpu_cores, help="cores for ingest and CPU stages")
    parser.add_argument("--gpus", type=int, default=Cluster().gpus, help="GPUs for annotation and relabeling")
    parser.add_argument("--train-gpus", type=int, default=Cluster().train_gpus, help="GPUs of the training run")
    parser.add_argument("--robot-steps", type=float, default=CorpusTarget().robot_steps, help="default 200e6")
    parser.add_argument("--vl-samples", type=float, default=CorpusTarget().vl_samples, help="default 80e6")
    parser.add_argument("--json", type=pathlib.Path, help="also write the whole plan here")


def run(args: argparse.Namespace, console: Console) -> int:
    rates = resolve_rates()
    for path in args.rates:
        rates = resolve_rates(_read_rates(path), source=f"file: {path}", base=rates)
    rates = resolve_rates(dict(args.overrides), source="--set", base=rates)
    cluster = Cluster(cpu_cores=args.cpu_cores, gpus=args.gpus, train_gpus=args.train_gpus)
    result = plan(rates, CorpusTarget(robot_steps=args.robot_steps, vl_samples=args.vl_samples), cluster=cluster)
    for table in (_rates_table(result), _rows_table(result), _totals_table(result)):
        console.print(table)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return 0


def _read_rates(path: pathlib.Path) -> dict[str, float]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"--rates {path}: cannot read a JSON object of rates ({error})") from None
    if isinstance(data, dict) and isinstance(data.get("rates"), dict):
        data = data["rates"]  # a benchmark's --json output: its measured rates, beside its tables
    if not isinstance(data, dict):
        raise ValueError(f"--rates {path}: must hold a JSON object {{rate name: value}}, or a benchmark's --json "
                         "output with one under \"rates\"")
    return data


def _rates_table(result: dict[str, Any]) -> Table:
    table = Table(title="assumptions: every rate the plan uses (replace any with --rates FILE or --set NAME=VALUE)")
    table.add_column("rate", no_wrap=True)
    for column in ("value", "unit", "from"):
        table.add_column(column, overflow="fold")
    for name, rate in result["rates"].items():
        table.add_row(name, f"{rate['value']:,.6g}", rate["unit"], rate["source"])
    return table


def _rows_table(result: dict[str, Any]) -> Table:
    cluster = result["cluster"]
    table = Table(title=f"work on {cluster['cpu_cores']} cores, {cluster['gpus']} GPUs for VL data, "
                        f"{cluster['train_gpus']} GPUs for training")
    for column in ("stage", "work", "at", "resource-hours", "wall hours"):
        table.add_column(column, justify="left" if column in ("stage", "at") else "right")
    for row in result["rows"]:
        table.add_row(row["stage"], f"{row['work']:,.0f} {row['unit']}", row["rate"],
                      f"{row['resource_hours']:,.0f} {row['resource']}-h" if row["resource_hours"] else row["resource"],
                      f"{row['wall_hours']:,.1f}")
    return table


def _totals_table(result: dict[str, Any]) -> Table:
    table = Table(title="totals")
    table.add_column("what")
    table.add_column("value", justify="right")
    totals, storage, traffic = result["totals"], result["storage"], result["traffic"]
    rows = [("core-hours", f"{totals['core_hours']:,.0f}"), ("GPU-hours", f"{totals['gpu_hours']:,.0f}"),
            ("data wall hours (stages in sequence)", f"{totals['data_wall_hours']:,.1f}"),
            ("training wall hours", f"{totals['train_wall_hours']:,.1f}"),
            *((f"storage: {name.removesuffix('_tb')} (TB)", f"{value:,.1f}") for name, value in storage.items()),
            ("training reads from storage (TB)", f"{traffic['train_read_tb']:,.1f}"),
            ("ingest reads raw logs (TB)", f"{traffic['ingest_read_tb']:,.1f}"),
            ("pre-training epochs over the robot data", f"{traffic['pretrain_epochs_of_robot_data']:,.1f}")]
    for what, value in rows:
        table.add_row(what, value)
    return table
