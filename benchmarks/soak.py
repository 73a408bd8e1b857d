"""Soak: 100x the demo's DROID episodes through the ingest and then the loader; memory must stay flat and throughput
steady from the first fifth of the work to the last.

    python benchmarks/soak.py                      # 600 episodes (100x the demo's 6), about 10 minutes here
    python benchmarks/soak.py --scale 10 --json soak.json

The ingest runs in this process (`LocalRunner`, one unit per TFRecord file) while a thread samples its RSS; the loader
(`CorpusLoader`, 2 worker processes) then streams one epoch of the training split while the PSS of the process tree
is sampled. Each run is cut into fifths by work done: steps (or samples) per second and peak memory per fifth. The
JSON output holds the tables and, under "rates", `ingest.droid.steps_per_core_s` for `vlaforge plan --rates`.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import tempfile
import threading
import time

import psutil

from vlaforge.datasets.synth.droid import write_droid_dataset
from vlaforge.pipelines.corpus_manifest import ComponentKind, CorpusConfig, CorpusInput, build_corpus, write_corpus
from vlaforge.pipelines.ingest_recipe import IngestOptions, build_ingest_job
from vlaforge.pipelines.job import finalize_job, plan_units, run_units
from vlaforge.pipelines.runners import LocalRunner
from vlaforge.training.data.collate import Batcher
from vlaforge.training.data.corpus_loader import CorpusLoader
from vlaforge.training.data.robot_transform import RobotSampleTransform

DEMO_EPISODES = 6
FIFTHS = 5
MIB = 2**20


@dataclasses.dataclass
class Trace:
    """Work done over time, and memory over time."""

    work: list[tuple[float, int]] = dataclasses.field(default_factory=list)
    """(seconds since start, cumulative work) after each unit or batch."""
    memory: list[tuple[float, int]] = dataclasses.field(default_factory=list)
    """(seconds since start, bytes)."""

    def fifths(self) -> list[dict[str, float]]:
        """Per fifth of the units or batches, in order: their rate (work per second) and the peak memory sampled
        while they ran (the nearest sample when none fell inside)."""
        size = len(self.work) / FIFTHS
        rows, start_t, start_w = [], 0.0, 0
        for k in range(FIFTHS):
            group = self.work[round(k * size):round((k + 1) * size)] or self.work[-1:]
            end_t, end_w = group[-1]
            inside = [b for t, b in self.memory if start_t < t <= end_t]
            nearest = min(self.memory, key=lambda sample: abs(sample[0] - end_t))[1] if self.memory else 0
            rows.append({"rate": (end_w - start_w) / max(end_t - start_t, 1e-9),
                         "peak_mib": max(inside, default=nearest) / MIB})
            start_t, start_w = end_t, end_w
        return rows


class Sampler(threading.Thread):
    """Samples a memory measure every `period_s` into a trace, until stopped."""

    def __init__(self, trace: Trace, measure, start: float, period_s: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.trace, self.measure, self.start_time, self.period_s = trace, measure, start, period_s
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.trace.memory.append((time.perf_counter() - self.start_time, self.measure()))
            self.stopped.wait(self.period_s)


def rss() -> int:
    return psutil.Process().memory_info().rss


def tree_pss() -> int:
    """PSS of this process and its children (pages the forked loader workers share count once)."""
    process = psutil.Process()
    total = process.memory_full_info().pss
    for child in process.children(recursive=True):
        try:
            total += child.memory_full_info().pss
        except psutil.NoSuchProcess:
            continue
    return total


def soak_ingest(root: pathlib.Path, episodes: int) -> tuple[Trace, dict, float]:
    raw = write_droid_dataset(root / "raw", n_episodes=episodes, n_shards=max(2, episodes // 6))
    job = build_ingest_job("droid", str(raw), str(root / "shards"), IngestOptions(), {"files_per_unit": 1})
    units, trace, steps = plan_units(job), Trace(), [0]
    start, cpu = time.perf_counter(), time.process_time()
    sampler = Sampler(trace, rss, start)
    sampler.start()

    def done(summary) -> None:
        steps[0] += summary.samples_written
        trace.work.append((time.perf_counter() - start, steps[0]))

    run_units(job, units, LocalRunner(), done)
    cpu_s = time.process_time() - cpu
    sampler.stopped.set()
    report = finalize_job(job, units, LocalRunner())
    return trace, report, steps[0] / cpu_s


def soak_loader(root: pathlib.Path, samples: int) -> Trace:
    corpus = root / "corpus.json"
    write_corpus(build_corpus([CorpusInput(path=root / "shards", kind=ComponentKind.ROBOT)], corpus,
                              CorpusConfig(ratio={"vl": 0.0, "robot": 1.0})), corpus)
    config = CorpusLoader.Config(corpus_url=str(corpus), num_workers=2, batch=Batcher.Config(batch_size=32),
                                 robot=RobotSampleTransform.Config(image_size=(180, 320), chunk_len=30))
    trace, count = Trace(), 0
    start = time.perf_counter()
    sampler = Sampler(trace, tree_pss, start, period_s=0.5)
    sampler.start()
    with CorpusLoader(config) as loader:
        for batch in loader:
            count += len(batch)
            trace.work.append((time.perf_counter() - start, count))
            if count >= samples:
                break
    sampler.stopped.set()
    return trace


def table(title: str, unit: str, rows: list[dict[str, float]]) -> str:
    lines = [f"{title}", f"| fifth | {unit}/s | vs first | peak MiB | vs first |", "|---|---|---|---|---|"]
    for k, row in enumerate(rows, 1):
        lines.append(f"| {k} | {row['rate']:,.0f} | {row['rate'] / rows[0]['rate']:.2f} | {row['peak_mib']:,.0f} | "
                     f"{row['peak_mib'] / rows[0]['peak_mib']:.2f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, default=100, help="x the demo's 6 DROID episodes (default 100)")
    parser.add_argument("--json", type=pathlib.Path, help="write the tables and rates here")
    parser.add_argument("--workdir", type=pathlib.Path, help="keep the data here (default: a temporary directory)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = args.workdir or pathlib.Path(scratch)
        ingest, report, per_core = soak_ingest(root, DEMO_EPISODES * args.scale)
        loader = soak_loader(root, report["steps_by_split"].get("train", report["steps_written"]))
    result = {"scale": args.scale, "episodes": DEMO_EPISODES * args.scale, "steps": report["steps_written"],
              "ingest": ingest.fifths(), "loader": loader.fifths(),
              "rates": {"ingest.droid.steps_per_core_s": per_core}}
    print(table(f"ingest, {result['episodes']} DROID episodes, {result['steps']} steps (RSS)", "steps",
                result["ingest"]))
    print(table("loader, one epoch of the train split, 2 workers (PSS of the process tree)", "samples",
                result["loader"]))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
