"""LeRobot dataset metadata, v3.0 and v2.1, read into one shape (FORMATS.md, "LeRobot datasets").

Both versions describe the dataset in `meta/info.json` (fps, robot type, features, path templates). They differ in
where tasks and episodes live:
- v3.0: `meta/tasks.parquet` (the task string is the pandas index, beside a `task_index` column) and
  `meta/episodes/chunk-*/file-*.parquet`, one row per episode giving its data file, its rows, and per camera its
  video file and `from_timestamp`/`to_timestamp` inside that file (many episodes share one file);
- v2.1: `meta/tasks.jsonl` and `meta/episodes.jsonl`; every episode has its own parquet and its own mp4 per camera,
  found from the `data_path`/`video_path` templates with `episode_chunk = episode_index // chunks_size`.
Anything that makes the metadata unusable raises `SourceError` naming the file and the fix.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import pathlib
from collections.abc import Iterator, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from vlaforge.datasets.source import SourceError

logger = logging.getLogger(__name__)

SUPPORTED_VERSIONS = ("v3.0", "v2.1")
INFO_PATH = "meta/info.json"
V30_TASKS_PATH = "meta/tasks.parquet"
V30_EPISODES_GLOB = "meta/episodes/chunk-*/file-*.parquet"
V21_TASKS_PATH = "meta/tasks.jsonl"
V21_EPISODES_PATH = "meta/episodes.jsonl"
VIDEO, IMAGE = "video", "image"
_CONVERT = ("convert it with LeRobot's converter (lerobot.datasets.v30.convert_dataset_v21_to_v30 for v2.1 -> v3.0; "
            "v2.0 -> v2.1 with lerobot.datasets.v21.convert_dataset_v20_to_v21), or download the dataset at a "
            "revision tagged v3.0 or v2.1")


@dataclasses.dataclass(frozen=True)
class VideoSpan:
    """Where one camera of one episode lies: a video file and the episode's time range inside it."""

    file: str
    """Relative to the dataset root."""
    from_timestamp: float
    """The file time of the episode's first frame; add it to the parquet `timestamp` of each row."""
    to_timestamp: float | None = None


@dataclasses.dataclass(frozen=True)
class EpisodeInfo:
    """One episode as the metadata describes it."""

    index: int
    length: int
    tasks: tuple[str, ...]
    data_file: str
    """The parquet holding its rows, relative to the dataset root."""
    videos: Mapping[str, VideoSpan] = dataclasses.field(default_factory=dict, hash=False)
    """Video feature key -> where its frames are."""

    @property
    def files(self) -> list[str]:
        return [self.data_file, *(span.file for span in self.videos.values())]


@dataclasses.dataclass(frozen=True)
class LeRobotMetadata:
    """A LeRobot dataset's metadata, whatever its codebase version."""

    root: pathlib.Path
    version: str
    fps: float
    robot_type: str | None
    features: Mapping[str, Mapping[str, Any]]
    tasks: Mapping[int, str]
    episodes: tuple[EpisodeInfo, ...]
    """Sorted by episode index."""

    def keys_of(self, *dtypes: str) -> list[str]:
        """Feature keys of the given dtypes, in info.json order."""
        return [key for key, feature in self.features.items() if feature.get("dtype") in dtypes]

    def camera_keys(self) -> list[str]:
        """Video and image features that hold camera frames (depth maps, flagged `is_depth_map`, are left out)."""
        return [key for key in self.keys_of(VIDEO, IMAGE) if not _is_depth(self.features[key])]

    def dimension_names(self, key: str) -> list[str]:
        """One name per dimension of a vector feature, from `names` (a list, a dict of lists such as
        {"motors": [...]}, or null); `<last part of key>_<i>` when the names are missing or do not fit."""
        feature = self.features[key]
        size = math.prod(int(d) for d in feature.get("shape") or [1])
        names = list(_flatten_names(feature.get("names")))
        if len(names) == size:
            return names
        if names:
            logger.warning("%s: %s lists %d names for %d dimensions; using generated names", INFO_PATH, key,
                           len(names), size)
        short = key.rsplit(".", 1)[-1]
        return [f"{short}_{i}" for i in range(size)]


def load_metadata(root: pathlib.Path) -> LeRobotMetadata:
    """Read info, tasks and episodes of the dataset at `root`; raise SourceError when unusable."""
    info = _read_info(root)
    version = info.get("codebase_version")
    if version not in SUPPORTED_VERSIONS:
        raise SourceError(
            f"{root / INFO_PATH}: codebase_version {version!r} is not supported; vlaforge reads "
            f"{' and '.join(SUPPORTED_VERSIONS)}. Fix: {_CONVERT}."
        )
    _check_info(root, info)
    video_keys = [key for key, feature in info["features"].items() if feature.get("dtype") == VIDEO]
    if version == "v3.0":
        tasks, episodes = _v30_tasks(root), list(_v30_episodes(root, info, video_keys))
    else:
        tasks, episodes = _v21_tasks(root), list(_v21_episodes(root, info, video_keys))
    episodes.sort(key=lambda episode: episode.index)
    logger.info("%s: LeRobot %s, %d episodes, %d tasks, %s fps", root, version, len(episodes), len(tasks),
                info["fps"])
    return LeRobotMetadata(root=root, version=version, fps=float(info["fps"]), robot_type=info.get("robot_type"),
                           features=info["features"], tasks=tasks, episodes=tuple(episodes))


# info.json ----------------------------------------------------------------------------------------------------


def _read_info(root: pathlib.Path) -> dict[str, Any]:
    path = root / INFO_PATH
    if not path.is_file():
        nested = sorted(str(p.parent.parent) for p in root.glob("*/**/meta/info.json"))[:5]
        hint = f" It holds LeRobot datasets below it: {nested}; point root at one of them." if nested else (
            " Fix: point root at a LeRobot dataset directory (the one holding meta/ and data/).")
        raise SourceError(f"{root}: no {INFO_PATH}, so this is not a LeRobot dataset directory.{hint}")
    try:
        info = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise SourceError(f"{path}: cannot be read as JSON ({error}). Fix: re-download meta/info.json") from error
    if not isinstance(info, dict):
        raise SourceError(f"{path}: holds a {type(info).__name__}, not a JSON object. Fix: re-download it")
    return info


def _check_info(root: pathlib.Path, info: dict[str, Any]) -> None:
    path = root / INFO_PATH
    missing = [key for key in ("fps", "features", "data_path") if not info.get(key)]
    if missing:
        raise SourceError(f"{path}: lacks {missing}, which every {info['codebase_version']} info.json has. "
                          f"Fix: re-download meta/info.json")
    if not isinstance(info["features"], dict) or not all(isinstance(f, dict) for f in info["features"].values()):
        raise SourceError(f"{path}: `features` must map names to {{dtype, shape, names}}. Fix: re-download it")
    has_video = any(feature.get("dtype") == VIDEO for feature in info["features"].values())
    if has_video and not info.get("video_path"):
        raise SourceError(f"{path}: has video features but no video_path template. Fix: re-download it")


def _format(root: pathlib.Path, template: str, **values: Any) -> str:
    try:
        return template.format(**values)
    except (KeyError, IndexError, ValueError) as error:
        raise SourceError(
            f"{root / INFO_PATH}: path template {template!r} does not fit this codebase version (fields given: "
            f"{sorted(values)}; {error!r}). Fix: re-download meta/info.json, or convert the dataset"
        ) from error


# v3.0 ---------------------------------------------------------------------------------------------------------


def _v30_tasks(root: pathlib.Path) -> dict[int, str]:
    path = root / V30_TASKS_PATH
    table = _read_parquet(path, what="the tasks table")
    text = _task_column(table)
    if "task_index" not in table.column_names or text is None:
        raise SourceError(f"{path}: needs a task_index column and the task strings (as the index or a `task` "
                          f"column); it has {table.column_names}. Fix: re-download meta/tasks.parquet")
    return dict(zip(table["task_index"].to_pylist(), table[text].to_pylist()))


def _task_column(table: pa.Table) -> str | None:
    """The column holding task strings: `task`, else the stored pandas index, else the only string column."""
    if "task" in table.column_names:
        return "task"
    index_columns = (table.schema.pandas_metadata or {}).get("index_columns", [])
    strings = [f.name for f in table.schema if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
    named = [name for name in index_columns if isinstance(name, str) and name in strings]
    return (named or strings or [None])[0]


def _v30_episodes(root: pathlib.Path, info: dict[str, Any], video_keys: list[str]) -> Iterator[EpisodeInfo]:
    files = sorted(root.glob(V30_EPISODES_GLOB))
    if not files:
        raise SourceError(f"{root}: no episode metadata ({V30_EPISODES_GLOB}). Fix: download the meta/ folder")
    for path in files:
        table = _read_parquet(path, what="episode metadata", columns=_v30_columns(path, video_keys))
        for row in table.to_pylist():
            yield _v30_episode(root, info, video_keys, row)


def _v30_columns(path: pathlib.Path, video_keys: list[str]) -> list[str]:
    required = ["episode_index", "length", "data/chunk_index", "data/file_index"]
    required += [f"videos/{key}/{part}" for key in video_keys for part in ("chunk_index", "file_index",
                                                                           "from_timestamp")]
    optional = ["tasks"] + [f"videos/{key}/to_timestamp" for key in video_keys]
    try:
        present = set(pq.read_schema(path).names)
    except (OSError, pa.ArrowException) as error:
        raise SourceError(f"{path}: unreadable episode metadata ({error}). Fix: re-download meta/episodes") from error
    missing = [name for name in required if name not in present]
    if missing:
        raise SourceError(f"{path}: lacks the columns {missing}. Fix: re-download meta/episodes, or re-run "
                          f"LeRobot's v3.0 conversion")
    return required + [name for name in optional if name in present]


def _v30_episode(root: pathlib.Path, info: dict[str, Any], video_keys: list[str], row: dict) -> EpisodeInfo:
    data_file = _format(root, info["data_path"], chunk_index=row["data/chunk_index"],
                        file_index=row["data/file_index"])
    videos = {}
    for key in video_keys:
        prefix = f"videos/{key}/"
        file = _format(root, info["video_path"], video_key=key, chunk_index=row[prefix + "chunk_index"],
                       file_index=row[prefix + "file_index"])
        videos[key] = VideoSpan(file, float(row[prefix + "from_timestamp"]), row.get(prefix + "to_timestamp"))
    return EpisodeInfo(int(row["episode_index"]), int(row["length"]), tuple(row.get("tasks") or ()), data_file,
                       videos)


# v2.1 ---------------------------------------------------------------------------------------------------------


def _v21_tasks(root: pathlib.Path) -> dict[int, str]:
    rows = _read_jsonl(root / V21_TASKS_PATH, ("task_index", "task"))
    return {int(row["task_index"]): str(row["task"]) for row in rows}


def _v21_episodes(root: pathlib.Path, info: dict[str, Any], video_keys: list[str]) -> Iterator[EpisodeInfo]:
    chunks_size = int(info.get("chunks_size") or 1000)
    for row in _read_jsonl(root / V21_EPISODES_PATH, ("episode_index", "length")):
        index = int(row["episode_index"])
        chunk = index // chunks_size
        data_file = _format(root, info["data_path"], episode_chunk=chunk, episode_index=index)
        videos = {key: VideoSpan(_format(root, info["video_path"], episode_chunk=chunk, video_key=key,
                                         episode_index=index), 0.0) for key in video_keys}
        yield EpisodeInfo(index, int(row["length"]), tuple(row.get("tasks") or ()), data_file, videos)


# Files --------------------------------------------------------------------------------------------------------


def _read_parquet(path: pathlib.Path, *, what: str, columns: list[str] | None = None) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns)
    except FileNotFoundError as error:
        raise SourceError(f"{path}: missing ({what}). Fix: download the dataset's meta/ folder") from error
    except (OSError, pa.ArrowException) as error:
        raise SourceError(f"{path}: unreadable {what} ({error}). Fix: re-download it") from error


def _read_jsonl(path: pathlib.Path, required: tuple[str, ...]) -> list[dict]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError as error:
        raise SourceError(f"{path}: missing. Fix: download the dataset's meta/ folder") from error
    except (OSError, UnicodeDecodeError) as error:
        raise SourceError(f"{path}: unreadable ({error}). Fix: re-download it") from error
    rows = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise SourceError(f"{path}: line {number} is not JSON ({error}). Fix: re-download it") from error
        if not isinstance(row, dict) or any(key not in row for key in required):
            raise SourceError(f"{path}: line {number} lacks {list(required)}. Fix: re-download it")
        rows.append(row)
    return rows


def _is_depth(feature: Mapping[str, Any]) -> bool:
    info = {**(feature.get("video_info") or {}), **(feature.get("info") or {})}
    return bool(info.get("is_depth_map") or info.get("video.is_depth_map"))


def _flatten_names(names: Any) -> Iterator[str]:
    if isinstance(names, str):
        yield names
    elif isinstance(names, Mapping):
        for value in names.values():
            yield from _flatten_names(value)
    elif isinstance(names, (list, tuple)):
        for value in names:
            yield from _flatten_names(value)
