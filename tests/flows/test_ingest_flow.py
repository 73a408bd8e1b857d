"""The ingest flow end to end: a real Prefect server, Ray Data, and the same bytes as an in-process run."""

import asyncio
import json

import pyarrow.parquet as pq
from prefect.client.orchestration import get_client
from prefect.settings import PREFECT_API_URL, temporary_settings

from vlaforge.flows.ingest import ingest


def _shard_bytes(output):
    return {p.relative_to(output).as_posix(): p.read_bytes() for p in sorted(output.rglob("*.tar"))}


async def _runs():
    async with get_client() as client:
        flow_runs = await client.read_flow_runs()
        task_runs = await client.read_task_runs()
    return flow_runs, task_runs


def test_flow_on_a_prefect_server_with_ray_writes_what_an_in_process_run_writes(
    prefect_server, droid_dataset, droid_shards, ray_local, tmp_path
):
    local_output, local_report = droid_shards
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        report = ingest(
            source="droid", input_path=str(droid_dataset), output=str(tmp_path),
            options={"shard_max_samples": 100, "validation_fraction": 0.3}, runner="ray", workers=2,
            units_per_task=2,
        )
        flow_runs, task_runs = asyncio.run(_runs())

    assert _shard_bytes(tmp_path) == _shard_bytes(local_output)
    assert pq.read_table(tmp_path / "manifest.parquet").equals(pq.read_table(local_output / "manifest.parquet"))
    assert json.loads((tmp_path / "stats.json").read_text()) == json.loads((local_output / "stats.json").read_text())
    assert {k: v for k, v in report.items() if k != "output"} == {
        k: v for k, v in local_report.as_dict().items() if k != "output"
    }
    (flow_run,) = [r for r in flow_runs if r.parameters.get("output") == str(tmp_path)]
    assert flow_run.state.is_completed()
    names = sorted(r.name.rsplit("-", 1)[0] for r in task_runs if r.flow_run_id == flow_run.id)
    assert names == ["finalize", "plan-units", "run-units", "run-units"]  # 3 units in groups of 2


def test_summary_counts_what_the_shards_hold(droid_shards):
    output, report = droid_shards
    manifest = pq.read_table(output / "manifest.parquet").to_pylist()
    assert report.shards == len(manifest) > 2
    assert report.steps_written == sum(row["samples"] for row in manifest)
    assert report.steps_by_split == {
        split: sum(r["samples"] for r in manifest if r["split"] == split) for split in ("train", "validation")
    }
    assert report.drops_by_reason.get("failed_episode", 0) >= 1
    assert report.episodes_written == report.episodes_read - sum(report.drops_by_reason.values())
