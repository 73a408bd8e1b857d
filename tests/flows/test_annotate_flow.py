"""The annotate flow end to end: robot shards -> tiny Grounding DINO, LLMDet, SAM and a local server speaking the
hosted API -> consensus -> VL grounding shards, audit tables and the report; on a real Prefect server with Ray."""

import asyncio
import json

import pyarrow.parquet as pq
import pytest
from prefect.client.orchestration import get_client
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, temporary_settings

from vlaforge.annotators.annotate_recipe import annotate_job, default_recipe
from vlaforge.annotators.grounding_dino import grounding_dino
from vlaforge.annotators.grounding_frame import GroundingFrame
from vlaforge.annotators.scripted_detection_server import ScriptedDetectionServer
from vlaforge.flows.sample_data.tiny_detectors import write_tiny_detector, write_tiny_sam
from vlaforge.pipelines.job import run_job
from vlaforge.pipelines.runners import LocalRunner
from vlaforge.pipelines.shards.manifest import read_manifest
from vlaforge.pipelines.shards.members import iter_samples

TOKEN = "dds-token-7c1e-never-logged"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Tiny models on a shared machine run far faster on one intra-op thread (Ray workers already do)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-models")
    return {"gdino": str(write_tiny_detector(root / "gdino")),
            "llmdet": str(write_tiny_detector(root / "llmdet", architecture="mm_grounding_dino", seed=1)),
            "sam": str(write_tiny_sam(root / "sam"))}


@pytest.fixture(scope="module")
def mirror(models):
    """A responder for the local API server that runs the tiny Grounding DINO on the image it receives: so the
    hosted detector agrees with the local one (as two good detectors would) and the consensus has work to do."""
    stage = grounding_dino(models["gdino"], device="cpu", box_threshold=0.3, text_threshold=0.2).build()
    stage.setup()

    def respond(pixels, phrases):
        frame = GroundingFrame(dataset="", episode_id="", source_file="", step=0, camera="", jpeg=b"",
                               pixels=pixels, selected_by="", instructions=[], phrases=phrases)
        stage([frame])
        return [{"bbox": list(d.box), "score": d.score, "category": d.phrase} for d in frame.runs[0].detections]

    return respond


def recipe(models, url, frames=("first", "gripper"), **hosted):
    local = {"device": "cpu", "box_threshold": 0.3, "text_threshold": 0.2}
    return {
        **default_recipe(),
        "detectors": [{"kind": "grounding_dino", "model": models["gdino"], **local},
                      {"kind": "llmdet", "model": models["llmdet"], **local, "box_threshold": 0.05,
                       "text_threshold": 0.0},
                      {"kind": "hosted", "base_url": url, "poll_interval_s": 0.01, "requests_per_second": 200.0,
                       **hosted}],
        "sam": {"model": models["sam"], "device": "cpu"},
        "phrases": {"negatives": ["elephant"]},
        "frames": {"policies": list(frames), "cameras": ["exterior_1"]},
        "source": {"shards_per_unit": 1, "split": None},
        "shards": {"max_samples": 20},
    }


def _samples(output):
    for record in read_manifest(output / "manifest.parquet"):
        with open(output / record.url, "rb") as file:
            yield from iter_samples(file, record.url)


async def _runs():
    async with get_client() as client:
        return await client.read_flow_runs(), await client.read_task_runs()


@pytest.mark.slow
def test_annotate_flow_on_a_prefect_server_with_ray(prefect_server, ray_local, droid_shards, models, mirror,
                                                     tmp_path, monkeypatch):
    from vlaforge.flows.annotate import annotate

    robot, _ = droid_shards
    monkeypatch.setenv("DDS_API_TOKEN", TOKEN)
    with ScriptedDetectionServer(mirror, token=TOKEN) as server:
        server.fail_next(500, count=2)  # two images: the hosted detector fails on them (no retries in this recipe)
        with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
            result = annotate(shards=[str(robot)], output=str(tmp_path), runner="ray", workers=2,
                              recipe=recipe(models, server.url, retry={"max_retries": 0}))
            flow_runs, task_runs = asyncio.run(_runs())
            APILogWorker.drain_all(timeout=10)  # the flow's last logs reach the server before the session stops it
    output = tmp_path / robot.name
    summary = result["datasets"][robot.name]
    audit = pq.read_table(output / "audit.parquet").to_pylist()
    frames = pq.read_table(output / "audit_frames.parquet").to_pylist()
    assert summary["samples"] == sum(r.samples for r in read_manifest(output / "manifest.parquet")) > 0
    assert summary["tables"] == {"audit": len(audit), "audit_frames": len(frames)}
    assert len(audit) == sum(f["candidates"] for f in frames)
    decisions = {(r["decision"], r["reason"]) for r in audit}
    assert {("accepted", "agreed"), ("rejected", "single_detector"), ("rejected", "negative_phrase")} <= decisions

    failed = [f for f in frames for d in f["detectors"] if d["detector"] == "gdino_1_5" and d["status"] == "failed"]
    assert len(failed) == 2 and all("HTTP 500" in d["error"] for f in failed for d in f["detectors"]
                                    if d["detector"] == "gdino_1_5")
    for row in (r for r in audit if r["image_key"] in {f["image_key"] for f in failed}):
        assert row["detectors_failed"] == ["gdino_1_5"] and row["detectors_ran"] == 2

    accepted = {r["candidate_id"] for r in audit if r["decision"] == "accepted"}
    samples = list(_samples(output))
    assert len(samples) == summary["samples"]
    robot_split = {e: r.split for r in read_manifest(robot / "manifest.parquet") for e in r.episodes}
    for sample in samples:
        meta = sample["meta.json"]
        assert meta["split"] == robot_split[meta["source_group"]]  # an episode's VL samples keep its split
        assert meta["task"] == "grounding" and {o["candidate_id"] for o in meta["extra"]["objects"]} <= accepted
        assert sample["conversation.json"][1]["content"][0]["text"].startswith("```json\n[{\"bbox_2d\": [")

    report = result["report"]
    assert report["accepted"] == len(accepted) and report["candidates"] == len(audit)
    assert (tmp_path / "report" / "index.html").stat().st_size > 10_000
    for path in tmp_path.rglob("*"):
        assert not path.is_file() or TOKEN.encode() not in path.read_bytes(), f"the token leaked into {path}"
    (flow_run,) = [r for r in flow_runs if r.parameters.get("output") == str(tmp_path)]
    assert flow_run.state.is_completed() and TOKEN not in json.dumps(flow_run.parameters)
    names = {r.name.rsplit("-", 1)[0] for r in task_runs if r.flow_run_id == flow_run.id}
    assert names == {"plan-units", "run-units", "finalize", "build-report"}


def test_annotate_job_is_deterministic_and_resumes_without_duplicates(droid_shards, models, mirror, tmp_path):
    robot, _ = droid_shards
    with ScriptedDetectionServer(mirror, token=TOKEN) as server:
        def run(name):
            job = annotate_job(recipe(models, server.url, frames=("first",)), str(robot), str(tmp_path / name),
                               hosted_token=TOKEN)
            return run_job(job, LocalRunner())

        first, second = run("a"), run("b")
        # As if killed in unit 0 after its shards were committed: no marker, no audit part, no manifest.
        (tmp_path / "b" / "_units" / "00000.json").unlink()
        for part in (tmp_path / "b" / "_tables").glob("*/00000.parquet"):
            part.unlink()
        (tmp_path / "b" / "manifest.parquet").unlink()
        resumed = run("b")
    assert first == second == resumed
    assert read_manifest(tmp_path / "a" / "manifest.parquet") == read_manifest(tmp_path / "b" / "manifest.parquet")
    for table in ("audit", "audit_frames"):
        assert pq.read_table(tmp_path / "a" / f"{table}.parquet").equals(pq.read_table(tmp_path / "b" / f"{table}.parquet"))
