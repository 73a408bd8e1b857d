"""Normalization statistics per embodiment: mean, std, min, max, q01, q99 of state and action.

Computed from the values the shards hold, without reading an image: from each unit's step table (see
`step_values.py`), or from the shards' `state.npy`, `action.npy` and `meta.json` members. Two parallel passes
over those items: moments and ranges first (merged exactly, Chan et al.), then per-dimension histograms over those
ranges for the quantiles (accurate to (max - min) / bins). An item is {"path": a shard}, or {"path": a step table,
"steps": True, "splits": the splits to count, or None for all}.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import pathlib
from collections.abc import Iterable
from typing import Any

import numpy as np

from vlaforge.datasets.schema import MetaField, SampleKey
from vlaforge.pipelines.atomic_files import atomic_write_bytes
from vlaforge.pipelines.runners import LocalRunner, RayRunner
from vlaforge.pipelines.shards.members import iter_samples
from vlaforge.pipelines.step_values import read_step_values

STATS_NAME = "stats.json"
FIELDS = ("state", "action")
_WANTED = (SampleKey.STATE.value, SampleKey.ACTION.value, SampleKey.META.value)


@dataclasses.dataclass
class Moments:
    """Mergeable count, mean, sum of squared deviations, min and max of [N, D] values."""

    count: int
    mean: np.ndarray
    m2: np.ndarray
    low: np.ndarray
    high: np.ndarray

    @classmethod
    def of(cls, values: np.ndarray) -> "Moments":
        values = values.astype(np.float64)
        mean = values.mean(axis=0)
        return cls(len(values), mean, ((values - mean) ** 2).sum(axis=0), values.min(axis=0), values.max(axis=0))

    def merge(self, other: "Moments") -> "Moments":
        count = self.count + other.count
        delta = other.mean - self.mean
        mean = self.mean + delta * other.count / count
        m2 = self.m2 + other.m2 + delta**2 * self.count * other.count / count
        return Moments(count, mean, m2, np.minimum(self.low, other.low), np.maximum(self.high, other.high))

    def as_dict(self) -> dict[str, Any]:
        return {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Moments":
        return cls(data["count"], *(np.asarray(data[k]) for k in ("mean", "m2", "low", "high")))


def shard_values(path: pathlib.Path) -> dict[str, dict[str, Any]]:
    """Per embodiment: stacked state [N, Ds], the step's own action [N, Da], and the dimension names."""
    grouped: dict[str, dict[str, Any]] = {}
    with open(path, "rb") as handle:
        for sample in iter_samples(handle, str(path), wanted=_WANTED):
            meta = sample[SampleKey.META.value]
            group = grouped.setdefault(
                meta[MetaField.EMBODIMENT.value],
                {"state": [], "action": [], "names": {"state": meta["state_names"], "action": meta["action_names"]}},
            )
            group["state"].append(sample[SampleKey.STATE.value])
            group["action"].append(sample[SampleKey.ACTION.value][0])
    for group in grouped.values():
        for field in FIELDS:
            group[field] = np.stack(group[field]).astype(np.float64)
    return grouped


def item_values(item: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The values of one statistics item: a unit's step table, or a shard read back."""
    if item.get("steps"):
        return read_step_values(pathlib.Path(item["path"]), item.get("splits"))
    return shard_values(pathlib.Path(item["path"]))


class MomentsWorker:
    """Pass 1 over one item: moments and ranges per embodiment and field."""

    def setup(self) -> None:
        pass

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        grouped = item_values(item)
        return {
            embodiment: {"names": group["names"], **{f: Moments.of(group[f]).as_dict() for f in FIELDS}}
            for embodiment, group in grouped.items()
        }


class HistogramWorker:
    """Pass 2 over one item: per-dimension histograms over the ranges found in pass 1."""

    def __init__(self, ranges: dict[str, dict[str, list[list[float]]]], bins: int) -> None:
        self.ranges = ranges
        self.bins = bins

    def setup(self) -> None:
        pass

    def __call__(self, item: dict[str, Any]) -> dict[str, Any]:
        grouped = item_values(item)
        return {
            embodiment: {f: histograms(group[f], *self.ranges[embodiment][f], self.bins).tolist() for f in FIELDS}
            for embodiment, group in grouped.items()
        }


def histograms(values: np.ndarray, low: list[float], high: list[float], bins: int) -> np.ndarray:
    """[D, bins] counts of each dimension over its own [low, high] range."""
    low_a, high_a = np.asarray(low), np.asarray(high)
    width = np.where(high_a > low_a, high_a - low_a, 1.0)
    index = np.clip(((values - low_a) / width * bins).astype(np.int64), 0, bins - 1)
    counts = np.zeros((values.shape[1], bins), dtype=np.int64)
    for dim in range(values.shape[1]):
        counts[dim] = np.bincount(index[:, dim], minlength=bins)
    return counts


def quantile_from_histogram(counts: np.ndarray, low: np.ndarray, high: np.ndarray, q: float) -> np.ndarray:
    """Per-dimension quantile q from [D, bins] histograms, interpolating linearly inside the crossing bin."""
    bins = counts.shape[1]
    cumulative = np.cumsum(counts, axis=1)
    target = q * cumulative[:, -1]
    result = np.empty(counts.shape[0])
    for dim in range(counts.shape[0]):
        b = int(np.searchsorted(cumulative[dim], target[dim], side="left"))
        before = cumulative[dim, b - 1] if b > 0 else 0
        inside = (target[dim] - before) / counts[dim, b] if counts[dim, b] else 0.0
        result[dim] = low[dim] + (b + inside) / bins * (high[dim] - low[dim])
    return result


def merge_moments(partials: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    merged: dict[str, dict[str, Any]] = {}
    for partial in partials:
        for embodiment, fields in partial.items():
            entry = merged.setdefault(embodiment, {"names": fields["names"]})
            for f in FIELDS:
                moments = Moments.from_dict(fields[f])
                entry[f] = entry[f].merge(moments) if f in entry else moments
    return merged


def merge_histograms(partials: Iterable[dict[str, Any]]) -> dict[str, dict[str, np.ndarray]]:
    merged: dict[str, dict[str, np.ndarray]] = {}
    for partial in partials:
        for embodiment, fields in partial.items():
            entry = merged.setdefault(embodiment, {})
            for f in FIELDS:
                entry[f] = entry.get(f, 0) + np.asarray(fields[f])
    return merged


def finalize(moments: dict[str, dict[str, Any]], counts: dict[str, dict[str, np.ndarray]]) -> dict[str, Any]:
    """The per-embodiment statistics as written to stats.json."""
    result: dict[str, Any] = {}
    for embodiment, entry in sorted(moments.items()):
        result[embodiment] = {"count": entry["state"].count}
        for f in FIELDS:
            m: Moments = entry[f]
            result[embodiment][f] = {
                "names": entry["names"][f],
                "mean": m.mean.tolist(),
                "std": np.sqrt(m.m2 / max(m.count, 1)).tolist(),
                "min": m.low.tolist(),
                "max": m.high.tolist(),
                "q01": quantile_from_histogram(counts[embodiment][f], m.low, m.high, 0.01).tolist(),
                "q99": quantile_from_histogram(counts[embodiment][f], m.low, m.high, 0.99).tolist(),
            }
    return result


def write_stats(output: pathlib.Path, statistics: dict[str, Any], manifest: pathlib.Path, split: str) -> pathlib.Path:
    """Save the statistics beside the manifest, with the manifest's sha256 as lineage."""
    document = {
        "lineage": {
            "manifest": manifest.name,
            "manifest_sha256": hashlib.sha256(manifest.read_bytes()).hexdigest(),
            "split": split,
        },
        "embodiments": statistics,
    }
    path = output / STATS_NAME
    atomic_write_bytes(path, json.dumps(document, indent=1, sort_keys=True).encode())
    return path


def stats_of_items(items: list[dict[str, Any]], runner: LocalRunner | RayRunner, bins: int = 2048) -> dict[str, Any]:
    """Per-embodiment statistics over statistics items, in two parallel passes on `runner`."""
    moments = merge_moments(runner.map(MomentsWorker, items))
    ranges = {
        embodiment: {f: [entry[f].low.tolist(), entry[f].high.tolist()] for f in FIELDS}
        for embodiment, entry in moments.items()
    }
    counts = merge_histograms(runner.map(functools.partial(HistogramWorker, ranges, bins), items))
    return finalize(moments, counts)


def compute_stats(shards: list[pathlib.Path], runner: LocalRunner | RayRunner, bins: int = 2048) -> dict[str, Any]:
    """Per-embodiment statistics over `shards`, read back (a dataset written without step tables)."""
    return stats_of_items([{"path": str(path)} for path in shards], runner, bins)
