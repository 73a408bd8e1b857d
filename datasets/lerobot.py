"""LeRobot datasets, codebase v3.0 and v2.1 (MolmoAct is published this way), read with pyarrow and PyAV.

Metadata (info, tasks, episodes) comes from `lerobot_meta`. An episode's rows come from its data parquet (v3.0: many
episodes per file, found by `episode_index`; v2.1: one file per episode), reading only the needed columns and each
row group once per unit. Camera frames come either from the mp4 of a `video` feature, at `from_timestamp` plus each
row's `timestamp` (the frame nearest to it, within half a frame period by default), or from the parquet itself for
an `image` feature (HF datasets' Image struct {bytes, path}). Every frame is stored as JPEG at `frames.size`.

A bad episode never stops a unit: a video shorter than the parquet, an unreadable file, rows that disagree with the
episode metadata, a broken image are quarantined with a message naming the file, the episode and the fix.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import pathlib
from collections.abc import Iterator, Mapping

import numpy as np
import pyarrow as pa

from vlaforge.datasets.drops import DropLedger, DropReason
from vlaforge.datasets.frames import FrameConfig, encode_jpeg
from vlaforge.datasets.lerobot_meta import IMAGE, INFO_PATH, VIDEO, EpisodeInfo, LeRobotMetadata, load_metadata
from vlaforge.datasets.lerobot_rows import DataFiles, EpisodeProblem, image_cells, redownload, to_jpeg, vector_values
from vlaforge.datasets.schema import Camera, Episode, Lineage, safe_key_part
from vlaforge.datasets.source import Source, SourceConfig, SourceError, WorkUnit
from vlaforge.datasets.video import FrameTimestampError, VideoError, VideoReaders, VideoTooShortError

logger = logging.getLogger(__name__)

CAMERA_NAMES: dict[str, str] = {
    "first_view": Camera.EXTERIOR_1.value,
    "second_view": Camera.EXTERIOR_2.value,
    "wrist_image": Camera.WRIST.value,
    "top": Camera.EXTERIOR_1.value,
    "front": Camera.EXTERIOR_1.value,
    "image": Camera.EXTERIOR_1.value,
    "cam_high": Camera.EXTERIOR_1.value,
    "exterior_image_1_left": Camera.EXTERIOR_1.value,
    "exterior_image_2_left": Camera.EXTERIOR_2.value,
    "wrist": Camera.WRIST.value,
    "wrist_image_left": Camera.WRIST.value,
    "left_wrist": Camera.LEFT_WRIST.value,
    "cam_left_wrist": Camera.LEFT_WRIST.value,
    "right_wrist": Camera.RIGHT_WRIST.value,
    "cam_right_wrist": Camera.RIGHT_WRIST.value,
}
"""Default canonical names, by the camera part of a feature key (`observation.images.<camera>`, or the bare key)."""

_IMAGE_PREFIXES = ("observation.images.",)
_SPLIT_DIRS = ("train", "test", "val", "validation")
_NUMERIC = ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "bool")


def camera_name(key: str) -> str:
    """The canonical camera a LeRobot image/video feature maps to by default (see `CAMERA_NAMES`), else the
    camera part of the key made safe for a sample member name. The camera part follows `observation.images.`;
    other keys use their last dotted part (`observation.image` -> `image`, `first_view` -> `first_view`)."""
    short = _camera_part(key)
    return CAMERA_NAMES.get(short.lower(), safe_key_part(short))


def _camera_part(key: str) -> str:
    return next((key[len(prefix):] for prefix in _IMAGE_PREFIXES if key.startswith(prefix)), key.rsplit(".", 1)[-1])


def default_cameras(keys: list[str]) -> dict[str, str]:
    """Every visual feature, named by `camera_name`; when two map to one name the first (in info.json order)
    keeps it and the later one keeps its own (safe) name."""
    cameras: dict[str, str] = {}
    for key in keys:
        name = camera_name(key)
        if name in cameras.values():
            name = safe_key_part(_camera_part(key))
        while name in cameras.values():
            name += "_2"
        cameras[key] = name
    return cameras


class LeRobotSource(Source):
    """Reads a LeRobot v3.0 or v2.1 dataset directory (the one holding `meta/info.json`)."""

    name = "lerobot"

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(SourceConfig):
        state_feature: str = "observation.state"
        """The float vector feature stored as the state [n, Ds]; dimension names come from its info.json names."""
        action_feature: str = "action"
        """The float vector feature stored as the action [n, Da]."""
        cameras: Mapping[str, str] | None = dataclasses.field(default=None, hash=False)
        """LeRobot video/image feature key -> camera name (a `Camera` value, or any name safe in a sample member).
        None takes every video/image feature except depth maps, named by `CAMERA_NAMES` on the part after
        `observation.images.` (MolmoAct: first_view -> exterior_1, second_view -> exterior_2, wrist_image -> wrist;
        top/front -> exterior_1, wrist -> wrist, ...), else by that part itself (see `default_cameras`)."""
        frames: FrameConfig = FrameConfig()
        """Stored frames: size None keeps the native size; JPEGs in the parquet at the target size pass through."""
        embodiment: str | None = None
        """The embodiment key; None takes `robot_type` from info.json, or the dataset name when that is null."""
        dataset_name: str | None = None
        """Names shards and episode ids (`<dataset_name>-ep<index:06d>`). None takes the root directory's name
        made safe, prefixed by its parent's name when it is a split directory such as `train` (MolmoAct:
        molmoact_dataset_household/train -> molmoact_dataset_household-train)."""
        episodes_per_unit: int = 50
        """Episodes per work unit (consecutive episode indices)."""
        video_tolerance_s: float | None = None
        """Largest distance between a row's timestamp and the chosen video frame; None is half a frame period."""

        def __post_init__(self) -> None:
            if isinstance(self.cameras, Mapping):  # Camera members become their plain names (used in member names)
                object.__setattr__(self, "cameras", {k: getattr(v, "value", v) for k, v in self.cameras.items()})
            _validate_config(self)

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self._metadata: LeRobotMetadata | None = None
        self._camera_map: dict[str, str] | None = None

    @property
    def dataset_name(self) -> str:
        if self.config.dataset_name:
            return self.config.dataset_name
        path = self.root.resolve()
        if path.name.lower() in _SPLIT_DIRS and path.parent.name:
            return safe_key_part(f"{path.parent.name}-{path.name}")
        return safe_key_part(path.name)

    def plan(self) -> list[WorkUnit]:
        """Units of `episodes_per_unit` consecutive episodes; files are the data and video files they touch."""
        episodes, step = self._meta().episodes, self.config.episodes_per_unit
        units = []
        for number, start in enumerate(range(0, len(episodes), step)):
            group = episodes[start : start + step]
            files = dict.fromkeys(file for episode in group for file in self._files(episode))
            units.append(WorkUnit(number, tuple(files), (group[0].index, group[-1].index + 1)))
        return units

    def read(self, unit: WorkUnit, ledger: DropLedger) -> Iterator[Episode]:
        """The unit's episodes in index order; bad ones go to `ledger` and reading goes on."""
        start, stop = unit.episodes or (0, float("inf"))
        episodes = [episode for episode in self._meta().episodes if start <= episode.index < stop]
        data = DataFiles(self.root, self._columns())
        with VideoReaders(size=self.config.frames.size) as videos:
            for info in episodes:
                videos.keep_only(self.root / info.videos[key].file for key in self._video_keys())
                episode = self._episode_or_quarantine(info, data, videos, ledger)
                if episode is not None:
                    yield episode

    # Metadata -------------------------------------------------------------------------------------------------

    def _meta(self) -> LeRobotMetadata:
        if self._metadata is None:
            metadata = load_metadata(self.root)
            self._camera_map = self._check_features(metadata)
            self._metadata = metadata
        return self._metadata

    def _cameras(self) -> dict[str, str]:
        self._meta()
        assert self._camera_map is not None
        return self._camera_map

    def _video_keys(self) -> list[str]:
        features = self._meta().features
        return [key for key in self._cameras() if features[key]["dtype"] == VIDEO]

    def _files(self, episode: EpisodeInfo) -> list[str]:
        return [episode.data_file, *(episode.videos[key].file for key in self._video_keys())]

    def _columns(self) -> list[str]:
        features = self._meta().features
        images = [key for key in self._cameras() if features[key]["dtype"] == IMAGE]
        return ["episode_index", "timestamp", self.config.state_feature, self.config.action_feature, *images]

    def _check_features(self, meta: LeRobotMetadata) -> dict[str, str]:
        """The camera mapping to use; raises SourceError naming a configured feature the dataset lacks."""
        for field in ("state_feature", "action_feature"):
            self._require(meta, field, getattr(self.config, field), _NUMERIC, "a numeric vector")
        cameras = self.config.cameras
        if cameras is None:
            cameras = default_cameras(meta.camera_keys())
        for key in cameras:
            self._require(meta, "cameras", key, (VIDEO, IMAGE), "a video or image")
        if not cameras:
            logger.warning("%s: no video or image features; episodes will carry no frames", self.root / INFO_PATH)
        return dict(cameras)

    def _require(self, meta: LeRobotMetadata, field: str, key: str, dtypes: tuple[str, ...], wanted: str) -> None:
        feature = meta.features.get(key)
        if feature is not None and feature.get("dtype") in dtypes:
            return
        fits = meta.keys_of(*dtypes)
        short = key.rsplit(".", 1)[-1]
        close = difflib.get_close_matches(key, fits, n=3, cutoff=0.5)
        close += [k for k in fits if k not in close and k.rsplit(".", 1)[-1] == short]
        problem = "has no feature" if feature is None else f"lists as dtype {feature.get('dtype')!r} the feature"
        raise SourceError(
            f"{self.root / INFO_PATH} {problem} {key!r}, which LeRobotSource.Config.{field} names (it needs "
            f"{wanted} feature). Did you mean "
            f"{' or '.join(map(repr, close)) or 'none of them'}? Features that fit: {fits}. Fix: set {field} to one "
            f"of them (CLI: vlaforge ingest lerobot --set {field}=...)"
        )

    # Episodes -------------------------------------------------------------------------------------------------

    def _episode_id(self, index: int) -> str:
        return f"{self.dataset_name}-ep{index:06d}"

    def _episode_or_quarantine(self, info: EpisodeInfo, data: DataFiles, videos: VideoReaders,
                               ledger: DropLedger) -> Episode | None:
        try:
            return self._episode(info, data, videos)
        except EpisodeProblem as problem:
            ledger.quarantine(file=problem.file, episode=self._episode_id(info.index), reason=problem.reason,
                              message=problem.message, steps=info.length)
            return None

    def _episode(self, info: EpisodeInfo, data: DataFiles, videos: VideoReaders) -> Episode:
        rows = data.rows(info)
        where = f"{info.data_file} episode {info.index}"
        if rows.num_rows != info.length:
            raise EpisodeProblem(DropReason.INCONSISTENT_LENGTHS, info.data_file,
                                 f"{where}: {rows.num_rows} rows, but the episode metadata gives length "
                                 f"{info.length}. Fix: {redownload(info.data_file)} and the meta/ folder together")
        meta, config = self._meta(), self.config
        timestamps = rows.column("timestamp").to_numpy().astype(np.float64)
        state_names = meta.dimension_names(config.state_feature)
        action_names = meta.dimension_names(config.action_feature)
        episode = Episode(
            episode_id=self._episode_id(info.index),
            source=self.name,
            embodiment=config.embodiment or meta.robot_type or self.dataset_name,
            control_rate_hz=meta.fps,
            timestamps=timestamps,
            frames=self._frames(info, rows, timestamps, videos),
            state=vector_values(rows, config.state_feature, len(state_names), info),
            state_names=state_names,
            action=vector_values(rows, config.action_feature, len(action_names), info),
            action_names=action_names,
            instructions=self._instructions(info, rows),
            lineage=Lineage(file=info.data_file, index=f"episode {info.index}", source_version=meta.version),
        )
        try:
            episode.validate()
        except ValueError as error:
            raise EpisodeProblem(DropReason.INCONSISTENT_LENGTHS, info.data_file,
                                 f"{where}: {error}. Fix: {redownload(info.data_file)}") from error
        return episode

    def _instructions(self, info: EpisodeInfo, rows: pa.Table) -> list[str]:
        """The rows' tasks in order of first appearance, then any other task the episode metadata lists."""
        texts: list[str] = []
        tasks = self._meta().tasks
        if "task_index" in rows.column_names:
            indices = rows.column("task_index").to_numpy()
            _, first = np.unique(indices, return_index=True)
            for index in indices[np.sort(first)]:
                if (text := tasks.get(int(index))) is None:
                    logger.warning("%s episode %d: task_index %d is not in the tasks table", info.data_file,
                                   info.index, index)
                elif text not in texts:
                    texts.append(text)
        return texts + [text for text in info.tasks if text and text not in texts]

    # Frames ---------------------------------------------------------------------------------------------------

    def _frames(self, info: EpisodeInfo, rows: pa.Table, timestamps: np.ndarray,
                videos: VideoReaders) -> dict[str, list[bytes]]:
        features = self._meta().features
        frames = {}
        for key, camera in self._cameras().items():
            if features[key]["dtype"] == VIDEO:
                frames[camera] = self._video_frames(info, key, timestamps, videos)
            else:
                frames[camera] = self._parquet_frames(info, key, camera, rows)
        return frames

    def _video_frames(self, info: EpisodeInfo, key: str, timestamps: np.ndarray, videos: VideoReaders) -> list:
        """JPEG frames of a `video` feature: the frame nearest to `from_timestamp` + each row's timestamp."""
        span = info.videos[key]
        path = self.root / span.file
        tolerance = self.config.video_tolerance_s or 0.5 / self._meta().fps
        try:
            return videos.get(path).frames_at(span.from_timestamp + timestamps, tolerance_s=tolerance,
                                              convert=lambda rgb: encode_jpeg(rgb, self.config.frames))
        except VideoError as error:
            videos.discard(path)  # the next request reopens the file
            raise self._video_problem(error, info, key) from error

    def _video_problem(self, error: VideoError, info: EpisodeInfo, key: str) -> EpisodeProblem:
        file = info.videos[key].file
        if isinstance(error, VideoTooShortError):
            return EpisodeProblem(DropReason.VIDEO_TOO_SHORT, file, _too_short(file, info, error))
        if isinstance(error, FrameTimestampError):
            return EpisodeProblem(DropReason.BAD_RECORD, file, f"{error} (episode {info.index}, {key}). Fix: "
                                  f"re-encode the video at {self._meta().fps:g} fps, or pass a larger "
                                  f"video_tolerance_s")
        return EpisodeProblem(DropReason.UNREADABLE_FILE, file,
                              f"{error} (episode {info.index}, {key}). Fix: {redownload(file)}")

    def _parquet_frames(self, info: EpisodeInfo, key: str, camera: str, rows: pa.Table) -> list[bytes]:
        """Frames of an `image` feature; `path` (relative to the root) is read when the bytes are missing."""
        frames = []
        for step, (blob, path) in enumerate(image_cells(rows, key)):
            try:
                frames.append(to_jpeg(blob if blob is not None else self._image_file(path), self.config.frames))
            except (ValueError, OSError) as error:  # BadImageError, a PIL or simplejpeg decoder error, no file
                raise EpisodeProblem(DropReason.BAD_IMAGE, info.data_file,
                                     f"{info.data_file} episode {info.index}, step {step}, camera {camera} ({key}): "
                                     f"{error}; the episode is set aside. Fix: {redownload(info.data_file)}, or "
                                     f"leave {key} out of `cameras`") from error
        return frames

    def _image_file(self, path: str | None) -> bytes:
        if not path:
            raise ValueError("the image has neither bytes nor a path")
        candidate = self.root / path
        return (candidate if candidate.is_file() else pathlib.Path(path)).read_bytes()


def _too_short(file: str, info: EpisodeInfo, error: VideoTooShortError) -> str:
    return (f"{file}: episode {info.index} needs {error.needed} frames but the video gives only {error.found}: it "
            f"stops before the frame for {error.stopped_at_s:.3f} s"
            + ("" if error.last_frame_s is None else f" (last frame at {error.last_frame_s:.3f} s)")
            + ". Fix: re-encode the video or trim the episode in the parquet")


def _config_error(field: str, problem: str) -> ValueError:
    return ValueError(f"LeRobotSource.Config.{field} {problem}")


def _validate_config(config: LeRobotSource.Config) -> None:
    for field in ("root", "state_feature", "action_feature"):
        value = getattr(config, field)
        if not isinstance(value, str) or not value:
            raise _config_error(field, f"must be a non-empty string, got {value!r}")
    for field in ("embodiment", "dataset_name"):
        value = getattr(config, field)
        if value is not None and (not isinstance(value, str) or not value):
            raise _config_error(field, f"must be None or a non-empty string, got {value!r}")
    if config.dataset_name is not None and safe_key_part(config.dataset_name) != config.dataset_name:
        raise _config_error("dataset_name", f"may hold only letters, digits, '-' and '_', got {config.dataset_name!r}")
    _check_cameras(config.cameras)
    if not isinstance(config.frames, FrameConfig):
        raise _config_error("frames", f"must be a FrameConfig, got {config.frames!r}")
    per_unit = config.episodes_per_unit
    if isinstance(per_unit, bool) or not isinstance(per_unit, int) or per_unit < 1:
        raise _config_error("episodes_per_unit", f"must be an int >= 1, got {per_unit!r}")
    tolerance = config.video_tolerance_s
    if tolerance is not None and (not isinstance(tolerance, (int, float)) or not tolerance > 0):
        raise _config_error("video_tolerance_s", f"must be None or > 0 seconds, got {tolerance!r}")


def _check_cameras(cameras: Mapping[str, str] | None) -> None:
    if cameras is None:
        return
    if not isinstance(cameras, Mapping):
        raise _config_error("cameras", f"must map feature keys to camera names, or be None; got {cameras!r}")
    for key, name in cameras.items():
        if not isinstance(key, str) or not key:
            raise _config_error("cameras", f"has the feature key {key!r}; keys are info.json feature names")
        if not isinstance(name, str) or safe_key_part(name) != name:
            raise _config_error("cameras", f"maps {key!r} to {name!r}; camera names may hold only letters, digits, "
                                f"'-' and '_' (canonical: {[camera.value for camera in Camera]})")
    if len(set(cameras.values())) != len(cameras):
        raise _config_error("cameras", f"maps two features to one camera: {dict(cameras)}")
