"""The state and action of every step a unit wrote, kept beside its completion marker for the statistics.

The normalization statistics need each step's `state.npy` and its own action (the first row of `action.npy`).
Reading them back out of the shards means parsing every tar member of every shard, twice (moments, then
histograms): at DROID's scale, terabytes read to use a few gigabytes. A unit has these values in memory as it
writes them, so it also writes them here: `_units/<unit>.steps.parquet`, one row per step (split, embodiment,
state, action as float32 lists), the names of the dimensions in the schema metadata. About 64 bytes a DROID step
beside its 66 KB of shard. The finalize step computes the statistics from these tables, and falls back to a
unit's shards when it has no table holding as many steps as its marker says it wrote (a unit finished by an
earlier version, or a table lost or damaged since).
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Collection
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from vlaforge.datasets.schema import Episode
from vlaforge.pipelines.atomic_files import atomic_write_table

_NAMES_KEY = b"vlaforge.names"
"""Schema metadata: {embodiment: {"state": [...], "action": [...]}} as JSON."""
SCHEMA = pa.schema([("split", pa.string()), ("embodiment", pa.string()), ("state", pa.list_(pa.float32())),
                    ("action", pa.list_(pa.float32()))])


def step_values_path(output: pathlib.Path, unit: int, units_dir: str) -> pathlib.Path:
    return output / units_dir / f"{unit:05d}.steps.parquet"


class StepValues:
    """Collects, episode by episode, the values a unit writes into its shards."""

    def __init__(self) -> None:
        self._groups: dict[tuple[str, str], tuple[list[np.ndarray], list[np.ndarray]]] = {}
        self._names: dict[str, dict[str, list[str]]] = {}

    def add(self, episode: Episode, split: str) -> None:
        """The episode's steps as its samples carry them: state [n, Ds] and each step's own action [n, Da]."""
        states, actions = self._groups.setdefault((split, episode.embodiment), ([], []))
        states.append(episode.state.astype(np.float32))
        actions.append(episode.action.astype(np.float32))
        self._names.setdefault(episode.embodiment, {"state": list(episode.state_names),
                                                    "action": list(episode.action_names)})

    def write(self, path: pathlib.Path) -> None:
        columns: dict[str, list[Any]] = {"split": [], "embodiment": [], "state": [], "action": []}
        for (split, embodiment), (states, actions) in sorted(self._groups.items()):
            state, action = np.concatenate(states), np.concatenate(actions)
            columns["split"] += [split] * len(state)
            columns["embodiment"] += [embodiment] * len(state)
            columns["state"].append(_lists(state))
            columns["action"].append(_lists(action))
        arrays = [pa.array(columns["split"], pa.string()), pa.array(columns["embodiment"], pa.string()),
                  *(pa.concat_arrays(columns[field]) if columns[field] else pa.array([], SCHEMA.field(field).type)
                    for field in ("state", "action"))]
        metadata = {_NAMES_KEY: json.dumps(self._names, sort_keys=True).encode()}
        atomic_write_table(path, pa.Table.from_arrays(arrays, schema=SCHEMA.with_metadata(metadata)))


def _lists(values: np.ndarray) -> pa.ListArray:
    """Rows of a [N, D] float32 array as a list<float32> array, without a Python object per value."""
    offsets = np.arange(0, values.size + 1, values.shape[1], dtype=np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.reshape(-1)))


def step_values_rows(path: pathlib.Path) -> int | None:
    """How many steps the table at `path` holds; None when there is no readable table."""
    try:
        return pq.read_metadata(path).num_rows
    except (OSError, pa.ArrowException):
        return None


def read_step_values(path: pathlib.Path, splits: Collection[str] | None = None) -> dict[str, dict[str, Any]]:
    """Per embodiment, as `norm_stats.shard_values` gives a shard's: state [N, Ds] and action [N, Da] as float64,
    and the dimension names; only steps of `splits` (None: every split)."""
    table = pq.read_table(path)
    names = json.loads(table.schema.metadata[_NAMES_KEY])
    if splits is not None:
        table = table.filter(pc.is_in(table["split"], value_set=pa.array(sorted(splits), pa.string())))
    grouped: dict[str, dict[str, Any]] = {}
    embodiments = table["embodiment"].to_numpy(zero_copy_only=False)
    for embodiment in sorted(set(embodiments.tolist())):
        rows = table.filter(pc.equal(table["embodiment"], embodiment))
        grouped[embodiment] = {"names": names[embodiment]}
        for field in ("state", "action"):
            flat = rows[field].combine_chunks().flatten().to_numpy()
            grouped[embodiment][field] = flat.reshape(len(rows), -1).astype(np.float64)
    return grouped
