"""Scheduled flows: schedule files are checked before anything is registered, and `vlaforge serve` on a real Prefect
server registers the deployments with their schedules, has the server schedule their runs, and executes a run."""

import asyncio
import os
import signal
import subprocess
import sys
import time

import pytest

from vlaforge.flows.schedules import ScheduleError, load_schedules

INGEST = """
[[deployment]]
name = "{name}"
flow = "ingest"
{timing}
[deployment.parameters]
source = "droid"
input_path = "{input}"
output = "{output}"
runner = "local"
"""


def _write(tmp_path, text):
    path = tmp_path / "schedules.toml"
    path.write_text(text)
    return path


def test_the_shipped_schedule_file_is_valid():
    import pathlib

    schedules = load_schedules(pathlib.Path(__file__).parents[2] / "infra" / "schedules.toml")
    assert {s.flow for s in schedules} == {"ingest", "ingest-vl", "pipeline", "train"}
    assert all(s.cron for s in schedules if s.flow.startswith("ingest"))
    assert all(s.cron is None and s.interval_s is None for s in schedules if s.flow in ("pipeline", "train"))


@pytest.mark.parametrize("entry, message", [
    ('name = "a"\nflow = "trian"\ncron = "0 2 * * *"', "flow 'trian' is not one of"),
    ('name = "a"\nflow = "ingest"\ncron = "0 2 * * *"\ninterval_s = 60', "at most one of cron"),
    ('name = "a"\nflow = "ingest"\ncron = "0 25 * * *"', "cron '0 25 \\* \\* \\*'"),
    ('name = "a"\nflow = "ingest"\ninterval_s = 0', "interval_s must be a positive"),
    ('name = "a"\nflow = "ingest"\ncron = "0 2 * * *"\n[deployment.parameters]\nsource = "droid"\ninput = "x"',
     "unknown \\['input'\\], missing required \\['input_path', 'output'\\]"),
    ('name = "a"\nflow = "ingest"\ncron = "0 2 * * *"\nevery = "day"', "unknown keys \\['every'\\]"),
])
def test_a_bad_entry_is_refused_naming_the_file_the_deployment_and_the_problem(tmp_path, entry, message):
    path = _write(tmp_path, f"[[deployment]]\n{entry}\n")
    with pytest.raises(ScheduleError, match=f"{path}: deployment 'a': .*{message}"):
        load_schedules(path)


def test_deployment_names_must_be_unique(tmp_path):
    text = INGEST.format(name="x", timing='cron = "0 2 * * *"', input="/i", output="/o") * 2
    with pytest.raises(ScheduleError, match=r"unique, \['x'\]"):
        load_schedules(_write(tmp_path, text))


def _wait_for_deployment(client_factory, name, deadline_s=90):
    async def read():
        async with client_factory() as client:
            return await client.read_deployment_by_name(name)

    deadline = time.monotonic() + deadline_s
    while True:
        try:
            return asyncio.run(read())
        except Exception:  # not registered yet (ObjectNotFound), or the server is still busy
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


@pytest.mark.slow
def test_serve_registers_the_schedule_and_runs_the_flow_on_a_real_server(prefect_server, droid_dataset, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    output = tmp_path / "shards"
    path = _write(tmp_path, INGEST.format(name="droid-served", timing='cron = "0 2 * * *"', input=droid_dataset,
                                          output=output))
    env = {**os.environ, "PREFECT_API_URL": prefect_server, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    serving = subprocess.Popen([sys.executable, "-m", "vlaforge.flows.cli", "serve", "--schedules", str(path)],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
            deployment = _wait_for_deployment(get_client, "ingest/droid-served")
            assert [s.schedule.cron for s in deployment.schedules] == ["0 2 * * *"]
            assert deployment.parameters["input_path"] == str(droid_dataset)

            async def scheduled_runs():
                async with get_client() as client:
                    return await client.read_flow_runs(
                        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id])))

            deadline = time.monotonic() + 60
            while not (runs := asyncio.run(scheduled_runs())) and time.monotonic() < deadline:
                time.sleep(1)
            assert runs and all(r.state.is_scheduled() for r in runs)  # the server's scheduler queued 02:00 runs
            assert {r.expected_start_time.hour for r in runs} == {2}

            run = run_deployment("ingest/droid-served", timeout=240)  # what `prefect deployment run` does
        assert run.state.is_completed(), run.state
        assert (output / "manifest.parquet").is_file() and (output / "stats.json").is_file()
    finally:
        os.killpg(serving.pid, signal.SIGTERM)  # before the server goes: a serving process hangs without it
        serving.wait(timeout=60)
