"""One robot, one normalization: an embodiment's statistics pooled over every corpus component that holds it.

Two datasets of one robot (two teleop collections of the in-house bimanual arms, a LeRobot v2.1 and a v3.0 copy)
each come with their own `stats.json`. Normalizing each with its own would teach the model two scalings of the same
robot, while the policy it exports carries one per embodiment. So the loader and the exported policy both use the
pooled statistics: the count-weighted mean and std (exact: moments merge exactly), min and max (exact), and q01 /
q99 bounded by the components' (the lowest q01, the highest q99: exact quantiles cannot be merged from summaries).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

FIELDS = ("state", "action")


def pool_by_embodiment(documents: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """{component: stats.json document} -> one stats.json-shaped document ({"embodiments": {name: entry}}) with each
    embodiment's statistics pooled over the components that hold it."""
    holders: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    for component, document in documents.items():
        for embodiment, entry in document.get("embodiments", {}).items():
            holders.setdefault(embodiment, []).append((component, entry))
    return {"embodiments": {embodiment: entries[0][1] if len(entries) == 1 else _pooled(embodiment, entries)
                            for embodiment, entries in sorted(holders.items())}}


def _pooled(embodiment: str, entries: list[tuple[str, Mapping[str, Any]]]) -> dict[str, Any]:
    missing = [component for component, entry in entries if "count" not in entry]
    if missing:
        raise ValueError(f"embodiment {embodiment!r}: the statistics of components {missing} have no step count, "
                         f"needed to pool them with the other components'; recompute them with pipelines/norm_stats.py")
    counts = np.array([entry["count"] for _, entry in entries], dtype=np.float64)
    pooled: dict[str, Any] = {"count": int(counts.sum())}
    for field in FIELDS:
        first_component, first = entries[0][0], entries[0][1][field]
        for component, entry in entries[1:]:
            if entry[field].get("names") != first.get("names"):
                raise ValueError(f"embodiment {embodiment!r}: {field} dimensions of component {component!r} "
                                 f"{entry[field].get('names')} differ from those of {first_component!r} "
                                 f"{first.get('names')}; give one of the datasets its own embodiment name")
        pooled[field] = _pooled_field([entry[field] for _, entry in entries], counts)
    return pooled


def _pooled_field(fields: list[Mapping[str, Any]], counts: np.ndarray) -> dict[str, Any]:
    """One field (state or action) pooled: per dimension, weights = each component's step count."""
    def stacked(key: str) -> np.ndarray:
        return np.array([field[key] for field in fields], dtype=np.float64)  # [components, D]

    weights = counts[:, None] / counts.sum()
    means = stacked("mean")
    mean = (weights * means).sum(axis=0)
    variance = (weights * (stacked("std") ** 2 + (means - mean) ** 2)).sum(axis=0)  # within + between components
    pooled = {"names": fields[0].get("names"), "mean": mean.tolist(), "std": np.sqrt(variance).tolist()}
    for key, reduce in (("min", np.min), ("max", np.max), ("q01", np.min), ("q99", np.max)):
        if all(key in field for field in fields):
            pooled[key] = reduce(stacked(key), axis=0).tolist()
    return pooled
