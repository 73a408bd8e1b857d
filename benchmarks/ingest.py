"""Ingest speed on one core: each source's steps/s, DROID against the I/O floor, LeRobot against a bare decode+encode
loop, and peak memory against dataset size.

    python benchmarks/ingest.py            # about 3 minutes on 2 shared cores
    python benchmarks/ingest.py --quick    # smaller data, under a minute

Synthetic datasets (the format-faithful writers in `datasets/synth/`) are written to a temporary directory, then
ingested with `LocalRunner`: one process and no Ray, so steps/s is per core (PyAV's decoder threads aside, which
is why CPU seconds are shown beside wall seconds). Every time is the median of `--repeats` runs, and every ratio
compares two things measured alternately in the same run, because these machines are shared and noisy: compare
ratios, not absolute numbers across runs.

1. Steps/s per source: DROID (RLDS TFRecord, 3 cameras 180x320 JPEG), LeRobot v3.0 and v2.1 (MolmoAct-like,
   3 cameras 180x320 H.264). "units" is the work a runner spreads over workers (read, filter, build samples,
   write shards); "end to end" adds the finalize step (manifest, quarantine table, two statistics passes).
2. DROID JPEG pass-through against the I/O floor: plain reads of the same TFRecord bytes plus plain writes of the
   same shard bytes into as many files, each fsync'ed and renamed like a shard. Floor time / ingest time, by wall
   time; also by CPU time, since the ingest hashes each shard on a second thread (see
   `pipelines/shards/digest.py`), which a busy machine does not have to spare.
3. LeRobot video ingest against decoding the same mp4s with PyAV and JPEG-encoding every frame with simplejpeg at
   the same quality and size, with no pipeline around it. Baseline time / ingest time, wall and CPU.
4. Peak RSS of an ingest of N and of 10 x N episodes, each in a fresh process: it should be set by the episodes in
   flight, not by the dataset size.
5. The JPEG check, side by side: "header" (markers and header), "scan" (the default: a 1/8-scale decode that reads
   every scan's entropy-coded data, so a frame damaged inside it is caught) and "full" (a full decode), per frame
   over every DROID frame, and as the DROID ingest's steps/s with each (`--verify-jpeg`).

The page cache cannot be dropped without root, so each source is read once before anything is timed (every timed
run then reads it from memory), and `os.sync()` runs before each timed run so that none pays for another's
writeback.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import pathlib
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from statistics import median
from typing import Any

import av
import simplejpeg

from vlaforge.datasets.synth.droid import write_droid_dataset
from vlaforge.datasets.synth.lerobot import write_lerobot_dataset
from vlaforge.pipelines.atomic_files import publish
from vlaforge.pipelines.ingest_recipe import IngestOptions, build_ingest_job
from vlaforge.pipelines.job import finalize_job, plan_units, run_units
from vlaforge.pipelines.runners import LocalRunner

CHUNK = 1 << 20
"""Bytes per read and write call of the I/O floor."""
FLOOR_TARGET = 0.5
"""Floor time / DROID ingest time should be at least this."""
DECODE_TARGET = 0.7
"""Decode+encode time / LeRobot ingest time should be at least this."""
RSS_TARGET = 1.2
"""Peak RSS of 10 x N episodes over that of N episodes should be at most this (flat, give or take noise)."""


@dataclasses.dataclass(frozen=True)
class Sizes:
    """Episodes per synthetic dataset, each `steps` long: equal lengths keep the memory comparison about the
    episode count, not about the longest episode."""

    droid: int
    lerobot_v30: int
    lerobot_v21: int
    steps: int

    @classmethod
    def for_mode(cls, quick: bool) -> "Sizes":
        if quick:
            return cls(droid=20, lerobot_v30=10, lerobot_v21=3, steps=60)
        return cls(droid=40, lerobot_v30=20, lerobot_v21=8, steps=150)


@dataclasses.dataclass(frozen=True)
class Datasets:
    droid: pathlib.Path
    droid_tenth: pathlib.Path
    """The first tenth of `droid`'s episodes, for the memory comparison."""
    lerobot_v30: pathlib.Path
    lerobot_v30_tenth: pathlib.Path
    lerobot_v21: pathlib.Path


@dataclasses.dataclass(frozen=True)
class Timing:
    wall: float
    cpu: float


@dataclasses.dataclass(frozen=True)
class Run:
    """One timed ingest: steps written, and the time of the units and of the finalize step."""

    steps: int
    units: Timing
    finalize: Timing


# Data ---------------------------------------------------------------------------------------------------------


def write_datasets(root: pathlib.Path, sizes: Sizes) -> Datasets:
    """The synthetic datasets. Every DROID episode succeeds, so every step read is kept (bar idle trimming)."""
    droid = {"n_shards": 2, "min_steps": sizes.steps, "max_steps": sizes.steps, "failure_every": 0}
    lerobot = {"min_steps": sizes.steps, "max_steps": sizes.steps}
    return Datasets(
        droid=write_droid_dataset(root / "droid", n_episodes=sizes.droid, **droid),
        droid_tenth=write_droid_dataset(root / "droid_tenth", n_episodes=sizes.droid // 10, **droid),
        lerobot_v30=write_lerobot_dataset(root / "lerobot_v30", n_episodes=sizes.lerobot_v30, **lerobot),
        lerobot_v30_tenth=write_lerobot_dataset(root / "lerobot_v30_tenth", n_episodes=sizes.lerobot_v30 // 10,
                                                **lerobot),
        lerobot_v21=write_lerobot_dataset(root / "lerobot_v21", version="v2.1", n_episodes=sizes.lerobot_v21,
                                          **lerobot),
    )


def read_all(paths: list[pathlib.Path]) -> int:
    """Read files in CHUNK-sized pieces into one reused buffer (plain `readinto()`, the cheapest plain read: no
    allocation per call); returns the bytes read."""
    buffer, total = memoryview(bytearray(CHUNK)), 0
    for path in paths:
        with open(path, "rb", buffering=0) as handle:
            while size := handle.readinto(buffer):
                total += size
    return total


def fresh(directory: pathlib.Path) -> pathlib.Path:
    """`directory`, empty, with everything written so far flushed to disk."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    os.sync()
    return directory


# Measurements -------------------------------------------------------------------------------------------------


def timed(fn: Callable[[], Any]) -> tuple[Timing, Any]:
    """Wall and CPU seconds (all threads of this process) of `fn()`, and what it returned."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return Timing(time.perf_counter() - wall, time.process_time() - cpu), result


def ingest(source: str, root: pathlib.Path, output: pathlib.Path, options: IngestOptions = IngestOptions()) -> Run:
    """Ingest with `options` (default ones) and `LocalRunner`, timing the units and the finalize step apart."""
    job = build_ingest_job(source, str(root), str(fresh(output)), options)
    runner = LocalRunner()
    units = plan_units(job)
    units_time, summaries = timed(lambda: run_units(job, units, runner))
    finalize_time, _ = timed(lambda: finalize_job(job, units, runner))
    return Run(sum(s.samples_written for s in summaries), units_time, finalize_time)


def _pieces(size: int) -> list[memoryview]:
    """`size` bytes as CHUNK-sized views of one block (views, so that making them copies nothing)."""
    block = memoryview(bytes(range(256)) * (CHUNK // 256))
    return [block[: min(CHUNK, size - start)] for start in range(0, size, CHUNK)]


def io_floor(sources: list[pathlib.Path], shard_sizes: list[int], output: pathlib.Path) -> None:
    """Read the source bytes, then write `shard_sizes` bytes into as many files, each published like a shard."""
    read_all(sources)
    for index, size in enumerate(shard_sizes):
        temporary = output / f".shard-{index}.tar.tmp"
        with open(temporary, "wb") as handle:
            for piece in _pieces(size):
                handle.write(piece)
        publish(temporary, output / f"shard-{index}.tar")  # fsync, then rename, as the shard writer does


def sha256_cost(size: int) -> None:
    """SHA-256 over `size` bytes: what the ingest spends hashing its shards for the manifest (the speed does not
    depend on the data)."""
    digest = hashlib.sha256()
    for piece in _pieces(size):
        digest.update(piece)


def decode_encode(videos: list[pathlib.Path], quality: int) -> int:
    """Decode every frame of `videos` with PyAV (decoder threads set as the ingest sets them) and JPEG-encode it
    with simplejpeg; returns the number of frames."""
    frames = 0
    for path in videos:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_type = "AUTO"
            for frame in container.decode(stream):
                simplejpeg.encode_jpeg(frame.to_ndarray(format="rgb24"), quality=quality, colorspace="RGB")
                frames += 1
    return frames


@dataclasses.dataclass
class FloorComparison:
    runs: list[Run]
    floors: list[Timing]
    hashes: list[Timing]
    source_bytes: int
    shard_bytes: list[int]


def compare_droid(root: pathlib.Path, work: pathlib.Path, repeats: int) -> FloorComparison:
    """DROID ingest, the I/O floor and SHA-256 of the shard bytes, in turn, after one untimed ingest that warms up
    and gives the shard sizes."""
    sources = sorted(root.glob("*.tfrecord-*"))
    read_all(sources)
    ingest("droid", root, work / "out")
    sizes = [path.stat().st_size for path in sorted((work / "out").glob("*/*.tar"))]
    comparison = FloorComparison([], [], [], sum(path.stat().st_size for path in sources), sizes)
    for _ in range(repeats):
        comparison.floors.append(timed(lambda: io_floor(sources, sizes, fresh(work / "floor")))[0])
        comparison.hashes.append(timed(lambda: sha256_cost(sum(sizes)))[0])
        comparison.runs.append(ingest("droid", root, work / "out"))
    return comparison


@dataclasses.dataclass
class DecodeComparison:
    runs: list[Run]
    baselines: list[Timing]
    frames: int


def compare_lerobot(root: pathlib.Path, warmup: pathlib.Path, work: pathlib.Path, repeats: int) -> DecodeComparison:
    """LeRobot ingest and bare decode+encode of its mp4s, alternately, after an untimed ingest of `warmup`."""
    videos = sorted(root.glob("videos/**/*.mp4"))
    read_all(videos)
    ingest("lerobot", warmup, work / "out")
    quality = IngestOptions().jpeg_quality
    comparison = DecodeComparison([], [], 0)
    for _ in range(repeats):
        os.sync()
        baseline, comparison.frames = timed(lambda: decode_encode(videos, quality))
        comparison.baselines.append(baseline)
        comparison.runs.append(ingest("lerobot", root, work / "out"))
    return comparison


@dataclasses.dataclass
class CheckComparison:
    frames: int
    frame_bytes: int
    per_frame: dict[str, list[float]]
    """Mode -> seconds to check every frame, per repeat."""
    runs: dict[str, list[Run]]
    """Mode -> DROID ingests with `--verify-jpeg MODE`."""


def droid_frames(root: pathlib.Path) -> list[bytes]:
    """Every camera frame of the DROID dataset, as stored (read through the source without a check)."""
    from vlaforge.datasets.droid_rlds import DroidRldsSource
    from vlaforge.datasets.drops import DropLedger
    from vlaforge.datasets.frames import FrameConfig

    source = DroidRldsSource.Config(root=str(root), frames=FrameConfig(verify="header")).build()
    return [bytes(frame) for unit in source.plan() for episode in source.read(unit, DropLedger())
            for frames in episode.frames.values() for frame in frames]


def check_all(frames: list[bytes], mode: str) -> None:
    from vlaforge.datasets.frames import jpeg_shape

    for frame in frames:
        jpeg_shape(frame, mode)


def compare_checks(root: pathlib.Path, work: pathlib.Path, repeats: int) -> CheckComparison:
    """Each JPEG check over every DROID frame, and a DROID ingest with each, the modes alternating in each repeat."""
    frames = droid_frames(root)
    modes = ("header", "scan", "full")
    comparison = CheckComparison(len(frames), sum(map(len, frames)), {m: [] for m in modes}, {m: [] for m in modes})
    for _ in range(repeats):
        for mode in modes:
            comparison.per_frame[mode].append(timed(lambda: check_all(frames, mode))[0].cpu)
            comparison.runs[mode].append(ingest("droid", root, work / "out", IngestOptions(verify_jpeg=mode)))
    return comparison


_LAUNCHER = "import subprocess, sys; raise SystemExit(subprocess.call(sys.argv[1:]))"
"""Starts the measured process from a small one. Linux carries a parent's peak RSS into the ru_maxrss of a child
it spawns (subprocess uses vfork, and exec keeps the old address space's high-water mark), so a child spawned
straight from this process would report this process's peak; a grandchild spawned by a small launcher does not."""


def peak_rss(source: str, root: pathlib.Path, output: pathlib.Path) -> dict[str, int]:
    """Peak RSS (KiB) of a whole ingest (plan, units, finalize) in a fresh process: before it, after the units,
    and at the end."""
    fresh(output)
    command = [sys.executable, "-c", _LAUNCHER, sys.executable, __file__, "--rss-child", source, str(root), str(output)]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


def rss_child(source: str, root: str, output: str) -> None:
    """Runs in the fresh process: ingest, then print as JSON the peak RSS (KiB) before it, after the units, and at
    the end (after finalize, whose statistics passes hold one shard's arrays at a time)."""
    job = build_ingest_job(source, root, output, IngestOptions())
    runner = LocalRunner()
    peak = {"before_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}
    units = plan_units(job)
    summaries = run_units(job, units, runner)
    peak["units_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    finalize_job(job, units, runner)
    peak["peak_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({**peak, "episodes": sum(s.episodes_written for s in summaries)}))


# Report -------------------------------------------------------------------------------------------------------


def print_table(title: str, header: list[str], rows: list[list[str]], notes: list[str] | None = None) -> None:
    """A plain-text table: the first column left-aligned, the others right-aligned."""
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}")
    for row in [header, *rows]:
        cells = [cell.ljust(widths[0]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)]
        print("  " + "  ".join(cells))
    for note in notes or []:
        print(f"  {note}")


def verdict(ratio: float, target: float, at_least: bool = True) -> str:
    return "PASS" if (ratio >= target if at_least else ratio <= target) else "MISS"


def steps_per_cpu_s(runs: list[Run]) -> float:
    """Steps per CPU-second of the units (read, filter, build samples, write shards): `vlaforge plan`'s per-core
    ingest rate."""
    return runs[0].steps / median([r.units.cpu for r in runs])


def write_rates(path: pathlib.Path, rates: dict[str, float]) -> None:
    """`{"rates": {name: value}, "measured_on": ...}`, the JSON `vlaforge plan --rates FILE` reads."""
    import json
    import platform

    path.write_text(json.dumps({"rates": rates, "measured_on": f"{platform.node()}, {os.cpu_count()} cores, "
                                f"{time.strftime('%Y-%m-%d')}"}, indent=1))
    print(f"rates for vlaforge plan --rates: {path}")


def steps_table(rows: dict[str, tuple[int, list[Run]]]) -> None:
    body = []
    for name, (episodes, runs) in rows.items():
        steps = runs[0].steps
        units = median([r.units.wall for r in runs])
        cpu = median([r.units.cpu for r in runs])
        whole = median([r.units.wall + r.finalize.wall for r in runs])
        body.append([name, str(episodes), str(steps), f"{units:.2f}", f"{steps / units:,.0f}", f"{steps / cpu:,.0f}",
                     f"{whole:.2f}", f"{steps / whole:,.0f}"])
    print_table("1. Steps/s per core (LocalRunner, one process)",
                ["source", "episodes", "steps", "units s", "steps/s", "steps/CPU-s", "end to end s", "steps/s"],
                body, ["units: read, filter, build samples, write shards; end to end adds finalize (manifest, "
                       "stats passes)"])


def floor_table(droid: FloorComparison) -> None:
    floor, sha256 = median([t.wall for t in droid.floors]), median([t.wall for t in droid.hashes])
    floor_cpu, sha256_cpu = median([t.cpu for t in droid.floors]), median([t.cpu for t in droid.hashes])
    ingest_time, ingest_cpu = median([r.units.wall for r in droid.runs]), median([r.units.cpu for r in droid.runs])
    ratio = floor / ingest_time
    source_mb, shard_mb = droid.source_bytes / 1e6, sum(droid.shard_bytes) / 1e6
    steps = droid.runs[0].steps
    rows = [
        [f"I/O floor: read {source_mb:.0f} MB, write {shard_mb:.0f} MB in {len(droid.shard_bytes)} files",
         f"{floor:.3f}", f"{floor_cpu:.3f}", f"{(source_mb + shard_mb) / floor:,.0f}", "", ""],
        [f"SHA-256 of the {shard_mb:.0f} MB of shards (the manifest records it)", f"{sha256:.3f}",
         f"{sha256_cpu:.3f}", f"{shard_mb / sha256:,.0f}", "", ""],
        [f"DROID ingest units ({steps} steps, {shard_mb * 1e3 / steps:.0f} KB/step)", f"{ingest_time:.3f}",
         f"{ingest_cpu:.3f}", f"{(source_mb + shard_mb) / ingest_time:,.0f}", "", ""],
        ["floor / ingest (wall)", f"{ratio:.2f}", "", "", f">= {FLOOR_TARGET}", verdict(ratio, FLOOR_TARGET)],
        ["(floor + SHA-256) / ingest (wall), for reference", f"{(floor + sha256) / ingest_time:.2f}", "", "", "", ""],
    ]
    print_table("2. DROID JPEG pass-through vs the I/O floor",
                ["measurement", "wall s", "CPU s", "MB/s", "target", "result"],
                rows, ["floor: plain readinto() of the TFRecords into one 1 MiB buffer, plain write() of the shard "
                       "bytes in 1 MiB pieces, fsync + rename per file (1 MiB measured fastest of 1 and 4 MiB)",
                       "CPU s counts every thread of the process: the ingest hashes each shard on a helper thread, "
                       "so its CPU time exceeds its wall time; the floor's fsync waits are wall time, not CPU",
                       "the page cache cannot be dropped: the source is read once before both, so both read it "
                       "from memory; os.sync() before each run; medians of the timed runs"])


def decode_table(rows: dict[str, DecodeComparison]) -> None:
    body = []
    for name, comparison in rows.items():
        base_wall = median([t.wall for t in comparison.baselines])
        base_cpu = median([t.cpu for t in comparison.baselines])
        run_wall = median([r.units.wall for r in comparison.runs])
        run_cpu = median([r.units.cpu for r in comparison.runs])
        wall_ratio, cpu_ratio = base_wall / run_wall, base_cpu / run_cpu
        body.append([name, str(comparison.frames), f"{base_wall:.2f}", f"{run_wall:.2f}", f"{wall_ratio:.2f}",
                     verdict(wall_ratio, DECODE_TARGET), f"{base_cpu:.2f}", f"{run_cpu:.2f}", f"{cpu_ratio:.2f}",
                     verdict(cpu_ratio, DECODE_TARGET)])
    print_table("3. LeRobot video ingest vs standalone decode + encode (PyAV + simplejpeg, same quality and size)",
                ["dataset", "frames", "base wall s", "ingest wall s", "wall ratio", "", "base CPU s", "ingest CPU s",
                 "CPU ratio", ""],
                body, [f"ratio = baseline / ingest, target >= {DECODE_TARGET}; CPU counts every thread of the process "
                       "(FFmpeg decodes with threads in both)"])


def rss_table(rows: dict[str, tuple[dict, dict]]) -> None:
    body = []
    for name, (small, large) in rows.items():
        ratio = large["peak_kib"] / small["peak_kib"]
        units = " / ".join(f"{r['units_kib'] / 1024:.0f}" for r in (small, large))
        growth = " / ".join(f"{(r['peak_kib'] - r['before_kib']) / 1024:.0f}" for r in (small, large))
        body.append([name, str(small["episodes"]), f"{small['peak_kib'] / 1024:.0f}", str(large["episodes"]),
                     f"{large['peak_kib'] / 1024:.0f}", f"{ratio:.2f}", f"<= {RSS_TARGET}",
                     verdict(ratio, RSS_TARGET, at_least=False), units, growth])
    print_table("4. Peak RSS, N vs 10 x N episodes (a fresh process each, whole ingest)",
                ["source", "N", "peak MB", "10 x N", "peak MB", "ratio", "target", "result",
                 "after units MB (N / 10N)", "above imports MB (N / 10N)"],
                body, ["peak = ru_maxrss in the child; 'after units' is its peak before finalize, 'above imports' "
                       "subtracts its peak before the ingest began"])


def checks_table(checks: CheckComparison) -> None:
    per_frame = {mode: median(times) / checks.frames for mode, times in checks.per_frame.items()}
    units = {mode: median([r.units.wall for r in runs]) for mode, runs in checks.runs.items()}
    steps = checks.runs["header"][0].steps
    body = [[mode, f"{per_frame[mode] * 1e6:,.1f}", f"{per_frame[mode] / per_frame['header']:,.0f}",
             f"{per_frame[mode] / per_frame['full']:.2f}", f"{steps / units[mode]:,.0f}",
             f"{units[mode] / units['header']:.2f}", f"{units[mode] / units['full']:.2f}"] for mode in per_frame]
    print_table(f"5. JPEG checks: {checks.frames:,} DROID frames ({checks.frame_bytes / checks.frames / 1e3:.1f} KB "
                "each, 180x320)",
                ["check", "us/frame (CPU)", "x header", "x full", "ingest steps/s", "ingest x header",
                 "ingest x full"],
                body, ["us/frame: jpeg_shape(frame, check) over every frame, CPU time, median of the repeats; "
                       "'header' here parses every header (the ingest's FrameConformer parses one per camera)",
                       "ingest: DROID units with --verify-jpeg CHECK (3 cameras a step), wall time, median; the "
                       "modes alternate within each repeat",
                       "scan and full catch the same damage (a 1/8-scale decode still Huffman-decodes every "
                       "coefficient); header catches none inside the entropy-coded data"])


# Main ---------------------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller datasets (under a minute)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (the median is shown)")
    parser.add_argument("--tmp", type=pathlib.Path, default=None, help="where to write the data (default: $TMPDIR)")
    parser.add_argument("--only-checks", action="store_true", help="only table 5, the JPEG checks")
    parser.add_argument("--json", type=pathlib.Path, help="write the measured rates here, for `vlaforge plan --rates`")
    parser.add_argument("--rss-child", nargs=3, metavar=("SOURCE", "INPUT", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.rss_child:
        rss_child(*args.rss_child)
        return
    if args.only_checks:
        with tempfile.TemporaryDirectory(prefix="vlaforge-bench-", dir=args.tmp) as tmp:
            work, sizes = pathlib.Path(tmp), Sizes.for_mode(args.quick)
            droid = write_droid_dataset(work / "droid", n_episodes=sizes.droid, n_shards=2, min_steps=sizes.steps,
                                        max_steps=sizes.steps, failure_every=0)
            checks_table(compare_checks(droid, work, args.repeats))
        return
    sizes = Sizes.for_mode(args.quick)
    with tempfile.TemporaryDirectory(prefix="vlaforge-bench-", dir=args.tmp) as tmp:
        work = pathlib.Path(tmp)
        started = time.perf_counter()
        data = write_datasets(work / "data", sizes)
        print(f"synthetic data written in {time.perf_counter() - started:.0f} s under {work}")
        droid = compare_droid(data.droid, work, args.repeats)
        v30 = compare_lerobot(data.lerobot_v30, data.lerobot_v30_tenth, work, args.repeats)
        v21 = compare_lerobot(data.lerobot_v21, data.lerobot_v30_tenth, work, args.repeats)
        rss = {
            "DROID": (peak_rss("droid", data.droid_tenth, work / "rss"), peak_rss("droid", data.droid, work / "rss")),
            "LeRobot v3.0": (peak_rss("lerobot", data.lerobot_v30_tenth, work / "rss"),
                             peak_rss("lerobot", data.lerobot_v30, work / "rss")),
        }
        steps_table({"DROID": (sizes.droid, droid.runs), "LeRobot v3.0": (sizes.lerobot_v30, v30.runs),
                     "LeRobot v2.1": (sizes.lerobot_v21, v21.runs)})
        if args.json:
            write_rates(args.json, {"ingest.droid.steps_per_core_s": steps_per_cpu_s(droid.runs),
                                    "ingest.lerobot.steps_per_core_s": steps_per_cpu_s(v30.runs)})
        floor_table(droid)
        decode_table({"LeRobot v3.0": v30, "LeRobot v2.1": v21})
        rss_table(rss)
        checks_table(compare_checks(data.droid, work, args.repeats))
        print(f"\ntotal {time.perf_counter() - started:.0f} s, {args.repeats} timed runs each")


if __name__ == "__main__":
    main()
