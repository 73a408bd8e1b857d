"""A real multi-node Ray cluster on this machine (`ray_cluster_scenario.py`, in its own process): the ingest spreads
its units over both worker nodes; the annotate job runs stage by stage, its model stages in actor pools on the node
with GPUs and its units as tasks on the CPU node; both write exactly what a local run writes; and a worker node lost
mid-run leaves, after Ray's retries or a rerun, the same complete dataset."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

SCENARIO = pathlib.Path(__file__).with_name("ray_cluster_scenario.py")


@pytest.mark.slow
def test_a_two_node_cluster_runs_ingest_and_stage_pools_and_survives_a_lost_node(tmp_path):
    env = {**os.environ, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("RAY_ADDRESS", None)
    result = subprocess.run([sys.executable, str(SCENARIO), str(tmp_path)], capture_output=True, text=True, env=env,
                            timeout=1200)
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    cpu, gpu = report["nodes"]["cpu"], report["nodes"]["gpu"]
    assert report["ingest_identical"] and report["ingest_summary_identical"]
    unit_workers = {node for node, names in report["ingest_actors"].items()
                    if "MapWorker(MapBatches(_RayBatchWorker))" in names}
    assert {cpu, gpu} <= unit_workers  # the ingest's units ran on both worker nodes
    assert report["annotate_identical"]
    stage_actors = {node for node, names in report["annotate_actors"].items() if "StageActor" in names}
    assert stage_actors == {gpu}  # every model pool on the node with GPUs
    assert report["annotate_tasks"][cpu] == ["MapBatches(_ray_task)"]  # the units, as tasks, on the CPU node
    assert report["killed_run"] in {"completed", "RayTaskError", "RuntimeError", "OwnerDiedError"}
    assert report["rerun_identical"]
