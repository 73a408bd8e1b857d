"""The relabel flow end to end: robot shards -> a VLM over HTTP (with a key) on Ray, through a real Prefect server;
the same bytes as an in-process run; the key nowhere in Prefect; a failed VLM leaves units to redo, not holes."""

import asyncio
import json

import pytest
import webdataset as wds
from prefect.blocks.system import Secret
from prefect.client.orchestration import get_client
from prefect.client.schemas.sorting import LogSort
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, temporary_settings
from pydantic import SecretStr

from vlaforge.annotators.relabel_recipe import relabel_job
from vlaforge.annotators.scripted_vlm_server import ScriptedVlmServer, request_text
from vlaforge.annotators.vlm_client import VlmRequest, VlmUnavailableError
from vlaforge.annotators.vlm_http import HttpVlm
from vlaforge.datasets.drops import DropLedger
from vlaforge.datasets.schema import sample_key
from vlaforge.flows.relabel import relabel
from vlaforge.pipelines.job import run_job
from vlaforge.pipelines.runners import LocalRunner
from vlaforge.pipelines.shards.manifest import read_manifest
from vlaforge.pipelines.shards.robot_source import RobotShardSource
from vlaforge.pipelines.vl_samples import user

KEY = "sk-relabel-5ac1e0d7"
OPTIONS = {"frames_per_episode": 2, "validation_fraction": 0.3}  # the robot shards' own fraction


def _caption(body):
    camera = "wrist" if "wrist camera" in request_text(body) else "exterior"
    return f"A robot gripper above a cluttered table, seen from the {camera} view."


def _tars(output):
    return {p.relative_to(output).as_posix(): p.read_bytes() for p in sorted(output.rglob("*.tar"))}


async def _prefect_records():
    async with get_client() as client:
        flow_runs = await client.read_flow_runs()
        task_runs = await client.read_task_runs()
        logs = await client.read_logs(sort=LogSort.TIMESTAMP_DESC, limit=200)  # the newest: this test's run's
    return flow_runs, task_runs, logs


@pytest.mark.slow
def test_relabel_flow_on_prefect_and_ray_matches_an_in_process_run(prefect_server, droid_shards, ray_local, tmp_path):
    robot, _ = droid_shards
    with ScriptedVlmServer(_caption, api_key=KEY) as server:
        with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
            summary = relabel(
                shards=str(robot), output=str(tmp_path / "flow"), generator="caption", vlm=f"http:{server.url}",
                vlm_options={"model": server.model, "concurrency": 4}, api_key=SecretStr(KEY), options=OPTIONS,
                runner="ray", workers=2, shards_per_unit=1,
            )
            APILogWorker.drain_all(timeout=10)  # the run's log lines reach the server before they are read back
            flow_runs, task_runs, logs = asyncio.run(_prefect_records())
        local = relabel_job(shards=str(robot), output=str(tmp_path / "local"), generator="caption",
                            vlm=HttpVlm.Config(base_url=server.url, model=server.model, api_key=KEY),
                            options=OPTIONS, shards_per_unit=1)
        run_job(local, LocalRunner())
    assert _tars(tmp_path / "flow") == _tars(tmp_path / "local") != {}
    assert summary["kind"] == "vl" and summary["task"] == "caption" and summary["dataset"] == f"{robot.name}-caption"
    source = RobotShardSource.Config(root=str(robot), split=None).build()
    episodes = [e for unit in source.plan() for e in source.read(unit, DropLedger())]
    assert summary["samples"] == 2 * len(episodes) and summary["episodes_read"] == len(episodes)
    robot_keys = {sample_key(e.episode_id, e.first_step + i) for e in episodes for i in range(len(e))}
    robot_split = {e: r.split for r in read_manifest(robot / "manifest.parquet") for e in r.episodes}
    assert set(robot_split.values()) == {"train", "validation"}
    urls = [str(p) for p in sorted((tmp_path / "flow").rglob("*.tar"))]
    for sample in wds.WebDataset(urls, shardshuffle=False):
        meta = json.loads(sample["meta.json"])
        assert meta["source_key"] in robot_keys  # lineage back to a robot sample
        assert meta["split"] == robot_split[meta["source_group"]]  # same fraction, same hash: the episode's split
        assert meta["provenance"][0]["model"] == "scripted-vlm"
        assert "exterior view" in json.loads(sample["conversation.json"])[1]["content"][0]["text"]
    (flow_run,) = [r for r in flow_runs if r.parameters.get("output") == str(tmp_path / "flow")]
    assert flow_run.state.is_completed() and flow_run.parameters["api_key"] == "**********"
    ours = [t for t in task_runs if t.flow_run_id == flow_run.id]
    assert sorted(t.name.rsplit("-", 1)[0] for t in ours) == ["finalize", "plan-units", "run-units"]
    own_logs = [log for log in logs if log.flow_run_id == flow_run.id]
    assert own_logs  # the run's log lines are there to check
    everything = " ".join([str(flow_run), *map(str, ours), *(log.message for log in own_logs)])
    assert KEY not in everything


def test_a_vlm_outage_fails_the_unit_and_a_rerun_completes_without_duplicates(droid_shards, tmp_path):
    robot, _ = droid_shards
    with ScriptedVlmServer(_caption) as server:
        job = relabel_job(shards=str(robot), output=str(tmp_path), generator="caption", shards_per_unit=1,
                          vlm=HttpVlm.Config(base_url=server.url, model=server.model, max_retries=1, backoff_s=0.01,
                                             concurrency=1),
                          options={"frames_per_episode": 1})
        server.fail_next(503, 2)  # the first request of the first unit fails twice: retries run out
        with pytest.raises(VlmUnavailableError):
            run_job(job, LocalRunner())
        assert not list(tmp_path.glob("_units/*.json"))  # nothing marked finished
        summary = run_job(job, LocalRunner())
    keys = [json.loads(s["meta.json"])["source_key"] for s in wds.WebDataset(
        [str(p) for p in sorted(tmp_path.rglob("*.tar"))], shardshuffle=False)]
    assert len(keys) == len(set(keys)) == summary["samples"] == summary["episodes_read"]


def test_api_key_from_a_prefect_secret_block(prefect_server):
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        Secret(value=KEY).save("vlm-api-key", overwrite=True)
        with ScriptedVlmServer(lambda body: "A mug.", api_key=KEY) as server:
            client = HttpVlm.Config(base_url=server.url, model=server.model, api_key_block="vlm-api-key").build()
            client.setup()
            [answer] = client.generate([VlmRequest(messages=[user("Say it.")])])
    assert answer.text == "A mug."
    assert KEY not in repr(client.config)
