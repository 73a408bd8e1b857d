"""DROID as TFDS writes it (RLDS in TFRecord shards), read without TensorFlow.

Each record of a shard is one whole episode serialized as a `tf.train.Example` (FORMATS.md, "RLDS as TFDS writes
it"). Names, shapes and dtypes come from the dataset's own `features.json`; the builder name and shard list from
its `dataset_info.json`. A bad record (checksum, truncation, malformed protobuf, inconsistent lengths, a broken
JPEG) is quarantined with a message naming the shard, the record and the fix, and reading goes on.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import hashlib
import json
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from vlaforge.datasets.droid_calibration import DroidCalibration
from vlaforge.datasets.drops import DropLedger, DropReason
from vlaforge.datasets.frames import FrameConfig, FrameConformer
from vlaforge.datasets.schema import Camera, Episode, Lineage
from vlaforge.datasets.source import Source, SourceConfig, SourceError, WorkUnit
from vlaforge.datasets.tf_example import ExampleDecodeError, decode_example
from vlaforge.datasets.tfds_features import (
    DatasetInfo,
    DecodedEpisode,
    FeatureKind,
    FeaturesError,
    FeatureSpec,
    InconsistentStepsError,
    RecordFeatureError,
    Storage,
    decode_episode,
    load_dataset_info,
    load_features,
    replacement_features,
)
from vlaforge.datasets.tfrecord import DataCrcError, LengthCrcError, Record, TFRecordReader, TruncatedRecordError

logger = logging.getLogger(__name__)

FILE_PATH = "episode_metadata/file_path"
RECORDING_FOLDERPATH = "episode_metadata/recording_folderpath"
_REDOWNLOAD = "re-download this shard; its sha256 should match the release"
_NUMERIC = (FeatureKind.TENSOR, FeatureKind.SCALAR)
_FEATURE_FIELDS = {"state_features": _NUMERIC, "action_features": _NUMERIC, "extra_features": _NUMERIC,
                   "cameras": (FeatureKind.IMAGE,), "instruction_features": (FeatureKind.TEXT,)}
"""The config fields that name features, and the kinds of feature each takes."""


def _default_cameras() -> dict[str, str]:
    return {
        "steps/observation/exterior_image_1_left": Camera.EXTERIOR_1.value,
        "steps/observation/exterior_image_2_left": Camera.EXTERIOR_2.value,
        "steps/observation/wrist_image_left": Camera.WRIST.value,
    }


class _FrameError(Exception):
    def __init__(self, feature: str, camera: str, step: int, error: ValueError) -> None:
        super().__init__(f"step {step}, camera {camera} ({feature}): {error}")
        self.feature, self.step = feature, step


@dataclasses.dataclass(frozen=True)
class _Metadata:
    info: DatasetInfo
    specs: dict[str, FeatureSpec]
    shard_lengths: dict[str, int]
    """Episodes per shard file, as dataset_info.json lists them, in shard order."""


class DroidRldsSource(Source):
    """Reads DROID (or any DROID-shaped RLDS dataset) from a TFDS version directory."""

    name = "droid"

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(SourceConfig):
        split: str = "train"
        """The TFDS split to read (DROID has only "train")."""
        state_features: tuple[str, ...] = ("steps/observation/joint_position", "steps/observation/gripper_position")
        """Serialized per-step features concatenated, in this order, into the state [n, Ds]."""
        action_features: tuple[str, ...] = ("steps/action_dict/joint_velocity", "steps/action_dict/gripper_position")
        """Per-step features concatenated into the action [n, Da]. Pick from `steps/action_dict/*`
        (joint_position or joint_velocity plus gripper_position, as openpi does). DROID's flat `steps/action` is
        NOT joint velocities, whatever its description says: it is cartesian velocity (6) + gripper position (1)."""
        extra_features: tuple[str, ...] = ("steps/observation/cartesian_position",)
        """Per-step features kept beside the state as `Episode.extras[<last path component>]`."""
        cameras: Mapping[str, str] = dataclasses.field(default_factory=_default_cameras, hash=False)
        """Serialized image feature -> canonical camera name (a `Camera` value). Left out of the hash (a dict is
        not hashable) but compared for equality."""
        instruction_features: tuple[str, ...] = (
            "steps/language_instruction",
            "steps/language_instruction_2",
            "steps/language_instruction_3",
        )
        """Text features whose step-0 value is an instruction; empty ones are left out."""
        frames: FrameConfig = FrameConfig()
        """How frames are stored: JPEGs already at the target size pass through byte for byte."""
        embodiment: str = "franka_droid"
        """The embodiment key the model's per-robot config is looked up by."""
        control_rate_hz: float = 15.0
        """DROID's control rate; step t is at t / control_rate_hz seconds."""
        files_per_unit: int = 1
        """Shard files per work unit."""
        calibration_dir: str | None = None
        """A directory of DROID's published calibration files (`droid_calibration.py`): each covered episode's
        exterior cameras are calibrated in its shards' meta; None: none."""

        def __post_init__(self) -> None:
            for field in ("state_features", "action_features", "extra_features", "instruction_features"):
                object.__setattr__(self, field, tuple(getattr(self, field)))  # lists from JSON/CLI become tuples
            if isinstance(self.cameras, Mapping):  # Camera members become their plain names (used in member names)
                object.__setattr__(self, "cameras", {k: getattr(v, "value", v) for k, v in self.cameras.items()})
            _validate_config(self)

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._metadata: _Metadata | None = None
        self._conformers: dict[str, FrameConformer] = {}
        """One per camera feature: a camera's frames share a header, which is then parsed once."""

    @property
    def dataset_name(self) -> str:
        """The TFDS builder name from dataset_info.json ("droid", or "r2d2_faceblur" in older copies)."""
        return self._meta().info.name

    def plan(self) -> list[WorkUnit]:
        """One unit per `files_per_unit` shard files, in shard order; every listed shard must exist."""
        files = list(self._meta().shard_lengths)
        missing = [name for name in files if not (self.root / name).is_file()]
        if missing:
            raise SourceError(
                f"{self.root}: {len(missing)} of {len(files)} shards listed by dataset_info.json (split "
                f"{self.config.split!r}) are missing, first {missing[0]}; download them, or point root at a "
                f"complete copy"
            )
        step = self.config.files_per_unit
        return [WorkUnit(i, tuple(files[start : start + step])) for i, start in enumerate(range(0, len(files), step))]

    def read(self, unit: WorkUnit, ledger: DropLedger) -> Iterator[Episode]:
        """Episodes of the unit's shards in file and record order; bad records go to `ledger`."""
        for file in unit.files:
            yield from self._read_file(file, ledger)

    # Metadata -------------------------------------------------------------------------------------------------

    def _meta(self) -> _Metadata:
        if self._metadata is None:
            self._metadata = self._load_metadata()
        return self._metadata

    def _load_metadata(self) -> _Metadata:
        try:
            info = load_dataset_info(self.root / "dataset_info.json")
            specs = load_features(self.root / "features.json")
            split = info.split(self.config.split, origin=str(self.root / "dataset_info.json"))
        except FeaturesError as error:
            raise SourceError(f"{error} (fix: set root to a TFDS version directory such as .../droid/1.0.1)") from error
        self._check_features(specs)
        files = split.shard_files(info.name, info.file_format)
        logger.info("%s %s: %d shards, %d episodes", info.name, info.version, len(files), sum(split.shard_lengths))
        return _Metadata(info, specs, dict(zip(files, split.shard_lengths)))

    def _check_features(self, specs: Mapping[str, FeatureSpec]) -> None:
        needs = [(field, key, _NUMERIC) for field in ("state_features", "action_features", "extra_features")
                 for key in getattr(self.config, field)]
        needs += [("cameras", key, (FeatureKind.IMAGE,)) for key in self.config.cameras]
        needs += [("instruction_features", key, (FeatureKind.TEXT,)) for key in self.config.instruction_features]
        for field, key, kinds in needs:
            if key not in specs or not _fits(specs[key], kinds):
                raise SourceError(self._feature_problem(specs, field, key, kinds))

    def _feature_problem(self, specs: Mapping[str, FeatureSpec], field: str, key: str, kinds: tuple) -> str:
        fits = [k for k, s in specs.items() if _fits(s, kinds)]
        close = difflib.get_close_matches(key, fits, n=3, cutoff=0.5)
        wanted = f"a per-step {' or '.join(kind.value for kind in kinds)} feature"
        spec = specs.get(key)
        if spec is None:
            problem = f"has no feature {key!r}"
        else:
            scope = "a per-step" if spec.per_step else "an episode-level"
            problem = f"lists {key!r} as {scope} {spec.kind.value} {spec.dtype} {list(spec.shape)}"
        return (
            f"{self.root / 'features.json'} {problem}, but DroidRldsSource.Config.{field} needs {wanted}. "
            f"Did you mean {' or '.join(map(repr, close)) or 'none of them'}? Features that fit: {fits}. "
            f"Fix: {self._suggested_setting(field, fits)}"
        )

    def _suggested_setting(self, field: str, fits: list[str]) -> str:
        """The `--set` line that maps `field` onto features this dataset has."""
        value = self._replacement(field, fits)
        if not value:
            return (f"this dataset has no feature that can serve as DroidRldsSource.Config.{field}; point --input "
                    "at a dataset that has one")
        return (f"set DroidRldsSource.Config.{field} to features this dataset has, e.g. (CLI) vlaforge ingest droid "
                f"--set {field}='{json.dumps(value)}'")

    def _replacement(self, field: str, fits: list[str]) -> Any:
        """`field`'s value with each configured key the dataset lacks replaced by the closest one that fits (a key
        with no close match left out)."""
        configured = getattr(self.config, field)
        keys = list(configured)
        chosen = replacement_features(keys, fits)
        if isinstance(configured, Mapping):
            return {new: configured[old] for old, new in zip(keys, chosen) if new is not None}
        return [new for new in chosen if new is not None]

    def suggested_settings(self, specs: Mapping[str, FeatureSpec]) -> dict[str, Any]:
        """{field: value} for every feature field whose configured features this dataset (`specs`, its
        features.json) lacks, or has in a form this source cannot read: what `vlaforge inspect` suggests."""
        settings = {}
        for field, kinds in _FEATURE_FIELDS.items():
            if any(key not in specs or not _fits(specs[key], kinds) for key in getattr(self.config, field)):
                settings[field] = self._replacement(field, [k for k, s in specs.items() if _fits(s, kinds)])
        return settings

    # Records --------------------------------------------------------------------------------------------------

    def _read_file(self, file: str, ledger: DropLedger) -> Iterator[Episode]:
        """One shard's episodes, a record at a time; a damaged record or tail is quarantined, never raised."""
        try:
            handle = open(self.root / file, "rb")
        except OSError as error:
            message = f"{file}: cannot be opened ({error}). Fix: {_REDOWNLOAD}"
            ledger.quarantine(file=file, episode="", reason=DropReason.UNREADABLE_FILE, message=message)
            return
        with handle:
            reader = TFRecordReader(handle, file, map_records=True)  # frames are views into the mapped record
            while True:
                try:
                    record = reader.read()
                except DataCrcError as error:
                    message = f"{error}; the record is skipped and the next one read. Fix: {_REDOWNLOAD}"
                    ledger.quarantine(file=file, episode=f"record {error.index}", reason=DropReason.CRC_MISMATCH,
                                      message=message)
                    continue
                except (LengthCrcError, TruncatedRecordError) as error:
                    self._quarantine_rest(file, error, ledger)
                    return
                if record is None:
                    break
                if (episode := self._episode(file, record, ledger)) is not None:
                    yield episode
        self._check_count(file, reader.index, ledger)

    def _quarantine_rest(self, file: str, error: LengthCrcError | TruncatedRecordError, ledger: DropLedger) -> None:
        """The rest of the file from the failing record on cannot be read."""
        reason = DropReason.CRC_MISMATCH if isinstance(error, LengthCrcError) else DropReason.TRUNCATED_FILE
        expected = self._meta().shard_lengths.get(file)
        listed = "" if expected is None else f" (dataset_info.json lists {expected} episodes in this shard)"
        message = f"{error}; records {error.index} onwards are lost{listed}. Fix: {_REDOWNLOAD}"
        ledger.quarantine(file=file, episode=f"record {error.index}", reason=reason, message=message)

    def _check_count(self, file: str, records: int, ledger: DropLedger) -> None:
        """A file cut exactly at a record boundary reads cleanly; only the episode count in the metadata shows it."""
        expected = self._meta().shard_lengths.get(file)
        if expected is None or records == expected:
            return
        if records > expected:
            logger.warning("%s holds %d records, dataset_info.json lists %d", file, records, expected)
            return
        message = (f"{file}: ends cleanly after {records} records but dataset_info.json lists {expected}; the last "
                   f"{expected - records} episodes are missing. Fix: {_REDOWNLOAD}")
        ledger.quarantine(file=file, episode=f"record {records}", reason=DropReason.TRUNCATED_FILE, message=message)

    def _episode(self, file: str, record: Record, ledger: DropLedger) -> Episode | None:
        where = f"{file} record {record.index} (byte offset {record.offset})"
        decoded = self._decode(where, file, record, ledger)
        if decoded is None:
            return None
        try:
            return self._build(decoded, file, record.index)
        except _FrameError as error:
            reason, detail = DropReason.BAD_IMAGE, f"{error}; the episode is set aside. Fix: {_REDOWNLOAD}, or "
            detail += f"leave {error.feature} out of `cameras` if it is broken throughout the dataset"
        except UnicodeDecodeError as error:
            reason, detail = DropReason.BAD_RECORD, f"text is not UTF-8 ({error}). Fix: {_REDOWNLOAD}"
        except ValueError as error:
            reason, detail = DropReason.INCONSISTENT_LENGTHS, f"{error}. Fix: {_REDOWNLOAD}"
        episode_id = self._episode_id(decoded, file, record.index)
        ledger.quarantine(file=file, episode=episode_id, reason=reason, message=f"{where}: {detail}",
                          steps=decoded.n_steps)
        return None

    def _decode(self, where: str, file: str, record: Record, ledger: DropLedger) -> DecodedEpisode | None:
        specs, config = self._meta().specs, self.config
        keys = [*config.state_features, *config.action_features, *config.extra_features, *config.cameras]
        keys += [*config.instruction_features, *(key for key in (FILE_PATH, RECORDING_FOLDERPATH) if key in specs)]
        try:
            return decode_episode(decode_example(record.data, views=config.cameras), specs, keys)
        except InconsistentStepsError as error:
            reason, detail = DropReason.INCONSISTENT_LENGTHS, str(error)
        except ExampleDecodeError as error:
            reason, detail = DropReason.BAD_RECORD, f"not a valid tf.train.Example ({error})"
        except RecordFeatureError as error:
            reason, detail = DropReason.BAD_RECORD, f"does not match features.json ({error})"
        message = f"{where}: {detail}; the record is skipped. Fix: {_REDOWNLOAD}"
        ledger.quarantine(file=file, episode=f"record {record.index}", reason=reason, message=message)
        return None

    # Episode assembly -----------------------------------------------------------------------------------------

    def _build(self, decoded: DecodedEpisode, file: str, index: int) -> Episode:
        n, values, config = decoded.n_steps, decoded.values, self.config
        state, state_names = self._concat(config.state_features, decoded)
        action, action_names = self._concat(config.action_features, decoded)
        extras = {key.rsplit("/", 1)[-1]: self._concat((key,), decoded)[0] for key in config.extra_features}
        file_path = _first(values.get(FILE_PATH))
        episode = Episode(
            episode_id=self._episode_id(decoded, file, index),
            source=self.name,
            embodiment=config.embodiment,
            control_rate_hz=config.control_rate_hz,
            timestamps=np.arange(n, dtype=np.float64) / config.control_rate_hz,
            frames=self._frames(decoded),
            state=state,
            state_names=state_names,
            action=action,
            action_names=action_names,
            instructions=self._instructions(decoded),
            lineage=Lineage(file=file, index=f"record {index}", source_version=self._meta().info.version),
            success=(b"success" in file_path) if file_path else None,
            extras=extras,
            calibration=self._calibration.entries(file_path.decode()) if self._calibration and file_path else {},
        )
        episode.validate()
        return episode

    @functools.cached_property
    def _calibration(self) -> DroidCalibration | None:
        """DROID's calibration release, when `calibration_dir` names it (loaded once per worker)."""
        return DroidCalibration.load(self.config.calibration_dir) if self.config.calibration_dir else None

    def _concat(self, keys: tuple[str, ...], decoded: DecodedEpisode) -> tuple[np.ndarray, list[str]]:
        """float32 [n, D] of the features side by side, and one name per dimension (joint_position_0, ...)."""
        specs, n = self._meta().specs, decoded.n_steps
        parts = [np.asarray(decoded.values[key]).reshape(n, specs[key].values_per_item) for key in keys]
        names = [name for key in keys for name in _dimension_names(specs[key])]
        return np.concatenate(parts, axis=1, dtype=np.float32), names

    def _frames(self, decoded: DecodedEpisode) -> dict[str, list[bytes]]:
        """Each camera's frames: views into the record when they pass through (the episode then holds its record)."""
        frames: dict[str, list[bytes]] = {}
        for key, camera in self.config.cameras.items():
            conformed, conform = [], self._conformers.setdefault(key, FrameConformer(self.config.frames))
            for step, data in enumerate(decoded.values[key]):
                try:
                    conformed.append(conform(data))
                except ValueError as error:  # BadImageError, or a decoder error while re-encoding to the target size
                    raise _FrameError(key, camera, step, error) from error
            frames[camera] = conformed
        return frames

    def _instructions(self, decoded: DecodedEpisode) -> list[str]:
        texts = (_first(decoded.values[key]).decode("utf-8").strip() for key in self.config.instruction_features)
        return [text for text in texts if text]

    def _episode_id(self, decoded: DecodedEpisode, file: str, index: int) -> str:
        """`<dataset>-<sha1(recording_folderpath--file_path)[:16]>`, or of the shard and record when both are empty."""
        folder, path = _first(decoded.values.get(RECORDING_FOLDERPATH)), _first(decoded.values.get(FILE_PATH))
        identity = folder + b"--" + path if folder or path else f"{file}--record {index}".encode()
        return f"{self.dataset_name}-{hashlib.sha1(identity).hexdigest()[:16]}"


def _fits(spec: FeatureSpec, kinds: tuple[FeatureKind, ...]) -> bool:
    """Whether the source can use the feature as one of `kinds`: per step, of known size, numbers stored as
    numbers, images as JPEG."""
    if spec.kind not in kinds or not spec.per_step or spec.values_per_item is None:
        return False
    if spec.kind is FeatureKind.IMAGE:
        return spec.encoding == "jpeg"  # frames pass through as JPEG; other encodings are not decoded here
    return kinds != _NUMERIC or spec.storage is not Storage.BYTES


def _first(values: list[bytes] | None) -> bytes:
    return values[0] if values else b""


def _dimension_names(spec: FeatureSpec) -> list[str]:
    size = spec.values_per_item or 0
    return [spec.name] if size == 1 else [f"{spec.name}_{i}" for i in range(size)]


def _config_error(field: str, problem: str) -> ValueError:
    return ValueError(f"DroidRldsSource.Config.{field} {problem}")


def _validate_config(config: DroidRldsSource.Config) -> None:
    for field in ("root", "split", "embodiment"):
        value = getattr(config, field)
        if not isinstance(value, str) or not value:
            raise _config_error(field, f"must be a non-empty string, got {value!r}")
    for field in ("state_features", "action_features", "extra_features", "instruction_features"):
        _check_step_keys(field, getattr(config, field), allow_empty=field in ("extra_features", "instruction_features"))
    names = [key.rsplit("/", 1)[-1] for key in config.extra_features]
    if len(set(names)) != len(names):
        raise _config_error("extra_features", f"end in the same name twice (extras are keyed by it): {names}")
    _check_cameras(config.cameras)
    if not isinstance(config.frames, FrameConfig):
        raise _config_error("frames", f"must be a FrameConfig, got {config.frames!r}")
    if not isinstance(config.control_rate_hz, (int, float)) or not config.control_rate_hz > 0:
        raise _config_error("control_rate_hz", f"must be > 0, got {config.control_rate_hz!r}")
    if not isinstance(config.files_per_unit, int) or config.files_per_unit < 1:
        raise _config_error("files_per_unit", f"must be an int >= 1, got {config.files_per_unit!r}")


def _check_step_keys(field: str, keys: tuple[str, ...], *, allow_empty: bool) -> None:
    if not keys and not allow_empty:
        raise _config_error(field, "must name at least one feature, got ()")
    for key in keys:
        if not isinstance(key, str) or not key.startswith("steps/"):
            raise _config_error(field, f"holds {key!r}, which is not a per-step key like 'steps/observation/...'")


def _check_cameras(cameras: Mapping[str, str]) -> None:
    if not isinstance(cameras, Mapping):
        raise _config_error("cameras", f"must map image features to camera names, got {cameras!r}")
    _check_step_keys("cameras", tuple(cameras), allow_empty=True)
    valid = sorted(camera.value for camera in Camera)
    for key, camera in cameras.items():
        if camera not in valid:
            raise _config_error("cameras", f"maps {key!r} to {camera!r}, which is not one of {valid}")
    if len(set(cameras.values())) != len(cameras):
        raise _config_error("cameras", f"maps two features to one camera: {dict(cameras)}")
