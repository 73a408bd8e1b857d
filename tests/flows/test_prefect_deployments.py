"""infra/prefect.yaml as a team uses it: the work-pool script and `prefect deploy --all` register every deployment
with its schedule and pool on a real Prefect server, and a process worker runs one to completion."""

from __future__ import annotations

import asyncio
import inspect
import json
import os
import pathlib
import subprocess
import sys

import pytest
import yaml

from vlaforge.datasets.synth.droid import write_droid_dataset
from vlaforge.flows.schedules import FLOWS

ROOT = pathlib.Path(__file__).resolve().parents[2]
PREFECT_FILE = ROOT / "infra" / "prefect.yaml"
PREFECT = [sys.executable, "-m", "prefect", "--no-prompt"]


def _deployments() -> list[dict]:
    return yaml.safe_load(PREFECT_FILE.read_text())["deployments"]


def _flow_of(entrypoint: str):
    import importlib.util

    path, function = entrypoint.split(":")
    module = f"vlaforge.{pathlib.PurePosixPath(path).with_suffix('').as_posix().replace('/', '.')}"
    assert importlib.util.find_spec(module) is not None, f"{entrypoint}: no module {module}"
    return getattr(importlib.import_module(module), function)


def test_every_flow_has_a_deployment_whose_parameters_it_takes():
    flows = {_flow_of(d["entrypoint"]).name for d in _deployments()}
    registered = {getattr(importlib_module(module), function).name for module, function in FLOWS.values()}
    assert registered <= flows, f"no deployment in infra/prefect.yaml for {sorted(registered - flows)}"
    for deployment in _deployments():
        signature = inspect.signature(_flow_of(deployment["entrypoint"]).fn)
        assert set(deployment["parameters"]) <= set(signature.parameters), deployment["name"]
        required = {n for n, p in signature.parameters.items() if p.default is inspect.Parameter.empty}
        assert required <= set(deployment["parameters"]), deployment["name"]
        assert deployment["work_pool"]["name"] in {"vlaforge-cpu", "vlaforge-gpu"}
        # Data flows run on a clock; training and evaluation when triggered (after the data they need is there).
        triggered = {"training", "evaluation"} & set(deployment["tags"])
        assert bool(deployment.get("schedules")) != bool(triggered), deployment["name"]


def importlib_module(name: str):
    import importlib

    return importlib.import_module(name)


def _run(command: list[str], env: dict[str, str], timeout: float = 300) -> str:
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def _server_view(url: str):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}):
        return asyncio.run(_read())


async def _read():
    from prefect.client.orchestration import get_client

    async with get_client() as client:
        deployments = {d.name: d for d in await client.read_deployments()}
        pools = {p.name: p for p in await client.read_work_pools()}
        runs = await client.read_flow_runs()
    return deployments, pools, runs


@pytest.mark.slow
def test_deploy_all_registers_every_deployment_and_a_process_worker_runs_one(prefect_server, s3_endpoint, tmp_path):
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "VLAFORGE_ROOT": str(ROOT), "PREFECT": " ".join(PREFECT[:3])}
    env.pop("PREFECT_HOME", None)
    _run(["bash", str(ROOT / "infra" / "prefect" / "work-pools.sh")], env)
    _run([*PREFECT, "deploy", "--all", "--prefect-file", str(PREFECT_FILE)], env)
    deployments, pools, _ = _server_view(prefect_server)
    assert {"vlaforge-cpu", "vlaforge-gpu"} <= set(pools) and pools["vlaforge-gpu"].concurrency_limit == 2
    for entry in _deployments():
        registered = deployments[entry["name"]]
        assert registered.work_pool_name == entry["work_pool"]["name"]
        assert [s.schedule.cron for s in registered.schedules] == [s["cron"] for s in entry.get("schedules", [])]
        assert registered.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]

    # The nightly DROID ingest, run by a process worker into object storage: S3's endpoint and credentials come
    # from the worker's environment, as on a cluster node.
    import s3fs

    env.update({"AWS_ENDPOINT_URL_S3": s3_endpoint, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1", "VLAFORGE_OBJECT_CACHE": str(tmp_path / "cache")})
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint, key="testing", secret="testing")
    fs.mkdir("deploy-lake")
    raw = write_droid_dataset(tmp_path / "raw", n_episodes=3)
    output = "s3://deploy-lake/shards/droid"
    _run([*PREFECT, "deployment", "run", "ingest/droid-nightly", "--param", f"input_path={raw}",
          "--param", f"output={output}", "--param", "runner=local"], env)
    _run([*PREFECT, "worker", "start", "--pool", "vlaforge-cpu", "--run-once"], env, timeout=400)
    _, _, runs = _server_view(prefect_server)
    (run,) = [r for r in runs if r.parameters.get("output") == output]  # the server also queued cron runs
    assert run.state.is_completed(), run.state
    summary = json.loads(fs.cat_file("deploy-lake/shards/droid/summary.json"))
    assert summary["dataset"] == "droid" and summary["steps_written"] > 0
    assert fs.exists("deploy-lake/shards/droid/manifest.parquet")
