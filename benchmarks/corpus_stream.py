"""CorpusStream read speed on one core, against bare webdataset reading the same shards (raw bytes, no decoding).

    python benchmarks/corpus_stream.py            # about a minute on 2 shared cores
    python benchmarks/corpus_stream.py --quick    # smaller data

Both sides hand out raw samples (dicts of member bytes) and decode nothing, so the ratio is the cost of what
CorpusStream adds: the mixture schedule, the per-epoch plan, interleaved reads, the block shuffle, and the safety
checks (member names, extensions, the size against the manifest, a whole-shard header pre-scan for local files).
webdataset reads each shard once, in order, with no shuffle: the floor of streaming tar reading in Python.

1. Robot samples: a synthetic DROID ingest (3 cameras, 180x320 JPEG, ~70 KB a sample).
2. Small samples: the same samples with 16x16 frames (a few KB), where per-member work dominates.
3. CorpusStream with `verify_sha256` (one extra hashing pass per shard), on the robot samples.
4. Over HTTP (`python -m http.server` on 127.0.0.1): webdataset through curl against CorpusStream through urllib.

Every figure is the median of `--repeats` runs, the two readers alternating, after one untimed read that warms the
page cache. Compare ratios, not absolute numbers across runs: these machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from statistics import median

import webdataset

from vlaforge.datasets.synth.droid import write_droid_dataset
from vlaforge.pipelines.corpus_manifest import ComponentKind, CorpusConfig, CorpusInput, build_corpus, write_corpus
from vlaforge.pipelines.ingest_recipe import IngestOptions, build_ingest_job
from vlaforge.pipelines.job import run_job
from vlaforge.pipelines.runners import LocalRunner
from vlaforge.pipelines.shards.manifest import read_manifest
from vlaforge.training.data.corpus_stream import CorpusStream

TARGET = 0.9
"""CorpusStream samples/s over webdataset's should be at least this (the loader's target, issue 4)."""


def make_corpus(root: pathlib.Path, episodes: int, frame_size: tuple[int, int] | None) -> pathlib.Path:
    """A DROID synthetic dataset ingested into shards, and a one-component corpus over its train split."""
    raw = write_droid_dataset(root / "raw", n_episodes=episodes, n_shards=4, min_steps=60, max_steps=60,
                              failure_every=0)
    options = IngestOptions(validation_fraction=0.0, shard_max_samples=400, frame_size=frame_size)
    run_job(build_ingest_job("droid", str(raw), str(root / "shards"), options), LocalRunner())
    corpus = root / "corpus.json"
    inputs = [CorpusInput(path=root / "shards", kind=ComponentKind.ROBOT)]
    write_corpus(build_corpus(inputs, corpus, CorpusConfig()), corpus)
    return corpus


def shard_urls(corpus: pathlib.Path, base: str | None = None) -> list[str]:
    records = read_manifest(corpus.parent / "shards" / "manifest.parquet")
    return [f"{base}/shards/{r.url}" if base else str(corpus.parent / "shards" / r.url) for r in records]


def webdataset_reader(urls: list[str]) -> Callable[[], int]:
    def read() -> int:
        return sum(1 for _ in webdataset.WebDataset(urls, shardshuffle=False, empty_check=False))

    return read


def stream_reader(corpus_url: str, samples: int, **options) -> Callable[[], int]:
    def read() -> int:
        stream = CorpusStream(corpus_url, **options)
        for _ in range(samples):
            next(stream)
        stream.close()
        return samples

    return read


def timed(read: Callable[[], int]) -> float:
    """Samples per second of one call."""
    start = time.perf_counter()
    count = read()
    return count / (time.perf_counter() - start)


def compare(name: str, baseline: Callable[[], int], candidate: Callable[[], int], repeats: int) -> tuple:
    baseline(), candidate()  # warm the page cache (and the server)
    rates: dict[str, list[float]] = {"baseline": [], "candidate": []}
    for _ in range(repeats):
        rates["baseline"].append(timed(baseline))
        rates["candidate"].append(timed(candidate))
    base, cand = median(rates["baseline"]), median(rates["candidate"])
    return name, base, cand, cand / base


def serve(directory: pathlib.Path) -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                              cwd=directory, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    for _ in range(100):
        try:
            urllib.request.urlopen(f"{base}/corpus.json", timeout=1).close()
            return server, base
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("the HTTP server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true", help="fewer episodes and repeats")
    parser.add_argument("--repeats", type=int, help="timed runs per reader (default 5, quick 3)")
    args = parser.parse_args()
    episodes, repeats = (12, args.repeats or 3) if args.quick else (30, args.repeats or 5)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        robot = make_corpus(root / "robot", episodes, None)
        small = make_corpus(root / "small", episodes, (16, 16))
        records = read_manifest(robot.parent / "shards" / "manifest.parquet")
        samples = sum(r.samples for r in records)
        bytes_per_sample = sum(r.bytes for r in records) / samples
        for name, corpus in (("robot samples, local", robot), ("small samples, local", small)):
            rows.append(compare(name, webdataset_reader(shard_urls(corpus)), stream_reader(str(corpus), samples),
                                repeats))
        rows.append(compare("robot samples, local, verify_sha256", webdataset_reader(shard_urls(robot)),
                            stream_reader(str(robot), samples, verify_sha256=True), repeats))
        server, base = serve(robot.parent)
        try:
            urls = [f"pipe:curl -s {url}" for url in shard_urls(robot, base)]
            rows.append(compare("robot samples, HTTP", webdataset_reader(urls),
                                stream_reader(f"{base}/corpus.json", samples), repeats))
        finally:
            os.kill(server.pid, signal.SIGTERM)
            server.wait(timeout=10)
    print(f"\n{samples} samples a run, {bytes_per_sample / 1024:.0f} KiB a robot sample; median of {repeats} runs\n")
    print(f"{'case':40} {'webdataset/s':>13} {'CorpusStream/s':>15} {'ratio':>7}  target >= {TARGET}")
    for name, base, cand, ratio in rows:
        verdict = "(hashes each shard first)" if "verify" in name else "ok" if ratio >= TARGET else "BELOW"
        print(f"{name:40} {base:13,.0f} {cand:15,.0f} {ratio:7.2f}  {verdict}")


if __name__ == "__main__":
    main()
