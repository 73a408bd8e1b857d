"""Reruns and concurrent runs that cannot mix data, with real processes and kill -9:

- a live run's output refuses a second run, naming the holder; once the holder is killed, a rerun with other options
  is refused listing them, and `--overwrite` gives exactly the dataset a fresh run with those options gives;
- a worker that outlives its killed driver (as Ray workers do until Ray reaps them), paused across a new run's
  takeover, commits nothing into the output the new run owns.
"""

import os
import pathlib
import re
import signal
import subprocess
import sys
import time

import psutil
import pyarrow.parquet as pq

from vlaforge.flows.cli import main

OPTIONS = ["--runner", "local", "--no-progress", "--validation-fraction", "0.3"]

OLD_DRIVER = """
import subprocess, sys
from vlaforge.pipelines.ingest_recipe import IngestOptions, build_ingest_job
from vlaforge.pipelines.job import claimed
raw, output, worker, log = sys.argv[1:5]
job = build_ingest_job("droid", raw, output, IngestOptions(shard_max_samples=10, validation_fraction=0.3))
with claimed(job, command="old driver") as owned, open(log, "w") as stderr:
    # The worker is its own process, as a Ray worker is: killing this driver does not kill it.
    subprocess.run([sys.executable, "-c", worker, raw, output, owned.owner], start_new_session=True, stderr=stderr)
"""

OLD_WORKER = """
import dataclasses, sys
from vlaforge.pipelines.ingest_recipe import IngestOptions, build_ingest_job
from vlaforge.pipelines.job import UnitWorker, plan_units
raw, output, owner = sys.argv[1:4]
job = build_ingest_job("droid", raw, output, IngestOptions(shard_max_samples=10, validation_fraction=0.3))
worker = UnitWorker(dataclasses.replace(job, owner=owner))  # what a Ray actor of the old run holds
worker.setup()
for unit in plan_units(job):
    worker.run_unit(unit)
"""


def _cli(dataset, output, *extra):
    vlaforge = pathlib.Path(sys.executable).with_name("vlaforge")
    return [str(vlaforge), "ingest", "droid", "--input", str(dataset), "--output", str(output), *OPTIONS, *extra]


def _shards(output):
    return {p.relative_to(output).as_posix(): p.read_bytes() for p in sorted(output.rglob("*.tar"))}


def _wait_for_commits(output, count, process):
    deadline = time.monotonic() + 180
    while len(list((output / "_commits").glob("*.json"))) < count:
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it committed"
        time.sleep(0.01)


def _inside_a_commit(pid, output):
    """Whether `pid` holds the output's commit lock now (`/proc/locks`: ... PID MAJOR:MINOR:INODE ...)."""
    inode = (output / "_lock" / "commit").stat().st_ino
    return any(fields[4] == str(pid) and fields[5].rsplit(":", 1)[1] == str(inode)
               for fields in (line.split() for line in pathlib.Path("/proc/locks").read_text().splitlines()))


def _stop_outside_commits(pid, output):
    os.kill(pid, signal.SIGSTOP)
    while _inside_a_commit(pid, output):  # stopped inside a commit (microseconds): let it finish that one
        os.kill(pid, signal.SIGCONT)
        time.sleep(0.005)
        os.kill(pid, signal.SIGSTOP)


def _reference(dataset, output, *extra):
    assert main(["ingest", "droid", "--input", str(dataset), "--output", str(output), *OPTIONS, *extra]) == 0
    return output


def test_a_live_run_refuses_a_second_then_a_killed_one_is_taken_over(tmp_path, capsys):
    from vlaforge.datasets.synth.droid import write_droid_dataset

    dataset = write_droid_dataset(tmp_path / "raw", n_episodes=12, n_shards=6, seed=3)
    output = tmp_path / "out"
    first = subprocess.Popen(_cli(dataset, output, "--shard-samples", "40"), start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_commits(output, 1, first)
        _stop_outside_commits(first.pid, output)  # alive, holding the output, as a slow run would be

        assert main(["ingest", "droid", "--input", str(dataset), "--output", str(output), *OPTIONS,
                     "--shard-samples", "40"]) == 2
        refused = capsys.readouterr().err
        assert re.search(rf"is being written by another run: pid {first.pid} on host \S+, started \d{{4}}-", refused)
    finally:
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()

    assert main(["ingest", "droid", "--input", str(dataset), "--output", str(output), *OPTIONS,
                 "--shard-samples", "30"]) == 2
    refused = capsys.readouterr().err
    assert "sink.shards.max_samples: 40 (recorded) -> 30 (this run)" in refused and "--overwrite" in refused
    assert refused.count("error:") == 1

    assert main(["ingest", "droid", "--input", str(dataset), "--output", str(output), *OPTIONS,
                 "--shard-samples", "30", "--overwrite"]) == 0
    reference = _reference(dataset, tmp_path / "reference", "--shard-samples", "30")
    assert _shards(output) == _shards(reference)
    assert pq.read_table(output / "manifest.parquet").equals(pq.read_table(reference / "manifest.parquet"))
    assert [p.name for p in output.rglob("*") if ".tmp-" in p.name] == []


def test_a_worker_of_a_killed_driver_commits_nothing_into_the_new_runs_output(tmp_path):
    from vlaforge.datasets.synth.droid import write_droid_dataset

    dataset = write_droid_dataset(tmp_path / "raw", n_episodes=12, n_shards=6, seed=3)
    output = tmp_path / "out"
    log = tmp_path / "old-worker.log"
    driver = subprocess.Popen([sys.executable, "-c", OLD_DRIVER, str(dataset), str(output), OLD_WORKER, str(log)],
                              start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_commits(output, 1, driver)
    worker = _old_worker(driver.pid)
    try:
        _stop_outside_commits(worker, output)
        os.kill(driver.pid, signal.SIGKILL)  # the driver dies; its worker lives on, paused mid-unit
        driver.wait()

        assert main(["ingest", "droid", "--input", str(dataset), "--output", str(output), *OPTIONS,
                     "--shard-samples", "7", "--overwrite"]) == 0
        owned_by_new_run = _shards(output)
        os.kill(worker, signal.SIGCONT)  # the old worker goes on, as if Ray had not reaped it yet
        _wait_until_gone(worker)
    finally:
        for pid in (worker, driver.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        driver.wait()

    assert "OutputTakenError" in log.read_text() and "no longer owns the output" in log.read_text()
    reference = _reference(dataset, tmp_path / "reference", "--shard-samples", "7")
    assert _shards(output) == owned_by_new_run == _shards(reference)
    assert pq.read_table(output / "manifest.parquet").equals(pq.read_table(reference / "manifest.parquet"))
    assert sorted(p.name for p in (output / "_commits").iterdir()) == sorted(
        p.name for p in (reference / "_commits").iterdir())
    assert [p.name for p in output.rglob("*") if ".tmp-" in p.name] == []


def _old_worker(driver_pid):
    """The pid of the old driver's worker process (its only child)."""
    children = psutil.Process(driver_pid).children()
    assert len(children) == 1, children
    return children[0].pid


def _wait_until_gone(pid):
    """The old worker ends by itself: its next commit is refused (OutputTakenError) and it exits."""
    deadline = time.monotonic() + 120
    while pathlib.Path(f"/proc/{pid}").exists() and _state(pid) != "Z":
        assert time.monotonic() < deadline, "the old worker is still running"
        time.sleep(0.05)


def _state(pid):
    try:
        return pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return "Z"
