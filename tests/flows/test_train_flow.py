"""The `train` and `pipeline` Prefect flows on a real local Prefect server: a phase's log streamed into its flow run
and its final metrics published as an artifact; raw DROID episodes and a LLaVA Parquet file through ingest, the
corpus, step 2 and asynchronous post-training (the second phase starting from the first's policy), and the
evaluation hook."""

from __future__ import annotations

import asyncio
import json

import pytest
from prefect.client.orchestration import get_client
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, temporary_settings

from vlaforge.flows.pipeline import pipeline
from vlaforge.flows.sample_data.tiny_vlm import write_tiny_qwen3_vl
from vlaforge.flows.train import train

pytestmark = pytest.mark.slow

SMALL = {"chunk_len": 4, "loader.robot.image_size": [32, 32], "loader.robot.cameras": ["exterior_1"],
         "micro_batch_size": 2, "max_steps": 2, "tensorboard": False}


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory):
    return write_tiny_qwen3_vl(tmp_path_factory.mktemp("tiny-qwen3-vl"))


async def _records(key: str, flow_run_id=None):
    """The artifacts under `key`, and the log lines of one flow run (the session's server holds every test's)."""
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async with get_client() as client:
        logs = await client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id])))
        artifacts = [a for a in await client.read_artifacts() if a.key == key]
    return logs, artifacts


def test_the_train_flow_streams_its_log_and_publishes_the_final_metrics(prefect_server, small_corpus, vlm_dir,
                                                                        tmp_path):
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        state = train("step2_dit_tiny", str(small_corpus), str(tmp_path / "run"), vlm=str(vlm_dir),
                      overrides={**SMALL, "export": False}, return_state=True)
        summary = state.result()
        APILogWorker.drain_all(timeout=10)  # the flow's log lines reach the server before they are read back
        logs, artifacts = asyncio.run(_records("train-metrics", state.state_details.flow_run_id))
    assert summary["last_step"]["step"] == 2 and summary["run"]["precision"] == "fp32" and summary["policy"] is None
    messages = [log.message for log in logs]
    assert any("step 1:" in m for m in messages) and any("step 2:" in m for m in messages)
    table = json.loads(artifacts[-1].data)
    assert {"metric": "step", "value": 2} in table
    assert next(row["value"] for row in table if row["metric"] == "loss") == summary["last_step"]["loss"]


def test_the_pipeline_chains_ingest_the_corpus_two_phases_and_the_evaluation_hook(prefect_server, droid_dataset,
                                                                                  vlm_dir, tmp_path):
    from vlaforge.datasets.synth.llava import write_vl_parquet

    vl_file = write_vl_parquet(tmp_path / "raw" / "llava.parquet", n_rows=12, bad_rows=False)
    phase = {k: v for k, v in SMALL.items() if k != "chunk_len"}  # the DROID shards hold 32-step chunks
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        summary = pipeline(output=str(tmp_path / "work"), vlm=str(vlm_dir), runner="local",
                           robot=[{"name": "droid", "source": "droid", "input_path": str(droid_dataset)}],
                           vl=[{"name": "llava", "input_path": str(vl_file)}],
                           phases=[{"recipe": "step2_dit_tiny", "set": phase},
                                   {"recipe": "posttrain_async_tiny", "set": phase}])
    work = tmp_path / "work"
    assert set(summary["datasets"]) == {"droid", "llava"}
    corpus = json.loads((work / "corpus" / "corpus.json").read_text())
    assert {c["name"]: c["kind"] for c in corpus["components"]} == {"droid": "robot", "llava": "vl"}
    first, second = (work / "train" / "1-step2_dit_tiny"), (work / "train" / "2-posttrain_async_tiny")
    assert json.loads((first / "trainer_config.json").read_text())["vlm_dir"] == str(vlm_dir)
    assert json.loads((second / "trainer_config.json").read_text())["init_policy"] == str(first / "policy")
    assert [p["last_step"]["step"] for p in summary["phases"]] == [2, 2]
    assert summary["phases"][-1]["policy"] == str(second / "policy")
    assert summary["evaluation"] == {"evaluation": "none", "skipped": True}


def test_a_misspelt_evaluation_is_refused_before_any_work(prefect_server, vlm_dir, tmp_path):
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        with pytest.raises(ValueError, match="unknown evaluation 'nonee'; did you mean 'none'"):
            pipeline(output=str(tmp_path / "work"), vlm=str(vlm_dir), phases=[{"recipe": "step2_dit_tiny"}],
                     evaluation="nonee")
    assert not (tmp_path / "work").exists()
