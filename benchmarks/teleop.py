"""Teleop ingest speed on one core, against bare reads of the same files, and peak memory as episodes grow 10x.

    python benchmarks/teleop.py            # about 3 minutes on 2 shared cores
    python benchmarks/teleop.py --quick    # smaller data, about a minute

Synthetic recordings (`datasets/synth/teleop*.py`: 3 cameras near 30 Hz with jitter and dropped frames, 4 joint
streams at 200 Hz, or ALOHA's one 50 Hz clock) are written to a temporary directory and ingested with default
options and `LocalRunner` (one process, no Ray), so steps/s is per core. Times are medians of `--repeats` runs; each
ratio compares two things measured alternately in the same run (these machines are shared and noisy).

1. Steps/s per core: MCAP (ROS 2 CDR) and ALOHA HDF5 with JPEG frames (passed through) and with raw frames
   (JPEG-encoded by the ingest). "units" is read + resample + filter + build samples + write shards.
2. Each ingest against the least any reader must do with the same file, no pipeline around it:
   - MCAP: stream every record with `mcap`'s StreamReader and CDR-decode every message of the read topics;
   - HDF5 JPEG: read qpos, qvel, action whole and every image row in blocks, cut at `compress_len`;
   - HDF5 raw: the same reads, plus JPEG-encoding every 30 Hz tick's frame with simplejpeg at the same quality.
   Ratio = baseline time / ingest time (1.0 would mean the ingest costs no more than reading).
3. Peak RSS of an ingest of episodes L s long and of episodes 10 L s long, each in a fresh process (the launcher
   of `benchmarks/ingest.py`): the whole ingest's peak (the ratio judged), and the peak after the units (read,
   resample, build and write samples) before finalize's statistics pass. A teleop `Episode` holds its frames as
   `LazyFrames`, read from the log when their sample is built, and samples are streamed into shards one step at a
   time, so the peak should not grow with the episode; the largest episode's frame bytes are shown for scale (what
   an episode holding its frames in memory would add).
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import tarfile
import tempfile
import time
from statistics import median

import h5py
import numpy as np
import simplejpeg
from mcap.records import Channel, Message, Schema
from mcap.stream_reader import StreamReader
from mcap_ros2.decoder import DecoderFactory

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import ingest as ingest_benchmark  # noqa: E402 - the sibling script: timing, fresh dirs, fresh-process RSS, tables

from vlaforge.datasets.bimanual import mcap_cameras  # noqa: E402
from vlaforge.datasets.synth.teleop_hdf5 import write_aloha_dataset  # noqa: E402
from vlaforge.datasets.synth.teleop_mcap import write_teleop_mcap_dataset  # noqa: E402
from vlaforge.pipelines.ingest_recipe import IngestOptions  # noqa: E402

RSS_TARGET = 1.2
"""Peak RSS of the whole ingest for 10 L s episodes over that for L s episodes should be at most this."""


@dataclasses.dataclass(frozen=True)
class Sizes:
    episodes: int
    seconds: float
    """Length of each episode in the speed comparison."""
    rss_seconds: float
    """L of the memory comparison (against 10 L)."""
    image_size: tuple[int, int]

    @classmethod
    def for_mode(cls, quick: bool) -> "Sizes":
        if quick:
            return cls(episodes=2, seconds=5.0, rss_seconds=3.0, image_size=(120, 160))
        return cls(episodes=4, seconds=10.0, rss_seconds=6.0, image_size=(240, 320))


def write_datasets(root: pathlib.Path, sizes: Sizes) -> dict[str, tuple[str, pathlib.Path]]:
    common = {"n_episodes": sizes.episodes, "duration_s": sizes.seconds, "image_size": sizes.image_size}
    return {
        "MCAP (ROS 2)": ("teleop-mcap", write_teleop_mcap_dataset(root / "mcap", **common)),
        "HDF5 JPEG": ("teleop-hdf5", write_aloha_dataset(root / "hdf5_jpeg", compress=True, **common)),
        "HDF5 raw": ("teleop-hdf5", write_aloha_dataset(root / "hdf5_raw", compress=False, **common)),
    }


# Baselines ------------------------------------------------------------------------------------------------------


def bare_mcap(root: pathlib.Path) -> int:
    """Stream every record of every file and CDR-decode the messages of the topics the ingest reads."""
    topics = {*mcap_cameras(), "/follower_left/joint_states", "/follower_right/joint_states",
              "/leader_left/joint_states", "/leader_right/joint_states", "/instruction"}
    factory, decoded = DecoderFactory(), 0
    for path in sorted(root.glob("*.mcap")):
        schemas, channels = {}, {}
        with open(path, "rb") as handle:
            for record in StreamReader(handle, validate_crcs=True).records:
                if isinstance(record, Schema):
                    schemas[record.id] = record
                elif isinstance(record, Channel):
                    channels[record.id] = record
                elif isinstance(record, Message) and channels[record.channel_id].topic in topics:
                    channel = channels[record.channel_id]
                    factory.decoder_for(channel.message_encoding, schemas[channel.schema_id])(record.data)
                    decoded += 1
    return decoded


def bare_hdf5(root: pathlib.Path, encode_quality: int | None) -> int:
    """Read the arrays whole and every image row in blocks of 16; with `encode_quality`, JPEG-encode one raw frame
    per 30 Hz tick (what the ingest stores) as well."""
    frames = 0
    for path in sorted(root.glob("*.hdf5")):
        with h5py.File(path, "r") as handle:
            for name in ("observations/qpos", "observations/qvel", "action"):
                handle[name][()]
            lengths = handle["compress_len"][()].astype(np.int64) if "compress_len" in handle else None
            for row, camera in enumerate(sorted(handle["observations/images"])):
                dataset = handle[f"observations/images/{camera}"]
                for start in range(0, dataset.shape[0], 16):
                    for index, image in enumerate(dataset[start : start + 16], start):
                        frames += 1
                        if lengths is not None:
                            image[: lengths[row, index]].tobytes()
                        elif encode_quality is not None and index % 5 in (0, 2, 3):  # 3 of every 5 rows: 30 of 50 Hz
                            simplejpeg.encode_jpeg(image, quality=encode_quality, colorspace="RGB")
    return frames


# Measurements ---------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Comparison:
    runs: list = dataclasses.field(default_factory=list)
    baselines: list = dataclasses.field(default_factory=list)


def compare(name: str, source: str, root: pathlib.Path, work: pathlib.Path, repeats: int) -> Comparison:
    quality = IngestOptions().jpeg_quality
    if source == "teleop-mcap":
        baseline = lambda: bare_mcap(root)  # noqa: E731
    else:
        baseline = lambda: bare_hdf5(root, None if "JPEG" in name else quality)  # noqa: E731
    ingest_benchmark.read_all(sorted(p for p in root.rglob("*") if p.is_file()))  # into the page cache
    ingest_benchmark.ingest(source, root, work / "out")  # warm-up, untimed
    comparison = Comparison()
    for _ in range(repeats):
        comparison.baselines.append(ingest_benchmark.timed(baseline)[0])
        comparison.runs.append(ingest_benchmark.ingest(source, root, work / "out"))
    return comparison


def rss(source: str, root: pathlib.Path, work: pathlib.Path) -> dict[str, float]:
    """Peak RSS of a whole ingest in a fresh process, and the largest episode's frame bytes in its shards."""
    output = work / "rss"
    peak = ingest_benchmark.peak_rss(source, root, output)
    frame_bytes = _largest_episode_frame_bytes(output)
    return {**peak, "frame_mb": frame_bytes / 2**20, "log_mb": max(p.stat().st_size for p in root.rglob("*.*")) / 2**20}


def _largest_episode_frame_bytes(output: pathlib.Path) -> int:
    """Bytes of .jpg members per episode (from the shards' tar headers), the largest."""
    sizes: dict[str, int] = {}
    for shard in output.rglob("*.tar"):
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.name.endswith(".jpg"):
                    episode = member.name.split(".", 1)[0].rsplit("_", 1)[0]
                    sizes[episode] = sizes.get(episode, 0) + member.size
    return max(sizes.values())


# Report ---------------------------------------------------------------------------------------------------------


def speed_tables(results: dict[str, Comparison]) -> None:
    steps_rows, ratio_rows = [], []
    for name, comparison in results.items():
        steps = comparison.runs[0].steps
        wall = median(r.units.wall for r in comparison.runs)
        cpu = median(r.units.cpu for r in comparison.runs)
        base = median(t.wall for t in comparison.baselines)
        steps_rows.append([name, str(steps), f"{wall:.2f}", f"{steps / wall:,.0f}", f"{steps / cpu:,.0f}"])
        ratio_rows.append([name, f"{base:.2f}", f"{wall:.2f}", f"{base / wall:.2f}"])
    ingest_benchmark.print_table("1. Teleop steps/s per core (LocalRunner, one process)",
                                 ["source", "steps", "units s", "steps/s", "steps/CPU-s"], steps_rows,
                                 ["a step is one 30 Hz tick: 3 JPEG frames, 14-D state, a 32 x 14 action chunk"])
    ingest_benchmark.print_table("2. Ingest vs the bare read of the same files",
                                 ["source", "bare read s", "ingest s", "bare / ingest"], ratio_rows,
                                 ["MCAP: StreamReader + CDR decode of every read message; HDF5: h5py reads of every "
                                  "array and image row (raw: + simplejpeg encode per tick)"])


def rss_table(rows: dict[str, tuple[dict, dict]], seconds: float) -> None:
    body = []
    for name, (short, long) in rows.items():
        ratio = long["peak_kib"] / short["peak_kib"]
        body.append([name, f"{short['peak_kib'] / 1024:.0f} / {long['peak_kib'] / 1024:.0f}",
                     f"{short['units_kib'] / 1024:.0f} / {long['units_kib'] / 1024:.0f}",
                     f"{short['before_kib'] / 1024:.0f}", f"{short['log_mb']:.0f} / {long['log_mb']:.0f}",
                     f"{short['frame_mb']:.0f} / {long['frame_mb']:.0f}", f"{ratio:.2f}",
                     ingest_benchmark.verdict(ratio, RSS_TARGET, at_least=False)])
    ingest_benchmark.print_table(
        f"3. Peak RSS, episodes of {seconds:g} s vs {10 * seconds:g} s (a fresh process each, whole ingest)",
        ["source", "peak MB", "after units MB", "imports MB", "largest log MB", "its frames MB", "peak ratio",
         f"<= {RSS_TARGET}"],
        body, ["peak: the whole ingest's (units, then finalize's statistics pass); after units: before finalize",
               "its frames MB: the largest episode's JPEG bytes as stored, for scale; frames are read on access, "
               "so the peak should stay flat"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller data (about a minute)")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (the median is shown)")
    parser.add_argument("--tmp", type=pathlib.Path, default=None, help="where to write the data (default: $TMPDIR)")
    parser.add_argument("--json", type=pathlib.Path, help="write the measured rates here, for `vlaforge plan --rates`")
    args = parser.parse_args()
    sizes = Sizes.for_mode(args.quick)
    with tempfile.TemporaryDirectory(prefix="vlaforge-teleop-bench-", dir=args.tmp) as tmp:
        work = pathlib.Path(tmp)
        started = time.perf_counter()
        data = write_datasets(work / "data", sizes)
        print(f"synthetic data written in {time.perf_counter() - started:.0f} s under {work}")
        results = {name: compare(name, source, root, work, args.repeats) for name, (source, root) in data.items()}
        rss_rows = {}
        for name, source, writer in (("MCAP (ROS 2)", "teleop-mcap", write_teleop_mcap_dataset),
                                     ("HDF5 JPEG", "teleop-hdf5", write_aloha_dataset)):
            short = writer(work / "rss-data" / f"{source}-short", n_episodes=2, duration_s=sizes.rss_seconds,
                           image_size=sizes.image_size)
            long = writer(work / "rss-data" / f"{source}-long", n_episodes=2, duration_s=10 * sizes.rss_seconds,
                          image_size=sizes.image_size)
            rss_rows[name] = (rss(source, short, work), rss(source, long, work))
        speed_tables(results)
        rss_table(rss_rows, sizes.rss_seconds)
        if args.json:
            ingest_benchmark.write_rates(args.json, {
                f"ingest.{source}.steps_per_core_s": ingest_benchmark.steps_per_cpu_s(results[name].runs)
                for name, (source, _) in data.items() if name != "HDF5 raw"})  # ALOHA records JPEGs
        print(f"\ntotal {time.perf_counter() - started:.0f} s, {args.repeats} timed runs each")


if __name__ == "__main__":
    main()
