"""`Normalize`: state and action scaled per embodiment, one transform for the loader and the exported policy.

The loader's robot transform (`robot_transform.py`) normalizes every sample's state and action chunk with it; the
trainer exports the same object with the policy (`norm_stats.json`), and the policy normalizes its observations and
unnormalizes its chunks with it. So the policy inverts exactly what the model was trained on (openpi's
`Normalize`/`Unnormalize` transforms and LeRobot's saved processors work this way).

An embodiment's statistics are those `pipelines/norm_stats.py` computed, pooled over every corpus component that
holds the embodiment (`pooled_stats.py`). Both kinds of normalization (`NormKind`) are y = (x − offset) / scale over
the native dimensions, in float32, and invert as x = y · scale + offset. State and action are then zero-padded to the
model's width (32) with masks of the native dimensions (`Normalize.pad`).

Saved (`save` / `load`), a `Normalize` keeps the layout policies have always been exported with:
`{"embodiments": {name: {"state": {"mean": [...], "std": [...]}, "action": {...}}}}`; the quantile kind adds
`"norm": "quantile"` and saves q01/q99 in place of mean/std. A file without "norm" is mean/std.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import pathlib
from collections.abc import Mapping
from typing import Any

import numpy as np

from vlaforge.training.data.pooled_stats import FIELDS, pool_by_embodiment

EPSILON = 1e-6
MODEL_WIDTH = 32  # state and action are zero-padded to 32 dimensions, with an action mask (the release's layout)
NORM_KEY = "norm"
"""The saved document's key for a kind other than mean/std."""


class NormKind(str, enum.Enum):
    """How state and action are scaled (the statistics `pipelines/norm_stats.py` writes hold both)."""

    MEAN_STD = "mean_std"
    """(x − mean) / (std + 1e-6)."""
    QUANTILE = "quantile"
    """2 (x − q01) / (q99 − q01 + 1e-6) − 1: robust to outliers; q01 maps to −1 and q99 to +1 (not clipped)."""

    @property
    def statistics(self) -> tuple[str, str]:
        """The two statistics of a field this kind reads."""
        return ("mean", "std") if self is NormKind.MEAN_STD else ("q01", "q99")


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Scaling:
    """y = (x − offset) / scale for one embodiment's state or action, over its native dimensions [D]."""

    statistics: dict[str, np.ndarray]
    """The two statistics it was made from ({"mean", "std"} or {"q01", "q99"}), float32 [D]: what is saved."""
    offset: np.ndarray
    """[D] float32."""
    scale: np.ndarray
    """[D] float32."""

    @classmethod
    def of(cls, entry: Mapping[str, Any], kind: NormKind, where: str) -> "Scaling":
        """From one field of a stats.json embodiment entry; `where` names the field in errors."""
        names = kind.statistics
        missing = [name for name in names if name not in entry]
        if missing:
            raise ValueError(f"{where} lacks {missing} needed for {kind.value} normalization; recompute it with "
                             f"pipelines/norm_stats.py")
        low, high = (_vector(entry[name], f"{where} {name}") for name in names)
        if low.shape != high.shape:
            raise ValueError(f"{where}: {names[0]} has {low.shape[0]} dims but {names[1]} {high.shape[0]}")
        if kind is NormKind.MEAN_STD:
            if (high < 0).any():
                raise ValueError(f"{where}: std has negative entries: {high}")
            offset, scale = low, high + np.float32(EPSILON)
        else:
            offset, scale = (low + high) / 2, (high - low + np.float32(EPSILON)) / 2
        return cls(statistics=dict(zip(names, (low, high))), offset=offset, scale=scale)

    @property
    def dim(self) -> int:
        return self.offset.shape[0]

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """[..., D] robot units -> normalized, float32."""
        return (np.asarray(x, dtype=np.float32) - self.offset) / self.scale

    def unnormalize(self, y: np.ndarray) -> np.ndarray:
        """The inverse of `normalize`."""
        return np.asarray(y, dtype=np.float32) * self.scale + self.offset


def _vector(values: Any, where: str) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float32)
    if vector.ndim != 1 or not np.isfinite(vector).all():
        raise ValueError(f"{where} must be a finite 1-D array, got {values!r}")
    return vector


@dataclasses.dataclass(frozen=True, kw_only=True, eq=False)
class Normalize:
    """State and action normalization of every embodiment of a corpus (see the module docstring). Two are equal when
    they would save the same file."""

    kind: NormKind
    """mean/std or quantile."""
    scalings: Mapping[str, Mapping[str, Scaling]]
    """{embodiment: {"state": Scaling, "action": Scaling}}."""

    @classmethod
    def from_document(cls, document: Mapping[str, Any], kind: NormKind = NormKind.MEAN_STD,
                      where: str = "statistics") -> "Normalize":
        """From a stats.json-shaped document ({"embodiments": {name: {"state": {...}, "action": {...}}}}); `where`
        names the document in errors."""
        kind = NormKind(kind)
        scalings = {}
        for embodiment, entry in document.get("embodiments", {}).items():
            scalings[embodiment] = {
                field: Scaling.of(entry.get(field, {}), kind, f"{where}: embodiment {embodiment!r} {field}")
                for field in FIELDS}
        return cls(kind=kind, scalings=scalings)

    @classmethod
    def from_components(cls, documents: Mapping[str, Mapping[str, Any]], kind: NormKind) -> "Normalize":
        """From every robot component's stats.json ({component: document}), each embodiment's pooled over the
        components that hold it."""
        return cls.from_document(pool_by_embodiment(documents), kind, f"statistics of components {sorted(documents)}")

    @property
    def embodiments(self) -> list[str]:
        return sorted(self.scalings)

    def __contains__(self, embodiment: object) -> bool:
        return embodiment in self.scalings

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Normalize) and self.to_document() == other.to_document()

    __hash__ = None  # type: ignore[assignment]

    def scaling(self, embodiment: str, field: str) -> Scaling:
        """The state or action scaling of `embodiment`; KeyError naming the known ones if there is none."""
        if embodiment not in self.scalings:
            raise KeyError(f"no normalization statistics for embodiment {embodiment!r}; known: {self.embodiments}")
        return self.scalings[embodiment][field]

    def state_dim(self, embodiment: str) -> int:
        return self.scaling(embodiment, "state").dim

    def action_dim(self, embodiment: str) -> int:
        return self.scaling(embodiment, "action").dim

    def normalize_state(self, embodiment: str, state: np.ndarray) -> np.ndarray:
        """[D_s] robot units -> normalized float32."""
        return self.scaling(embodiment, "state").normalize(state)

    def normalize_actions(self, embodiment: str, actions: np.ndarray) -> np.ndarray:
        """[..., D_a] robot units -> normalized float32."""
        return self.scaling(embodiment, "action").normalize(actions)

    def unnormalize_actions(self, embodiment: str, actions: np.ndarray) -> np.ndarray:
        """[..., D_a] normalized -> robot units, float32."""
        return self.scaling(embodiment, "action").unnormalize(actions)

    @staticmethod
    def pad(x: np.ndarray, width: int = MODEL_WIDTH) -> tuple[np.ndarray, np.ndarray]:
        """Zero-pad the last axis to `width`; return the padded array and the [width] mask of real dimensions."""
        native = x.shape[-1]
        if native > width:
            raise ValueError(f"{native} dimensions do not fit the model's {width}; raise DiTConfig.action_dim/"
                             f"state_dim")
        padded = np.zeros((*x.shape[:-1], width), dtype=np.float32)
        padded[..., :native] = x
        return padded, np.arange(width) < native

    def to_document(self) -> dict[str, Any]:
        """The saved layout (see the module docstring)."""
        embodiments = {name: {field: {key: value.tolist() for key, value in scaling.statistics.items()}
                              for field, scaling in fields.items()}
                       for name, fields in sorted(self.scalings.items())}
        kind = {} if self.kind is NormKind.MEAN_STD else {NORM_KEY: self.kind.value}
        return {**kind, "embodiments": embodiments}

    def save(self, path: str | pathlib.Path) -> None:
        pathlib.Path(path).write_text(json.dumps(self.to_document(), indent=1))

    @classmethod
    def load(cls, path: str | pathlib.Path) -> "Normalize":
        """A saved `Normalize`, or a pipelines stats.json (then mean/std); a bare {embodiment: entry} map is read
        too."""
        document = json.loads(pathlib.Path(path).read_text())
        if "embodiments" not in document:
            document = {"embodiments": document}
        return cls.from_document(document, NormKind(document.get(NORM_KEY, NormKind.MEAN_STD.value)), str(path))
