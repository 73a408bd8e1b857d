"""`vlaforge relabel`: a VLM generator over robot shards (or a VL dataset) into a VL dataset, via the `relabel` flow.

The HTTP backend's API key is read from $VLAFORGE_VLM_API_KEY (or a Prefect Secret block named by --vlm-key-block)
and never printed.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from rich.console import Console

from vlaforge.annotators.generators import GENERATORS
from vlaforge.flows.cli_options import (
    add_overwrite_option,
    add_runner_options,
    add_stage_pool_options,
    key_value,
    print_vl_summary,
)

API_KEY_ENV = "VLAFORGE_VLM_API_KEY"


def add_parser(verbs: argparse._SubParsersAction) -> None:
    relabel = verbs.add_parser("relabel", help="generate VL data (captions, VQA, EQA, plans, trajectories) from shards")
    relabel.add_argument("--shards", required=True, help="robot dataset dir (vlaforge ingest output) or a VL dataset")
    relabel.add_argument("--output", required=True, help="the VL dataset directory to write")
    relabel.add_argument("--generator", required=True, choices=list(GENERATORS), help="what to generate")
    relabel.add_argument("--vlm", help="local:DIR_OR_HUB_ID, http:URL (e.g. http:http://127.0.0.1:8000/v1) or "
                                       "ray-llm:MODEL (Ray Data LLM: vLLM engines on a GPU cluster); "
                                       "not needed for trajectory")
    relabel.add_argument("--vlm-model", help="http: the served model name (default: the first of /v1/models)")
    relabel.add_argument("--vlm-revision", help="the model revision recorded in provenance")
    relabel.add_argument("--vlm-concurrency", type=int, help="http: requests in flight per worker (default 8)")
    relabel.add_argument("--vlm-timeout", type=float, help="http: seconds per request (default 120)")
    relabel.add_argument("--vlm-retries", type=int, help="http: retries of a failed request (default 4)")
    relabel.add_argument("--vlm-key-block", help=f"http: Prefect Secret block holding the key (else ${API_KEY_ENV})")
    relabel.add_argument("--vlm-batch-size", type=int, help="local: requests per generate call (default 8)")
    relabel.add_argument("--vlm-dtype", choices=("auto", "float32", "bfloat16", "float16"), help="local: dtype")
    relabel.add_argument("--vlm-device", help="local: auto, cpu, cuda or cuda:N")
    relabel.add_argument("--vlm-set", dest="vlm_settings", type=key_value, action="append", default=[],
                         metavar="KEY=VALUE", help="any other field of the backend's config, VALUE as JSON, e.g. "
                         "--vlm-set engine=http --vlm-set url=http://vlm:8000/v1 (ray-llm)")
    relabel.add_argument("--judge", metavar="SPEC", help="a VLM judge (local:DIR or http:URL) scoring every kept "
                         "answer against its image; samples below --judge-threshold are dropped")
    relabel.add_argument("--judge-threshold", type=float, default=7.0, help="lowest judge score (1-10) kept "
                         "(default 7)")
    relabel.add_argument("--dataset", help="the VL dataset name (default: <input name>-<generator>)")
    relabel.add_argument("--split", default="all", help="robot shards: only this split (default all: a VL sample's "
                                                        "split follows its episode's, by the same hash)")
    relabel.add_argument("--shards-per-unit", type=int, default=4, help="input shards per work unit (default 4)")
    relabel.add_argument("--shard-samples", type=int, default=2000, help="samples per output shard (default 2000)")
    relabel.add_argument("--num-gpus-per-worker", dest="num_gpus", type=float, help=argparse.SUPPRESS)  # old name
    relabel.add_argument("--set", dest="options", type=key_value, action="append", default=[], metavar="KEY=VALUE",
                         help="a generator option, e.g. --set frames_per_episode=2 --set calibration=cal.json")
    add_runner_options(relabel)
    add_overwrite_option(relabel)
    add_stage_pool_options(relabel)


def vlm_options(args: argparse.Namespace) -> dict[str, Any]:
    """The backend options given on the command line (only those of the chosen backend)."""
    http = {"model": args.vlm_model, "revision": args.vlm_revision, "concurrency": args.vlm_concurrency,
            "timeout_s": args.vlm_timeout, "max_retries": args.vlm_retries, "api_key_block": args.vlm_key_block}
    local = {"revision": args.vlm_revision, "batch_size": args.vlm_batch_size, "dtype": args.vlm_dtype,
             "device": args.vlm_device}
    ray_llm = {"revision": args.vlm_revision, "batch_size": args.vlm_batch_size, "concurrency": args.vlm_concurrency}
    kind = (args.vlm or "").partition(":")[0]
    chosen = {"http": http, "ray-llm": ray_llm}.get(kind, local)
    return {**{key: value for key, value in chosen.items() if value is not None}, **dict(args.vlm_settings)}


def run(args: argparse.Namespace, console: Console) -> int:
    from pydantic import SecretStr

    from vlaforge.flows.relabel import relabel

    key = os.environ.get(API_KEY_ENV)
    summary = relabel(
        shards=args.shards, output=args.output, generator=args.generator, vlm=args.vlm, vlm_options=vlm_options(args),
        api_key=SecretStr(key) if key else None, dataset=args.dataset, options=dict(args.options),
        split=None if args.split == "all" else args.split, shards_per_unit=args.shards_per_unit,
        shard_samples=args.shard_samples, runner=args.runner, ray_address=args.ray_address, workers=args.workers,
        num_gpus_per_worker=args.num_gpus or 0, stage_pools=dict(args.stage_pools) or None,
        progress=not args.no_progress, overwrite=args.overwrite, judge=args.judge,
        judge_threshold=args.judge_threshold,
    )
    print_vl_summary(summary, console, f"relabel {args.generator}")
    return 0
