"""`vlaforge demo`: write small sample datasets of every supported format, then ingest each through the flow."""

from __future__ import annotations

import argparse
import pathlib

from rich.console import Console

from vlaforge.datasets.synth.droid import write_droid_dataset
from vlaforge.datasets.synth.lerobot import write_lerobot_dataset
from vlaforge.datasets.synth.teleop_hdf5 import write_aloha_dataset
from vlaforge.datasets.synth.teleop_mcap import write_teleop_mcap_dataset
from vlaforge.flows.ingest_cli import add_runner_options, print_report


def write_samples(raw: pathlib.Path) -> dict[str, tuple[str, pathlib.Path]]:
    """Sample datasets by name: (source format, dataset path)."""
    return {
        "droid": ("droid", write_droid_dataset(raw / "droid", n_episodes=6, n_shards=2)),
        "molmoact-v3": ("lerobot", write_lerobot_dataset(raw / "molmoact_v30", version="v3.0", n_episodes=4)),
        "lerobot-v21": ("lerobot", write_lerobot_dataset(raw / "lerobot_v21", version="v2.1", n_episodes=3)),
        "teleop-mcap": ("teleop-mcap", write_teleop_mcap_dataset(raw / "teleop_mcap", n_episodes=2, duration_s=3.0)),
        "teleop-hdf5": ("teleop-hdf5", write_aloha_dataset(raw / "teleop_aloha", n_episodes=2, duration_s=3.0)),
    }


def add_parser(verbs: argparse._SubParsersAction) -> None:
    demo = verbs.add_parser("demo", help="write sample datasets of every format and run the pipeline on them")
    demo.add_argument("--output", default="demo-output", help="where to write (default ./demo-output)")
    add_runner_options(demo)


def run(args: argparse.Namespace, console: Console) -> int:
    from vlaforge.flows.ingest import ingest

    output = pathlib.Path(args.output)
    console.print(f"writing sample datasets under {output / 'raw'}")
    for name, (source, path) in write_samples(output / "raw").items():
        report = ingest(
            source=source, input_path=str(path), output=str(output / "shards" / name),
            options={"shard_max_samples": 200, "validation_fraction": 0.2},
            runner=args.runner, ray_address=args.ray_address, workers=args.workers, progress=not args.no_progress,
        )
        print_report(report, console)
    console.print(f"shards, manifests, statistics and quarantine tables are under {output / 'shards'}")
    return 0
