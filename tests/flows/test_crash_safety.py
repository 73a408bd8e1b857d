"""Kill -9 an ingest in the middle, run it again: the same bytes as an uninterrupted run, nothing lost or doubled."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import pyarrow.parquet as pq

OPTIONS = {"shard_max_samples": 40, "validation_fraction": 0.3}


def _cli(dataset, output):
    vlaforge = pathlib.Path(sys.executable).with_name("vlaforge")
    return [str(vlaforge), "ingest", "droid", "--input", str(dataset), "--output", str(output), "--runner", "local",
            "--shard-samples", "40", "--validation-fraction", "0.3", "--no-progress"]


def _files(output):
    return {p.relative_to(output).as_posix(): p.read_bytes() for p in sorted(output.rglob("*.tar"))}


def test_kill_9_mid_run_then_rerun(tmp_path, tmp_path_factory, ingest_locally):
    from vlaforge.datasets.synth.droid import write_droid_dataset

    dataset = write_droid_dataset(tmp_path / "raw", n_episodes=12, n_shards=6, seed=3)
    reference = tmp_path_factory.mktemp("reference")
    ingest_locally("droid", dataset, reference, **OPTIONS)

    output = tmp_path / "out"
    process = subprocess.Popen(_cli(dataset, output), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while len(list((output / "_commits").glob("*.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    finished_units = len(list((output / "_units").glob("*.json")))
    assert 0 < len(list((output / "_commits").glob("*.json"))) and finished_units < 6, "the kill came too late"
    assert not (output / "manifest.parquet").exists()

    rerun = subprocess.run(_cli(dataset, output), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert _files(output) == _files(reference)
    assert pq.read_table(output / "manifest.parquet").equals(pq.read_table(reference / "manifest.parquet"))
    keys = [k for row in pq.read_table(output / "manifest.parquet").to_pylist() for k in [row["url"]]]
    assert len(keys) == len(set(keys))
    leftovers = [p.name for p in output.rglob("*") if ".tmp-" in p.name]
    assert leftovers == [], f"temporary files left behind: {leftovers}"
