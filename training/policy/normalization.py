"""Per-embodiment normalization statistics and padding to the model's fixed widths.

Statistics use the document `pipelines/norm_stats.py` writes (`{"embodiments": {name: {"state": {"mean": [...],
"std": [...], ...}, "action": {...}}}}`); only mean and std are used: `(x − mean) / (std + 1e-6)`.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

EPSILON = 1e-6
MODEL_WIDTH = 32  # state and action are zero-padded to 32 dimensions, with an action mask (the release's layout)


@dataclasses.dataclass(frozen=True, kw_only=True)
class EmbodimentStats:
    """Mean and std of one embodiment's state and action, in its native dimensions."""

    state_mean: np.ndarray
    """[D_s] float32."""
    state_std: np.ndarray
    """[D_s] float32."""
    action_mean: np.ndarray
    """[D_a] float32."""
    action_std: np.ndarray
    """[D_a] float32."""

    def __post_init__(self) -> None:
        for name in ("state_mean", "state_std", "action_mean", "action_std"):
            value = np.asarray(getattr(self, name), dtype=np.float32)
            if value.ndim != 1 or not np.isfinite(value).all():
                raise ValueError(f"EmbodimentStats.{name} must be a finite 1-D array, got {value!r}")
            object.__setattr__(self, name, value)
        for field in ("state", "action"):
            mean, std = getattr(self, f"{field}_mean"), getattr(self, f"{field}_std")
            if mean.shape != std.shape:
                raise ValueError(f"EmbodimentStats: {field} mean has {mean.shape[0]} dims but std {std.shape[0]}")
            if (std < 0).any():
                raise ValueError(f"EmbodimentStats.{field}_std has negative entries: {std}")

    @property
    def state_dim(self) -> int:
        return self.state_mean.shape[0]

    @property
    def action_dim(self) -> int:
        return self.action_mean.shape[0]

    def to_dict(self) -> dict[str, Any]:
        return {
            "state": {"mean": self.state_mean.tolist(), "std": self.state_std.tolist()},
            "action": {"mean": self.action_mean.tolist(), "std": self.action_std.tolist()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "EmbodimentStats":
        return cls(
            state_mean=data["state"]["mean"], state_std=data["state"]["std"],
            action_mean=data["action"]["mean"], action_std=data["action"]["std"],
        )


def normalize(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(x − mean) / (std + 1e-6) over the last axis."""
    return (np.asarray(x, dtype=np.float32) - mean) / (std + EPSILON)


def unnormalize(y: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """The inverse of `normalize`."""
    return np.asarray(y, dtype=np.float32) * (std + EPSILON) + mean


def pad_last(x: np.ndarray, width: int = MODEL_WIDTH) -> tuple[np.ndarray, np.ndarray]:
    """Zero-pad the last axis to `width`; return the padded array and the [width] mask of real dimensions."""
    native = x.shape[-1]
    if native > width:
        raise ValueError(f"{native} dimensions do not fit the model's {width}; raise DiTConfig.action_dim/state_dim")
    padded = np.zeros((*x.shape[:-1], width), dtype=np.float32)
    padded[..., :native] = x
    return padded, np.arange(width) < native


def load_stats(path: str | pathlib.Path) -> dict[str, EmbodimentStats]:
    """Statistics per embodiment from a stats JSON (the pipelines' document, or a bare {embodiment: ...} map)."""
    document = json.loads(pathlib.Path(path).read_text())
    entries = document.get("embodiments", document)
    return {name: EmbodimentStats.from_dict(entry) for name, entry in entries.items()}


def save_stats(stats: Mapping[str, EmbodimentStats], path: str | pathlib.Path) -> None:
    """Write statistics in the pipelines' document layout."""
    document = {"embodiments": {name: entry.to_dict() for name, entry in sorted(stats.items())}}
    pathlib.Path(path).write_text(json.dumps(document, indent=1))
