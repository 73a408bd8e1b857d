"""Build the jobs of `vlaforge dataset filter|split|merge` from plain options (what the CLI and the flow pass).

Each is one `Job` (`job.py`): the stored episodes of its input datasets (`shards/stored_episodes.py`), an edit
stage, and the stored samples written back as a new robot dataset (`robot_dataset.py`): shards, manifest,
statistics recomputed for the episodes kept, `summary.json`, the options it was made with (`options.json`) and a
`lineage.parquet` row per episode naming the input dataset, its manifest's sha256 and the shards it came from.
Sample bytes are the inputs' (only `meta.json` changes, and only where `split` reassigns an episode); the same
inputs and options give the same bytes.
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Sequence

from vlaforge.datasets.schema import safe_key_part
from vlaforge.datasets.source import SourceError
from vlaforge.pipelines.episode_selection import EpisodeSelection
from vlaforge.pipelines.job import Job
from vlaforge.pipelines.norm_stats import STATS_NAME
from vlaforge.pipelines.robot_dataset import RobotDatasetSink
from vlaforge.pipelines.shards.manifest import records_of_split
from vlaforge.pipelines.shards.stored_episodes import StoredEpisodeSource
from vlaforge.pipelines.shards.writer import ShardConfig
from vlaforge.pipelines.split_reassignment import SplitReassignment
from vlaforge.pipelines.stage import StageConfig
from vlaforge.pipelines.stored_samples import StoredSamples

DEFAULT_SHARDS = ShardConfig(max_bytes=256 * 2**20)


def filter_job(source: str, output: str, selection: EpisodeSelection.Config, **options) -> Job:
    """The episodes of `source` that meet `selection`, as a new dataset at `output`."""
    return _edit_job([source], output, (selection,), **options)


def split_job(source: str, output: str, reassignment: SplitReassignment.Config, **options) -> Job:
    """Every episode of `source` in its new split, as a new dataset at `output`."""
    return _edit_job([source], output, (reassignment,), **options)


def merge_job(sources: Sequence[str], output: str, **options) -> Job:
    """The episodes of every dataset in `sources` (one embodiment, no episode in two), in that order, as one."""
    if len(sources) < 2:
        raise ValueError("merge takes two or more datasets")
    check_mergeable([pathlib.Path(source).resolve() for source in sources])
    return _edit_job(list(sources), output, (), **options)


def _edit_job(sources: list[str], output: str, edits: tuple[StageConfig, ...], *, name: str | None = None,
              shards: ShardConfig = DEFAULT_SHARDS, shards_per_unit: int = 4) -> Job:
    inputs = tuple(os.path.abspath(source) for source in sources)
    for source in inputs:
        records_of_split(pathlib.Path(source), None)  # a SourceError says when it is no dataset
        if os.path.abspath(output) == source or pathlib.Path(output).resolve() == pathlib.Path(source).resolve():
            raise SourceError(f"--output {output} is an input; an edit writes a new dataset: choose another --output")
    dataset = name or safe_key_part(pathlib.Path(output).resolve().name)
    return Job(source=StoredEpisodeSource.Config(root=inputs[0], inputs=inputs, dataset_name=dataset,
                                                 shards_per_unit=shards_per_unit),
               stages=(*edits, StoredSamples.Config()), sink=RobotDatasetSink.Config(shards=shards), output=output)


def check_mergeable(inputs: Sequence[pathlib.Path]) -> None:
    """Refuse inputs that cannot make one dataset: of different embodiments (their statistics, and the model's
    per-robot config, are per embodiment), or sharing an episode id (its sample keys would repeat)."""
    embodiments = {root: sorted(json.loads((root / STATS_NAME).read_text()).get("embodiments", {}))
                   for root in inputs if (root / STATS_NAME).is_file()}
    if len({tuple(e) for e in embodiments.values()}) > 1 or any(len(e) > 1 for e in embodiments.values()):
        listing = "; ".join(f"{root}: {', '.join(e)}" for root, e in embodiments.items())
        raise SourceError(f"merge takes datasets of one embodiment; these hold {listing}. Fix: merge each "
                          "embodiment's datasets apart (a corpus mixes embodiments: `vlaforge corpus build`)")
    repeated = sorted({str(root) for root in inputs if list(inputs).count(root) > 1})
    if repeated:
        raise SourceError(f"merge was given {', '.join(repeated)} more than once; give each dataset once")
    seen: dict[str, pathlib.Path] = {}
    for root in inputs:
        for record in records_of_split(root, None):
            for episode in record.episodes:
                if episode in seen and seen[episode] != root:
                    raise SourceError(f"episode {episode} is in both {seen[episode]} and {root}: merging them would "
                                      "repeat its samples. Fix: filter it out of one of them first "
                                      "(`vlaforge dataset filter --exclude-episode ...`)")
                seen[episode] = root
