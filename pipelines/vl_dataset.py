"""Write VL samples as a dataset exactly like robot shards: deterministic tar shards, a commit record per shard,
`manifest.parquet`, and a `summary.json` saying it is a VL dataset and of which task.

Each generator writes one dataset (so the corpus can weight them), in units: a unit's shards are named after the
unit, so a rerun regenerates the same shards, skips those already committed, and writes the rest byte-identically.
"""

from __future__ import annotations

import collections
import json
import pathlib
from collections.abc import Iterable

from vlaforge.datasets.schema import VlTask
from vlaforge.pipelines.atomic_files import atomic_write_bytes
from vlaforge.pipelines.shards.manifest import ShardRecord, load_commits, write_manifest
from vlaforge.pipelines.shards.sink import ShardSink
from vlaforge.pipelines.shards.writer import ShardConfig
from vlaforge.pipelines.vl_samples import VlSample

SUMMARY_NAME = "summary.json"
DEFAULT_SHARDS = ShardConfig(max_samples=2000, max_bytes=256 * 2**20)


def write_vl_unit(
    output: pathlib.Path,
    dataset: str,
    unit: int,
    samples: Iterable[VlSample],
    *,
    source_files: list[str],
    shard_config: ShardConfig = DEFAULT_SHARDS,
) -> list[ShardRecord]:
    """Write one unit's samples (in the order given) into `<split>/<dataset>-<unit>-<part>.tar`; returns the records
    of the shards this call committed (shards an earlier run committed are skipped)."""
    sink = ShardSink(pathlib.Path(output), dataset, unit, source_files, shard_config)
    try:
        for sample in samples:
            sink.add(sample)
    except BaseException:
        sink.abort()
        raise
    return sink.close()


def finalize_vl_dataset(output: pathlib.Path, *, dataset: str, task: VlTask, extra: dict | None = None) -> dict:
    """Gather the committed shards into `manifest.parquet` and write `summary.json`; returns the summary."""
    output = pathlib.Path(output)
    records = load_commits(output)
    write_manifest(output, records)
    samples_by_split: collections.Counter[str] = collections.Counter()
    for record in records:
        samples_by_split[record.split] += record.samples
    summary = {
        "kind": "vl",
        "dataset": dataset,
        "task": VlTask(task).value,
        "shards": len(records),
        "samples": sum(samples_by_split.values()),
        "samples_by_split": dict(sorted(samples_by_split.items())),
        "bytes": sum(r.bytes for r in records),
        **(extra or {}),
    }
    atomic_write_bytes(output / SUMMARY_NAME, json.dumps(summary, indent=1, sort_keys=True).encode())
    return summary
