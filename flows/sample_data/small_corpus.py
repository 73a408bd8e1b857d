"""A small corpus laid out exactly as the pipelines write one: robot datasets through the real sample builder, shard
sink, manifest and statistics (with tiny frames), a VL dataset, and `corpus.json` over them. For tests and
benchmarks of the loader and the trainer."""

from __future__ import annotations

import pathlib

from vlaforge.datasets.synth.episodes import make_episode
from vlaforge.flows.sample_data.vl_dataset import write_vl_dataset
from vlaforge.pipelines import norm_stats
from vlaforge.pipelines.corpus_manifest import ComponentKind, CorpusConfig, CorpusInput, build_corpus, write_corpus
from vlaforge.pipelines.norm_stats import compute_stats
from vlaforge.pipelines.runners import LocalRunner
from vlaforge.pipelines.samples import RobotSampleBuilder
from vlaforge.pipelines.shards.manifest import load_commits, write_manifest
from vlaforge.pipelines.shards.sink import ShardSink
from vlaforge.pipelines.shards.writer import ShardConfig

CHUNK = 4
"""Actions stored per step (the ingest default is 32; tiny models read 4)."""


def write_robot_dataset(output: pathlib.Path, *, name: str, episodes: int, steps: int, shard_samples: int,
                        seed: int = 0, image_size: tuple[int, int] = (16, 16), chunk_len: int = CHUNK) -> pathlib.Path:
    """A robot dataset named (and embodied) `name`: `episodes` episodes of `steps` steps with frames of
    `image_size`, every one in the train split, `shard_samples` samples a shard; returns `output`."""
    output = pathlib.Path(output)
    builder = RobotSampleBuilder(RobotSampleBuilder.Config(chunk_len=chunk_len, validation_fraction=0.0))
    sink = ShardSink(output, name, 0, ["synth.tfrecord"], ShardConfig(max_samples=shard_samples, max_bytes=None))
    for index in range(episodes):
        episode = make_episode(f"{name}-{index:03d}", steps, seed=seed + index, image_size=image_size, embodiment=name)
        for sample in builder.samples(episode):
            sink.add(sample)
    sink.close()
    records = load_commits(output)
    manifest = write_manifest(output, records)
    statistics = compute_stats([output / r.url for r in records if r.split == "train"], LocalRunner())
    norm_stats.write_stats(output, statistics, manifest, "train")
    return output


def write_small_corpus(root: pathlib.Path, *, image_size: tuple[int, int] = (16, 16),
                       chunk_len: int = CHUNK) -> pathlib.Path:
    """Two robot datasets (150 and 100 train samples) and one VL dataset (64), frames of `image_size`, chunks of
    `chunk_len` actions, with `corpus.json` beside them as `vlaforge corpus build` lays it out; returns the corpus
    file's path."""
    root = pathlib.Path(root)
    write_robot_dataset(root / "arm_a", name="arm_a", episodes=5, steps=30, shard_samples=40, image_size=image_size,
                        chunk_len=chunk_len)
    write_robot_dataset(root / "arm_b", name="arm_b", episodes=4, steps=25, shard_samples=30, seed=50,
                        image_size=image_size, chunk_len=chunk_len)
    write_vl_dataset(root / "vl", n_samples=64, image_size=image_size, shard_samples=16, validation_fraction=0.0)
    inputs = [CorpusInput(path=root / "arm_a", kind=ComponentKind.ROBOT),
              CorpusInput(path=root / "arm_b", kind=ComponentKind.ROBOT),
              CorpusInput(path=root / "vl", kind=ComponentKind.VL)]
    corpus = root / "corpus.json"
    write_corpus(build_corpus(inputs, corpus, CorpusConfig(seed=3)), corpus)
    return corpus
