"""TFDS metadata (`features.json`, `dataset_info.json`) and decoding one RLDS Example by it.

`features.json` nests FeaturesDict / Dataset / Tensor / Scalar / Image / Text connectors (see FORMATS.md). TFDS
serializes an episode by flattening the nested keys with "/" and stacking each per-step feature over the steps
into one flat list, so `steps/action` of shape (7,) over n steps is a float_list of n*7 values. Every float dtype
(float64 too) is stored in float_list at float32 precision; ints and bools in int64_list; text and images in
bytes_list.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import json
import math
import pathlib
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from vlaforge.datasets.tf_example import FeatureValue

_CLASS_PREFIX = "tensorflow_datasets.core.features."
_DICT = "features_dict.FeaturesDict"
_STEP_CONTAINERS = ("dataset_feature.Dataset", "sequence_feature.Sequence")
_SHARD_X_OF_Y = "{SHARD_X_OF_Y}"


class FeaturesError(ValueError):
    """`features.json` or `dataset_info.json` that cannot be understood; the message names the file and key."""


class RecordFeatureError(ValueError):
    """An Example that does not match `features.json`: a missing key, or a value in the wrong list type."""


class InconsistentStepsError(RecordFeatureError):
    """Per-step features of one Example disagree on the number of steps."""


class FeatureKind(str, enum.Enum):
    TENSOR = "tensor"
    SCALAR = "scalar"
    IMAGE = "image"
    TEXT = "text"
    OTHER = "other"
    """A connector this reader does not decode (for example ClassLabel); it is listed but never decoded."""


class Storage(str, enum.Enum):
    """Which list of a `tf.train.Feature` holds the values."""

    BYTES = "bytes_list"
    FLOAT = "float_list"
    INT64 = "int64_list"


@dataclasses.dataclass(frozen=True)
class FeatureSpec:
    """One leaf feature of `features.json`, keyed like its serialized key."""

    key: str
    """The serialized key, e.g. "steps/observation/wrist_image_left" or "episode_metadata/file_path"."""
    kind: FeatureKind
    shape: tuple[int, ...]
    """Shape of one value (per step, for a per-step feature); -1 marks an unknown dimension."""
    dtype: str
    encoding: str
    """Tensor encoding ("none") or the image encodingFormat ("jpeg", "png")."""
    per_step: bool
    """True when the feature lives inside the `steps` Dataset: one value per step."""

    @property
    def storage(self) -> Storage:
        if self.kind in (FeatureKind.IMAGE, FeatureKind.TEXT) or self.dtype == "string":
            return Storage.BYTES
        return Storage.FLOAT if self.dtype.startswith(("float", "bfloat")) else Storage.INT64

    @property
    def values_per_item(self) -> int | None:
        """How many list entries one value takes (None when a dimension is unknown): 1 per image or text."""
        if self.kind in (FeatureKind.IMAGE, FeatureKind.TEXT) or self.dtype == "string":
            return 1
        return None if any(d < 0 for d in self.shape) else math.prod(self.shape)

    @property
    def name(self) -> str:
        """The last path component, e.g. "joint_position"."""
        return self.key.rsplit("/", 1)[-1]


def parse_features(doc: Mapping, *, origin: str = "features.json") -> dict[str, FeatureSpec]:
    """Flatten a features.json document into {serialized key: FeatureSpec}, in document order."""
    top = doc.get("pythonClassName") if isinstance(doc, Mapping) else type(doc).__name__
    if str(top).removeprefix(_CLASS_PREFIX) != _DICT:
        raise FeaturesError(f"{origin}: the top level is {top!r}, expected a FeaturesDict")
    specs: dict[str, FeatureSpec] = {}
    try:
        _walk_dict(doc, "", False, specs, origin)
    except FeaturesError:
        raise
    except (AttributeError, TypeError, ValueError) as error:
        raise FeaturesError(f"{origin}: malformed features ({error!r})") from error
    return specs


def _walk_dict(node: Mapping, prefix: str, per_step: bool, out: dict[str, FeatureSpec], origin: str) -> None:
    try:
        children = node["featuresDict"]["features"]
    except (KeyError, TypeError) as error:
        raise FeaturesError(f"{origin}: FeaturesDict {prefix or '<root>'} has no featuresDict.features") from error
    for name, child in children.items():
        _walk(child, f"{prefix}{name}", per_step, out, origin)


def _walk(node: Mapping, key: str, per_step: bool, out: dict[str, FeatureSpec], origin: str) -> None:
    cls = str(node.get("pythonClassName", "")).removeprefix(_CLASS_PREFIX)
    if cls == _DICT:
        _walk_dict(node, f"{key}/", per_step, out, origin)
    elif cls in _STEP_CONTAINERS:
        inner = node.get("sequence", {}).get("feature")
        if not isinstance(inner, Mapping):
            raise FeaturesError(f"{origin}: {key} is a {cls} without sequence.feature")
        if str(inner.get("pythonClassName", "")).removeprefix(_CLASS_PREFIX) == _DICT:
            _walk_dict(inner, f"{key}/", True, out, origin)
        else:
            _walk(inner, key, True, out, origin)
    else:
        out[key] = _leaf(node, cls, key, per_step, origin)


def _leaf(node: Mapping, cls: str, key: str, per_step: bool, origin: str) -> FeatureSpec:
    try:
        if cls in ("tensor_feature.Tensor", "scalar.Scalar"):
            body = node["tensor"]
            kind = FeatureKind.SCALAR if cls == "scalar.Scalar" else FeatureKind.TENSOR
            return FeatureSpec(key, kind, _shape(body), body["dtype"], body.get("encoding", "none"), per_step)
        if cls == "image_feature.Image":
            body = node["image"]
            encoding = body.get("encodingFormat", "png")
            return FeatureSpec(key, FeatureKind.IMAGE, _shape(body), body.get("dtype", "uint8"), encoding, per_step)
        if cls == "text_feature.Text":
            return FeatureSpec(key, FeatureKind.TEXT, (), "string", "utf-8", per_step)
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise FeaturesError(f"{origin}: feature {key} ({cls}) is malformed: {error!r}") from error
    return FeatureSpec(key, FeatureKind.OTHER, (), "", cls, per_step)


def _shape(body: Mapping) -> tuple[int, ...]:
    return tuple(int(d) for d in body.get("shape", {}).get("dimensions", []))


def load_features(path: str | pathlib.Path) -> dict[str, FeatureSpec]:
    """Parse a features.json file."""
    return parse_features(_load_json(path), origin=str(path))


@dataclasses.dataclass(frozen=True)
class SplitInfo:
    """One split of `dataset_info.json`."""

    name: str
    filepath_template: str
    num_bytes: int
    shard_lengths: tuple[int, ...]
    """Episodes per shard (TFDS writes them as int64 strings)."""

    def shard_files(self, dataset: str, file_format: str = "tfrecord") -> list[str]:
        """The split's shard file names, in shard order, e.g. droid-train.tfrecord-00000-of-00004."""
        count = len(self.shard_lengths)
        template = self.filepath_template.replace("{DATASET}", dataset).replace("{SPLIT}", self.name)
        template = template.replace("{FILEFORMAT}", file_format)
        if _SHARD_X_OF_Y not in template:
            return [template] if count == 1 else [f"{template}-{i:05d}-of-{count:05d}" for i in range(count)]
        return [template.replace(_SHARD_X_OF_Y, f"{i:05d}-of-{count:05d}") for i in range(count)]


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """The parts of TFDS's `dataset_info.json` a reader needs."""

    name: str
    """The builder name (e.g. "droid", or "r2d2_faceblur" in older copies)."""
    version: str
    file_format: str
    module_name: str
    description: str
    splits: dict[str, SplitInfo]

    def split(self, name: str, origin: str = "dataset_info.json") -> SplitInfo:
        if name not in self.splits:
            raise FeaturesError(f"{origin}: no split {name!r}; the dataset has {sorted(self.splits)}")
        return self.splits[name]


def parse_dataset_info(doc: Mapping, *, origin: str = "dataset_info.json") -> DatasetInfo:
    """Read a dataset_info.json document (int64 values are JSON strings in TFDS's proto-JSON)."""
    if not isinstance(doc, Mapping):
        raise FeaturesError(f"{origin}: expected a JSON object, got {type(doc).__name__}")
    try:
        splits = {s["name"]: _split(s) for s in doc.get("splits", [])}
        return DatasetInfo(
            name=doc["name"],
            version=str(doc.get("version", "")),
            file_format=doc.get("fileFormat", "tfrecord"),
            module_name=doc.get("moduleName", ""),
            description=doc.get("description", ""),
            splits=splits,
        )
    except (AttributeError, KeyError, TypeError, ValueError) as error:
        raise FeaturesError(f"{origin}: malformed dataset info ({error!r})") from error


def _split(doc: Mapping) -> SplitInfo:
    template = doc.get("filepathTemplate", "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}")
    lengths = tuple(int(n) for n in doc.get("shardLengths", []))
    return SplitInfo(doc["name"], template, int(doc.get("numBytes", 0)), lengths)


def load_dataset_info(path: str | pathlib.Path) -> DatasetInfo:
    """Parse a dataset_info.json file."""
    return parse_dataset_info(_load_json(path), origin=str(path))


def _load_json(path: str | pathlib.Path) -> Mapping:
    try:
        return json.loads(pathlib.Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise FeaturesError(f"{path} does not exist; point the reader at the TFDS version directory") from error
    except (OSError, ValueError) as error:
        raise FeaturesError(f"{path} cannot be read as JSON: {error}") from error


@dataclasses.dataclass
class DecodedEpisode:
    """One Example decoded by its specs. Per-step arrays are [n, *shape]; episode-level ones are [*shape]."""

    n_steps: int
    values: dict[str, np.ndarray | list[bytes]]
    """Numbers as arrays (floats at their stored float32 precision, bools as bool); text and images as bytes."""


def decode_episode(
    example: Mapping[str, FeatureValue], specs: Mapping[str, FeatureSpec], keys: Iterable[str] | None = None
) -> DecodedEpisode:
    """Decode `keys` (default: every spec) of one Example, checking every per-step feature agrees on n."""
    wanted = list(specs) if keys is None else list(keys)
    n_steps = count_steps(example, specs)
    values = {key: _decode_value(example, specs[key], n_steps) for key in wanted}
    return DecodedEpisode(n_steps, values)


def count_steps(example: Mapping[str, FeatureValue], specs: Mapping[str, FeatureSpec]) -> int:
    """The episode length: every per-step list's length divided by its per-step size, which must all agree."""
    counts: dict[str, float] = {}
    for key, spec in specs.items():
        size = spec.values_per_item
        if spec.per_step and size and key in example and spec.kind is not FeatureKind.OTHER:
            counts[key] = len(example[key]) / size
    distinct = sorted(set(counts.values()))
    if len(distinct) > 1 or any(not c.is_integer() for c in distinct):
        detail = ", ".join(f"{k}: {len(example[k])} values = {c:g} steps" for k, c in counts.items())
        raise InconsistentStepsError(f"per-step features disagree on the number of steps ({detail})")
    return int(distinct[0]) if distinct else 0


def _decode_value(example: Mapping[str, FeatureValue], spec: FeatureSpec, n_steps: int):
    if spec.key not in example:
        raise RecordFeatureError(f"the record has no feature {spec.key} although features.json lists it")
    raw = example[spec.key]
    found = Storage.BYTES if isinstance(raw, list) else _array_storage(raw)
    if len(raw) and found is not spec.storage:
        raise RecordFeatureError(f"{spec.key} is stored in {found.value}, features.json implies {spec.storage.value}")
    if spec.storage is Storage.BYTES:
        return list(raw) if isinstance(raw, list) else []
    array = np.asarray(raw, dtype=np.float32 if spec.storage is Storage.FLOAT else np.int64)
    if spec.kind is FeatureKind.OTHER or spec.values_per_item is None:
        return array
    if spec.dtype == "bool":
        array = array != 0
    shape = (n_steps, *spec.shape) if spec.per_step else spec.shape
    if array.size != math.prod(shape):
        raise RecordFeatureError(f"{spec.key} holds {array.size} values, features.json implies shape {shape}")
    return array.reshape(shape)


def _array_storage(array: np.ndarray) -> Storage:
    return Storage.FLOAT if array.dtype.kind == "f" else Storage.INT64


def replacement_features(configured: Sequence[str], fitting: Sequence[str]) -> list[str | None]:
    """For each configured feature key, itself when it is among `fitting` (the dataset's features of the right kind),
    else a fitting feature not already taken: one with the same last name (`.../joint_position` elsewhere), else the
    closest by spelling, else None. What a fix suggests, built from the features the dataset has, never from the
    ones it lacks."""
    fits = list(fitting)
    taken = {key for key in configured if key in fits}
    chosen: list[str | None] = []
    for key in configured:
        if key in fits:
            chosen.append(key)
            continue
        free = [candidate for candidate in fits if candidate not in taken]
        same_leaf = [candidate for candidate in free if _last_name(candidate) == _last_name(key)]  # moved, not renamed
        close = same_leaf[:1] or difflib.get_close_matches(key, free, n=1, cutoff=0.5)
        chosen.append(close[0] if close else None)
        taken.update(close)
    return chosen


def _last_name(key: str) -> str:
    return key.rsplit("/", 1)[-1]
