"""`vlaforge export lerobot`: a robot dataset of ours as a LeRobot v3.0 dataset (the layout in FORMATS.md), which
LeRobot's `LeRobotDataset` loads, so curated data can go to LeRobot, openpi or StarVLA users.

One `Job` (`job.py`): the stored episodes of the dataset (`shards/stored_episodes.py`), `LeRobotRows` (each episode's
state, the action of each step (the first row of its stored chunk), its task and its frames), and
`LeRobotDatasetSink`. Each work unit writes its own files, as LeRobot v3.0 spreads a dataset over numbered files:
`data/chunk-CCC/file-FFF.parquet` and, per camera, `videos/observation.images.<camera>/chunk-CCC/file-FFF.mp4`
(the unit's episodes one after another, each found by its from/to timestamps), file FFF = the unit's index. The
frames are decoded from their JPEGs and encoded as H.264 (or AV1), yuv420p, a keyframe every 2 frames as LeRobot
encodes for random access. Episode, frame and task indices are global, so they are written at finalize, from each
unit's rows (`_lerobot/<unit>.parquet`), with `meta/info.json`, `meta/tasks.parquet` (the task string as index),
`meta/episodes/chunk-000/file-000.parquet` (locations, lengths, per-episode statistics) and `meta/stats.json`.

Episodes are exported in the dataset's order, train before validation (shard URLs sort so), and `info.json`'s
`splits` gives the two ranges. An episode's task is its instruction. The extras (e.g. `qvel`,
`cartesian_position`) become `observation.<name>` features. The job's own records (`_units/`, `_lock/`,
`_lerobot/`, `options.json`, `summary.json`) stay beside LeRobot's files, so an interrupted export resumes.
"""

from __future__ import annotations

import dataclasses
import io
import json
import pathlib
from typing import Any

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import simplejpeg

from vlaforge.datasets.drops import Drop
from vlaforge.datasets.schema import MetaField, SampleKey, safe_key_part
from vlaforge.datasets.source import Source, WorkUnit
from vlaforge.pipelines.atomic_files import atomic_write_bytes, atomic_write_table, temporary_path
from vlaforge.pipelines.job import SUMMARY_NAME, DatasetSink, DatasetSinkConfig, Job, Runner, UnitSummary, UnitWritten
from vlaforge.pipelines.output_lock import CommitGuard
from vlaforge.pipelines.shards.manifest import records_of_split
from vlaforge.pipelines.shards.stored_episodes import StoredEpisode, StoredEpisodeSource
from vlaforge.pipelines.stage import Stage, StageConfig

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000
DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
EPISODES_PATH = "meta/episodes/chunk-000/file-000.parquet"
STATE, ACTION, IMAGES = "observation.state", "action", "observation.images."
UNITS_DIR = "_lerobot"
ENCODERS = {"h264": ("libx264", {"crf": "20", "g": "2", "preset": "veryfast"}),
            "av1": ("libsvtav1", {"crf": "30", "g": "2", "preset": "8"})}
"""`--codec` -> PyAV encoder and options (LeRobot encodes with g=2, so any frame decodes from at most one other)."""
STAT_NAMES = ("min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99")
_IMAGE_STRIDE = 8
"""Image statistics read every 8th frame, at 1/8 scale (they normalize pixels; a sample is enough)."""
_INDEX_COLUMNS = ("timestamp", "frame_index", "episode_index", "index", "task_index")


@dataclasses.dataclass
class LeRobotEpisode:
    """One episode as LeRobot stores it, frames still JPEG."""

    episode_id: str
    task: str
    split: str
    fps: float
    embodiment: str
    state: np.ndarray
    """[n, Ds] float32."""
    action: np.ndarray
    """[n, Da] float32: each step's own action."""
    names: dict[str, list[str]]
    """Feature -> dimension names."""
    extras: dict[str, np.ndarray]
    """`observation.<name>` -> [n, d] float32."""
    frames: dict[str, list[bytes]]
    """Camera -> one JPEG per step."""

    def __len__(self) -> int:
        return int(self.state.shape[0])


class LeRobotRows(Stage):
    """Stored episodes -> `LeRobotEpisode`s."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(StageConfig):
        pass

    def __call__(self, batch: list[StoredEpisode]) -> list[LeRobotEpisode]:
        return [self.episode(episode) for episode in batch]

    @staticmethod
    def episode(stored: StoredEpisode) -> LeRobotEpisode:
        meta = stored.meta
        steps = stored.steps
        arrays = {name: np.stack([_npy(step[name]) for step in steps]) for name in steps[0] if name.endswith(".npy")}
        extras = {f"observation.{name[:-4]}": values.astype(np.float32).reshape(len(steps), -1)
                  for name, values in arrays.items() if name not in (SampleKey.STATE.value, SampleKey.ACTION.value)}
        return LeRobotEpisode(
            episode_id=stored.episode_id, task=stored.instruction, split=stored.split,
            fps=float(meta[MetaField.CONTROL_RATE_HZ.value]), embodiment=stored.embodiment,
            state=arrays[SampleKey.STATE.value].astype(np.float32),
            action=arrays[SampleKey.ACTION.value][:, 0].astype(np.float32),
            names={STATE: list(meta[MetaField.STATE_NAMES.value]), ACTION: list(meta[MetaField.ACTION_NAMES.value])},
            extras=extras, frames={camera: [step[f"{camera}.jpg"] for step in steps] for camera in stored.cameras})


def _npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


class _Video:
    """One camera's mp4 of one unit, written under a temporary name, frame after frame."""

    def __init__(self, path: pathlib.Path, codec: str, fps: float, shape: tuple[int, int]) -> None:
        self.path, self.shape, self.frames = path, shape, 0
        self.temporary = temporary_path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        encoder, options = ENCODERS[codec]
        self.container = av.open(str(self.temporary), "w", format="mp4")
        self.stream = self.container.add_stream(encoder, rate=round(fps))
        self.stream.height, self.stream.width = shape
        self.stream.pix_fmt = "yuv420p"
        self.stream.options = dict(options)

    def add(self, jpeg: bytes, where: str) -> np.ndarray:
        pixels = simplejpeg.decode_jpeg(jpeg, colorspace="RGB")
        if pixels.shape[:2] != self.shape:
            raise ValueError(f"{where}: a {pixels.shape[1]}x{pixels.shape[0]} frame in a video of "
                             f"{self.shape[1]}x{self.shape[0]}; one camera's frames must share a size (ingest with "
                             "--frame-size HxW)")
        frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
        frame.pts = self.frames
        self.container.mux(self.stream.encode(frame))
        self.frames += 1
        return pixels

    def finish(self) -> None:
        self.container.mux(self.stream.encode())
        self.container.close()

    def abort(self) -> None:
        try:
            self.container.close()
        finally:
            self.temporary.unlink(missing_ok=True)


class LeRobotUnitWriter:
    """One unit's episodes into its data rows (finished at finalize) and its per-camera mp4 files."""

    def __init__(self, output: pathlib.Path, unit: int, codec: str, guard: CommitGuard) -> None:
        self.output, self.unit, self.codec, self.guard = output, unit, codec, guard
        self.videos: dict[str, _Video] = {}
        self.rows: list[dict[str, Any]] = []
        self.episodes: list[dict[str, Any]] = []
        self.pixels: dict[str, list[np.ndarray]] = {}
        self.splits: dict[str, int] = {}

    def add(self, episode: LeRobotEpisode) -> None:
        record: dict[str, Any] = {"episode_id": episode.episode_id, "task": episode.task, "length": len(episode),
                                  "split": episode.split, "fps": episode.fps, "embodiment": episode.embodiment,
                                  "names": episode.names, "videos": {}, "shapes": {}}
        for camera, jpegs in episode.frames.items():
            video = self.videos.get(camera) or self._open(camera, jpegs[0], episode.fps)
            start = video.frames
            for step, jpeg in enumerate(jpegs):
                pixels = video.add(jpeg, f"episode {episode.episode_id}, camera {camera}, step {step}")
                if step % _IMAGE_STRIDE == 0:
                    self.pixels.setdefault(camera, []).append(pixels[::8, ::8].reshape(-1, 3))
            record["videos"][camera] = [start / episode.fps, video.frames / episode.fps]
            record["shapes"][camera] = list(video.shape)
        self.episodes.append(record)
        for step in range(len(episode)):
            row = {"episode": len(self.episodes) - 1, "frame_index": step, STATE: episode.state[step].tolist(),
                   ACTION: episode.action[step].tolist()}
            row.update({name: values[step].tolist() for name, values in episode.extras.items()})
            self.rows.append(row)
        self.splits[episode.split] = self.splits.get(episode.split, 0) + len(episode)

    def _open(self, camera: str, first: bytes, fps: float) -> _Video:
        height, width = simplejpeg.decode_jpeg_header(first)[:2]
        path = self.output / file_path(VIDEO_PATH, self.unit, video_key=IMAGES + camera)
        self.videos[camera] = video = _Video(path, self.codec, fps, (height, width))
        return video

    def close(self) -> UnitWritten:
        for video in self.videos.values():
            video.finish()
        pixels = {camera: np.concatenate(parts).tolist() for camera, parts in self.pixels.items()}
        with self.guard.held():
            for video in self.videos.values():
                video.temporary.replace(video.path)
            if self.rows:
                atomic_write_table(self.output / UNITS_DIR / f"{self.unit:05d}.parquet",
                                   pa.Table.from_pylist(self.rows))
            atomic_write_bytes(self.output / UNITS_DIR / f"{self.unit:05d}.json",
                               json.dumps({"episodes": self.episodes, "pixels": pixels}).encode())
        return UnitWritten(samples_by_split=dict(self.splits), episodes=len(self.episodes),
                           shards_written=len(self.videos), shards_skipped=0)

    def abort(self) -> None:
        for video in self.videos.values():
            video.abort()


class LeRobotDatasetSink(DatasetSink):
    """Episodes into a LeRobot v3.0 dataset (see the module docstring)."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(DatasetSinkConfig):
        codec: str = "h264"
        """The videos' codec: "h264" (libx264) or "av1" (libsvtav1, LeRobot's default)."""

        def __post_init__(self) -> None:
            if self.codec not in ENCODERS:
                raise ValueError(f"LeRobotDatasetSink.Config.codec must be one of {sorted(ENCODERS)}, got "
                                 f"{self.codec!r}")

    config: Config

    def dataset_name(self, source: Source) -> str:
        return source.dataset_name

    def open_unit(self, output: pathlib.Path, dataset: str, unit: WorkUnit, guard: CommitGuard) -> LeRobotUnitWriter:
        return LeRobotUnitWriter(output, unit.index, self.config.codec, guard)

    def finalize(self, job: Job, summaries: list[UnitSummary], drops: list[Drop],
                 tables: dict[str, pa.Table], runner: Runner, units_resumed: int) -> dict[str, Any]:
        output = pathlib.Path(job.output)
        units = [(s.unit, json.loads((output / UNITS_DIR / f"{s.unit:05d}.json").read_text())) for s in summaries]
        episodes = [(unit, episode) for unit, record in units for episode in record["episodes"]]
        if not episodes:
            raise ValueError(f"{job.source.root}: no episode to export")
        fps, embodiment, names, cameras, shapes = _uniform(episodes)
        tasks = list(dict.fromkeys(episode["task"] for _, episode in episodes))
        numeric, rows_per_episode = _write_data(output, summaries, episodes, tasks, fps)
        rows = _episode_rows(episodes, rows_per_episode, tasks, cameras)
        atomic_write_table(output / EPISODES_PATH, pa.Table.from_pylist(rows))
        _write_tasks(output, tasks)
        pixels = {camera: np.asarray([p for _, record in units for p in record["pixels"].get(camera, [])])
                  for camera in cameras}
        stats = {**{name: _stats(values) for name, values in numeric.items()},
                 **{IMAGES + camera: _image_stats(values / 255.0) for camera, values in pixels.items()}}
        _write_json(output / "meta/stats.json", stats)
        train = sum(episode["split"] == "train" for _, episode in episodes)
        info = _info(len(episodes), sum(e["length"] for _, e in episodes), len(tasks), fps, embodiment, names,
                     cameras, shapes, numeric, self.config.codec, train)
        _write_json(output / "meta/info.json", info)
        summary = {"kind": "lerobot", "codebase_version": CODEBASE_VERSION, "dataset": job.source.root,
                   "output": job.output, "episodes": len(episodes), "frames": info["total_frames"],
                   "tasks": len(tasks), "cameras": cameras, "fps": fps, "units": len(summaries),
                   "units_resumed": units_resumed, "splits": info["splits"]}
        atomic_write_bytes(output / SUMMARY_NAME, json.dumps(summary, indent=1, sort_keys=True).encode())
        return summary


def file_path(template: str, unit: int, **values: str) -> str:
    """A unit's file under LeRobot's chunk/file numbering (`chunks_size` files per chunk directory)."""
    return template.format(chunk_index=unit // CHUNKS_SIZE, file_index=unit % CHUNKS_SIZE, **values)


def _uniform(episodes: list[tuple[int, dict[str, Any]]]) -> tuple[int, str, dict, list[str], dict]:
    """The rate, embodiment, dimension names, cameras and frame shapes every episode must share in one dataset."""
    first = episodes[0][1]
    for _, episode in episodes:
        for field in ("fps", "embodiment", "names"):
            if episode[field] != first[field]:
                raise ValueError(f"episode {episode['episode_id']} has {field} {episode[field]!r}, episode "
                                 f"{first['episode_id']} {first[field]!r}: a LeRobot dataset holds one robot at one "
                                 "rate. Fix: export a dataset of one embodiment (`vlaforge dataset filter "
                                 "--embodiment ...`)")
        if episode["shapes"] != first["shapes"]:
            raise ValueError(f"episode {episode['episode_id']} has cameras {episode['shapes']}, episode "
                             f"{first['episode_id']} {first['shapes']}: a LeRobot dataset's cameras have one size. "
                             "Fix: ingest with --frame-size HxW")
    fps = first["fps"]
    if fps != round(fps):
        raise ValueError(f"the control rate is {fps} Hz; LeRobot's fps is an integer")
    return int(round(fps)), first["embodiment"], first["names"], sorted(first["shapes"]), first["shapes"]


def _write_data(output: pathlib.Path, summaries: list[UnitSummary], episodes: list[tuple[int, dict]],
                tasks: list[str], fps: int) -> tuple[dict[str, np.ndarray], list[tuple[int, int]]]:
    """Each unit's data file with global indices; returns every numeric column (for the statistics) and each
    episode's [from, to) rows."""
    numeric: dict[str, list[np.ndarray]] = {}
    spans, start, episode_index = [], 0, 0
    by_unit: dict[int, list[dict]] = {}
    for unit, episode in episodes:
        by_unit.setdefault(unit, []).append(episode)
    for summary in summaries:
        path = output / UNITS_DIR / f"{summary.unit:05d}.parquet"
        if not path.exists():
            continue
        rows = pq.read_table(path)
        local = rows.column("episode").to_numpy()
        unit_episodes = by_unit[summary.unit]
        columns = {name: _vectors(rows.column(name)) for name in rows.column_names
                   if name not in ("episode", "frame_index")}
        frame_index = rows.column("frame_index").to_numpy().astype(np.int64)
        episode_of = episode_index + local
        task_of = np.array([tasks.index(e["task"]) for e in unit_episodes], np.int64)[local]
        index = start + np.arange(len(local), dtype=np.int64)
        columns.update({"timestamp": pa.array((frame_index / fps).astype(np.float32)),
                        "frame_index": pa.array(frame_index), "episode_index": pa.array(episode_of),
                        "index": pa.array(index), "task_index": pa.array(task_of)})
        atomic_write_table(output / file_path(DATA_PATH, summary.unit), pa.table(columns))
        for name, column in columns.items():
            values = column.flatten().to_numpy() if isinstance(column, pa.FixedSizeListArray) else column.to_numpy()
            numeric.setdefault(name, []).append(np.asarray(values, np.float64).reshape(len(local), -1))
        for e in range(len(unit_episodes)):
            rows_of = np.flatnonzero(local == e)
            spans.append((start + int(rows_of[0]), start + int(rows_of[-1]) + 1))
        start += len(local)
        episode_index += len(unit_episodes)
    return {name: np.concatenate(parts) for name, parts in numeric.items()}, spans


def _vectors(column: pa.ChunkedArray) -> pa.FixedSizeListArray:
    """A list column as a fixed-size list of float32 (what LeRobot's `Sequence(length=D)` features are)."""
    values = np.asarray(column.to_pylist(), np.float32)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), values.shape[1])


def _episode_rows(episodes: list[tuple[int, dict]], spans: list[tuple[int, int]], tasks: list[str],
                  cameras: list[str]) -> list[dict[str, Any]]:
    rows = []
    for index, ((unit, episode), (start, stop)) in enumerate(zip(episodes, spans, strict=True)):
        chunk, file = unit // CHUNKS_SIZE, unit % CHUNKS_SIZE
        row: dict[str, Any] = {"episode_index": index, "tasks": [episode["task"]], "length": episode["length"],
                               "data/chunk_index": chunk, "data/file_index": file,
                               "dataset_from_index": start, "dataset_to_index": stop}
        for camera in cameras:
            key = IMAGES + camera
            begin, end = episode["videos"][camera]
            row.update({f"videos/{key}/chunk_index": chunk, f"videos/{key}/file_index": file,
                        f"videos/{key}/from_timestamp": begin, f"videos/{key}/to_timestamp": end})
        row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0, "vlaforge/episode_id":
                    episode["episode_id"], "vlaforge/split": episode["split"]})
        rows.append(row)
    return rows


def _write_tasks(output: pathlib.Path, tasks: list[str]) -> None:
    import pandas as pd  # LeRobot writes this table from pandas: the task string is the index

    frame = pd.DataFrame({"task_index": range(len(tasks))}, index=pd.Index(tasks, name="task"))
    buffer = io.BytesIO()
    frame.to_parquet(buffer)
    atomic_write_bytes(output / "meta/tasks.parquet", buffer.getvalue())


def _stats(values: np.ndarray) -> dict[str, list]:
    """Per-dimension statistics of [n, D] values, as LeRobot's stats.json holds them (count as [n])."""
    quantiles = {f"q{q:02d}": np.quantile(values, q / 100, axis=0).tolist() for q in (1, 10, 50, 90, 99)}
    return {"min": values.min(axis=0).tolist(), "max": values.max(axis=0).tolist(),
            "mean": values.mean(axis=0).tolist(), "std": values.std(axis=0).tolist(), "count": [len(values)],
            **quantiles}


def _image_stats(pixels: np.ndarray) -> dict[str, list]:
    """Per-channel statistics of [n, 3] pixels in [0, 1], shaped (3, 1, 1) as LeRobot keeps image statistics."""
    stats = _stats(pixels)
    return {name: value if name == "count" else np.asarray(value).reshape(3, 1, 1).tolist()
            for name, value in stats.items()}


def _info(episodes: int, frames: int, tasks: int, fps: int, embodiment: str, names: dict, cameras: list[str],
          shapes: dict, numeric: dict[str, np.ndarray], codec: str, train: int) -> dict[str, Any]:
    features: dict[str, Any] = {
        STATE: {"dtype": "float32", "shape": [len(names[STATE])], "names": names[STATE]},
        ACTION: {"dtype": "float32", "shape": [len(names[ACTION])], "names": names[ACTION]},
    }
    for name, values in numeric.items():
        if name.startswith("observation.") and name != STATE:
            features[name] = {"dtype": "float32", "shape": [values.shape[1]], "names": None}
    for camera in cameras:
        height, width = shapes[camera]
        features[IMAGES + camera] = {
            "dtype": "video", "shape": [height, width, 3], "names": ["height", "width", "channels"],
            "info": {"video.height": height, "video.width": width, "video.codec": codec, "video.pix_fmt": "yuv420p",
                     "video.is_depth_map": False, "video.fps": fps, "video.channels": 3, "has_audio": False}}
    features["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
    for key in _INDEX_COLUMNS[1:]:
        features[key] = {"dtype": "int64", "shape": [1], "names": None}
    splits = {"train": f"0:{train}"} | ({"validation": f"{train}:{episodes}"} if train < episodes else {})
    return {"codebase_version": CODEBASE_VERSION, "robot_type": embodiment, "total_episodes": episodes,
            "total_frames": frames, "total_tasks": tasks, "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": 100,
            "video_files_size_in_mb": 500, "fps": fps, "splits": splits, "data_path": DATA_PATH,
            "video_path": VIDEO_PATH if cameras else None, "features": features}


def _write_json(path: pathlib.Path, document: dict) -> None:
    atomic_write_bytes(path, (json.dumps(document, indent=4) + "\n").encode())


def export_job(source: str, output: str, *, codec: str = "h264", shards_per_unit: int = 4) -> Job:
    """The export of the robot dataset `source` to the LeRobot v3.0 dataset `output`."""
    records_of_split(pathlib.Path(source), None)  # a SourceError says when it is no dataset of ours
    name = safe_key_part(pathlib.Path(source).resolve().name)
    return Job(source=StoredEpisodeSource.Config(root=str(pathlib.Path(source).resolve()), dataset_name=name,
                                                 shards_per_unit=shards_per_unit),
               stages=(LeRobotRows.Config(),), sink=LeRobotDatasetSink.Config(codec=codec), output=output)

