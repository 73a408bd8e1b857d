"""`vlaforge train` launched the way a cluster launches it, on this machine: two "nodes" (two launcher invocations
over loopback, one process each) train and resume; a rank killed with SIGKILL mid-run, and the relaunch resumes from
the last checkpoint with no step lost or repeated. DeepSpeed's CPU accelerator and gloo stand in for GPUs and NCCL.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest
import torch

from vlaforge.training.model import presets
from vlaforge.training.model.vlm import VLMBackbone
from vlaforge.training.trainer import TIMING_FIELDS, TRAIN_LOG, checkpoint_tag

pytestmark = pytest.mark.slow

TINY_RUN = ["--set", "chunk_len=4", "--set", 'loader.robot.cameras=["exterior_1"]', "--set",
            "loader.robot.image_size=[32,32]", "--set", "micro_batch_size=2", "--set", "seed=3", "--set",
            "export=false", "--set", "save_every=2", "--set", "log_sample_keys=true", "--set", "tensorboard=false"]
ENVIRONMENT = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1",
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


@pytest.fixture(scope="module")
def vlm_dir(tmp_path_factory):
    torch.manual_seed(99)
    directory = tmp_path_factory.mktemp("tiny-qwen3-vl")
    VLMBackbone.from_config(presets.qwen3_vl_tiny(), num_kv_layers=2).save_pretrained(directory)
    presets.tiny_processor().save_pretrained(directory)
    return directory


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def command(corpus, vlm_dir, output, steps: int, *launch: str) -> list[str]:
    return [sys.executable, "-m", "vlaforge.flows.cli", "train", "--recipe", "posttrain_async_tiny", "--corpus",
            str(corpus), "--vlm", str(vlm_dir), "--output", str(output), *TINY_RUN, "--set", f"max_steps={steps}",
            *launch]


def start(argv: list[str], log: pathlib.Path) -> subprocess.Popen:
    return subprocess.Popen(argv, env=ENVIRONMENT, stdout=log.open("w"), stderr=subprocess.STDOUT)


def finish(processes: list[subprocess.Popen], logs: list[pathlib.Path], timeout: float = 600) -> None:
    for process, log in zip(processes, logs, strict=True):
        assert process.wait(timeout=timeout) == 0, log.read_text()[-3000:]


def records(output: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in (output / TRAIN_LOG).read_text().splitlines()]


def timeless(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in TIMING_FIELDS}


def test_two_nodes_over_loopback_train_3_steps_and_a_relaunch_resumes(small_corpus, vlm_dir, tmp_path):
    """First launch: c10d rendezvous (no node rank). The checkpoint of step 3 is then lost, and a second launch by
    static rendezvous (--node-rank 0 and 1) resumes from step 2 and trains step 3 again, to the same numbers."""
    output = tmp_path / "run"
    port = free_port()
    multi = ["--nnodes", "2", "--nproc", "1", "--master-addr", "127.0.0.1", "--master-port", str(port)]
    logs = [tmp_path / f"node{n}.log" for n in (0, 1)]
    finish([start(command(small_corpus, vlm_dir, output, 3, *multi), log) for log in logs], logs)
    first = records(output)
    assert [r["step"] for r in first] == [1, 2, 3]
    assert all(r["robot_samples"] == 2 * 2 for r in first)  # 2 ranks x micro batch 2: a world of 2
    keys = [{k for line in (output / "samples" / f"rank{r}.jsonl").read_text().splitlines()
             for k in json.loads(line)["keys"]} for r in (0, 1)]
    assert len(keys[0]) == len(keys[1]) == 6 and not keys[0] & keys[1]  # each node reads its own slots

    shutil.rmtree(output / "checkpoints" / checkpoint_tag(3))
    (output / "checkpoints" / "latest").write_text(checkpoint_tag(2))
    port = free_port()
    static = [["--nnodes", "2", "--nproc", "1", "--node-rank", str(n), "--master-addr", "127.0.0.1",
               "--master-port", str(port)] for n in (0, 1)]
    finish([start(command(small_corpus, vlm_dir, output, 3, *launch), log) for launch, log in zip(static, logs)],
           logs)
    again = records(output)
    assert [r["step"] for r in again] == [1, 2, 3]
    assert [timeless(r) for r in again] == [timeless(r) for r in first]


def rank_process(launcher: psutil.Process, rank: int) -> psutil.Process | None:
    for child in launcher.children(recursive=True):
        try:
            if "vlaforge.training.train_main" in " ".join(child.cmdline()) and child.environ().get("RANK") == str(rank):
                return child
        except psutil.Error:
            continue
    return None


def test_a_rank_killed_mid_run_resumes_from_the_last_checkpoint_with_nothing_lost_or_repeated(
        small_corpus, vlm_dir, tmp_path):
    output = tmp_path / "run"
    argv = command(small_corpus, vlm_dir, output, 6, "--nproc", "2")
    launcher = start(argv, tmp_path / "first.log")
    deadline = time.monotonic() + 300
    while not ((output / TRAIN_LOG).exists() and len(records(output)) >= 3):
        assert launcher.poll() is None and time.monotonic() < deadline, (tmp_path / "first.log").read_text()[-3000:]
        time.sleep(0.05)
    victim = rank_process(psutil.Process(launcher.pid), rank=1)
    assert victim is not None
    os.kill(victim.pid, signal.SIGKILL)
    assert launcher.wait(timeout=120) != 0  # torchrun tears the job down
    before = {r["step"]: r for r in records(output)}
    seen = {json.loads(line)["step"]: json.loads(line)["keys"]
            for line in (output / "samples" / "rank1.jsonl").read_text().splitlines()}
    assert max(before) < 6

    finish([start(argv, tmp_path / "second.log")], [tmp_path / "second.log"])
    after = records(output)
    assert [r["step"] for r in after] == [1, 2, 3, 4, 5, 6]  # every step once
    for step, record in before.items():  # what ran before the kill, re-run from the checkpoint, is the same work
        assert timeless(after[step - 1]) == timeless(record), step
    resumed = {json.loads(line)["step"]: json.loads(line)["keys"]
               for line in (output / "samples" / "rank1.jsonl").read_text().splitlines()}
    assert sorted(resumed) == [1, 2, 3, 4, 5, 6]
    assert all(resumed[step] == keys for step, keys in seen.items())
    all_keys = [k for step in sorted(resumed) for k in resumed[step]]
    assert len(all_keys) == len(set(all_keys)) == 6 * 2  # within one epoch: no sample twice, none missing
