"""A small LeRobot dataset, written the way LeRobot writes v3.0 and v2.1 (see FORMATS.md, "LeRobot datasets").

MolmoAct-like by default: a single-arm Franka (7 joints + gripper: 8-D `observation.state` and 8-D `action`, both
with dimension names), three cameras (`first_view`, `second_view`, `wrist_image`) and kitchen tasks.

v3.0 writes `meta/info.json`, `meta/tasks.parquet` (task string as the index, a `task_index` column),
`meta/episodes/chunk-000/file-000.parquet` (one row per episode with data and video locations and stats),
`meta/stats.json`, every episode in `data/chunk-000/file-000.parquet`, and per camera one mp4 concatenating the
episodes, `videos/<key>/chunk-000/file-000.mp4`, each episode found by its from/to timestamps.
v2.1 writes `meta/info.json` (with `total_chunks`, `total_videos`), `meta/episodes.jsonl`, `meta/tasks.jsonl`,
`meta/episodes_stats.jsonl`, one parquet per episode and one mp4 per camera per episode.

`make_lerobot_episode` rebuilds any written episode (values and raw frames), so tests compare what a reader gives
back with what was written; `write_mp4` lets a test replace a video with a damaged one.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import pathlib
from collections.abc import Sequence

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import simplejpeg
from PIL import Image

from vlaforge.datasets.synth.scenes import camera_frames

STATE_KEY = "observation.state"
ACTION_KEY = "action"
IMAGE_PREFIX = "observation.images."
JOINT_NAMES = [f"joint_{i}" for i in range(1, 8)] + ["gripper"]
TASKS = (
    "put the bowl in the sink",
    "pick up the red cup and place it on the plate",
    "open the top drawer",
    "wipe the counter with the sponge",
    "put the apple in the basket",
    "close the microwave door",
)
CHUNKS_SIZE = 1000
V30_DATA_PATH = "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
V30_VIDEO_PATH = "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
V21_DATA_PATH = "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet"
V21_VIDEO_PATH = "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"
_ENCODERS = {"h264": "libx264", "av1": "libsvtav1"}
_HOME = np.array([0.0, -0.6, 0.0, -2.3, 0.0, 1.7, 0.8])
_V30_STATS = ("min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99")
_V21_STATS = ("min", "max", "mean", "std", "count")


@dataclasses.dataclass
class SynthLeRobotEpisode:
    """One written episode: what a reader should give back."""

    index: int
    task: str
    task_index: int
    state: np.ndarray
    """[n, 8] float32."""
    action: np.ndarray
    """[n, 8] float32: the next step's joint and gripper targets."""
    frames: dict[str, np.ndarray]
    """LeRobot camera name (e.g. "first_view") -> [n, H, W, 3] uint8, the frames before encoding."""

    def __len__(self) -> int:
        return int(self.state.shape[0])


def episode_lengths(n_episodes: int, min_steps: int, max_steps: int, seed: int) -> list[int]:
    """The step count of each episode the writer writes for `seed`."""
    rng = np.random.default_rng([seed, 7919])
    return [int(n) for n in rng.integers(min_steps, max_steps + 1, size=n_episodes)]


def make_lerobot_episode(index: int, n_steps: int, *, seed: int = 0, fps: int = 15,
                         cameras: Sequence[str] = ("first_view", "second_view", "wrist_image"),
                         image_size: tuple[int, int] = (180, 320)) -> SynthLeRobotEpisode:
    """Episode `index` as the writer writes it: smooth joint motion, a gripper that closes then opens, and per
    camera a slow pan over a photo (camera c of episode k pans over photo k + c)."""
    rng = np.random.default_rng([seed, index])
    t = np.arange(n_steps)[:, None] / fps
    amplitude, frequency, phase = rng.uniform(0.05, 0.3, 7), rng.uniform(0.05, 0.3, 7), rng.uniform(0, 2 * np.pi, 7)
    joints = _HOME + amplitude * np.sin(2 * np.pi * frequency * t + phase)
    closed = (t[:, 0] > 0.3 * t[-1, 0]) & (t[:, 0] < 0.8 * t[-1, 0])
    gripper = np.where(closed, 0.0, 0.04)[:, None]
    state = np.concatenate([joints, gripper], axis=1).astype(np.float32)
    action = np.concatenate([state[1:], state[-1:]]).astype(np.float32)
    frames = {camera: camera_frames(index + c, n_steps, *image_size) for c, camera in enumerate(cameras)}
    task_index = index % len(TASKS)
    return SynthLeRobotEpisode(index, TASKS[task_index], task_index, state, action, frames)


def write_lerobot_dataset(
    root: str | pathlib.Path,
    *,
    version: str = "v3.0",
    n_episodes: int = 4,
    min_steps: int = 30,
    max_steps: int = 60,
    fps: int = 15,
    cameras: Sequence[str] = ("first_view", "second_view", "wrist_image"),
    image_size: tuple[int, int] = (180, 320),
    codec: str = "h264",
    robot_type: str = "franka",
    images_in_parquet: bool = False,
    image_format: str = "png",
    camera_prefix: str = IMAGE_PREFIX,
    seed: int = 0,
) -> pathlib.Path:
    """Write a LeRobot `version` ("v3.0" or "v2.1") dataset into `root` and return `root`.

    Cameras become `<camera_prefix><camera>` features (`observation.images.first_view`; MolmoAct's parquet is
    reported to use bare names, camera_prefix=""): videos encoded with `codec` ("h264" or "av1"), or, with
    `images_in_parquet`, images stored in the data parquet as HF datasets' Image struct {bytes, path}
    (`image_format` "png", as LeRobot writes them, or "jpeg"). Deterministic for a seed.
    """
    if version not in ("v3.0", "v2.1"):
        raise ValueError(f"version must be 'v3.0' or 'v2.1', got {version!r}")
    if codec not in _ENCODERS:
        raise ValueError(f"codec must be one of {sorted(_ENCODERS)}, got {codec!r}")
    root = pathlib.Path(root)
    lengths = episode_lengths(n_episodes, min_steps, max_steps, seed)
    episodes = [make_lerobot_episode(i, n, seed=seed, fps=fps, cameras=cameras, image_size=image_size)
                for i, n in enumerate(lengths)]
    layout = _Layout(root, version, fps, cameras, image_size, codec, robot_type, images_in_parquet, image_format,
                     camera_prefix)
    layout.write(episodes)
    return root


def write_mp4(path: str | pathlib.Path, frames: np.ndarray, *, fps: int, codec: str = "h264",
              start_frame: int = 0) -> None:
    """Encode [n, H, W, 3] uint8 frames as an mp4 (yuv420p), frame i at (start_frame + i) / fps seconds."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream(_ENCODERS[codec], rate=fps)
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = _encoder_options(codec, fps)
        for i, pixels in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels), format="rgb24")
            frame.pts = start_frame + i
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


def _encoder_options(codec: str, fps: int) -> dict[str, str]:
    # A keyframe every 2 s keeps seeking cheap, as LeRobot's small GOPs do; quality is high enough that frames
    # survive H.264 + JPEG within a few grey levels.
    if codec == "av1":
        return {"crf": "30", "preset": "10", "g": str(2 * fps)}
    return {"crf": "20", "preset": "veryfast", "g": str(2 * fps)}


@dataclasses.dataclass
class _Layout:
    root: pathlib.Path
    version: str
    fps: int
    cameras: Sequence[str]
    image_size: tuple[int, int]
    codec: str
    robot_type: str
    images_in_parquet: bool
    image_format: str
    camera_prefix: str

    @property
    def camera_keys(self) -> list[str]:
        return [self.camera_prefix + camera for camera in self.cameras]

    @property
    def video_keys(self) -> list[str]:
        return [] if self.images_in_parquet else self.camera_keys

    def write(self, episodes: list[SynthLeRobotEpisode]) -> None:
        starts = np.cumsum([0] + [len(e) for e in episodes])
        if self.version == "v3.0":
            self._write_v30(episodes, starts)
        else:
            self._write_v21(episodes, starts)

    # v3.0 -----------------------------------------------------------------------------------------------------

    def _write_v30(self, episodes: list[SynthLeRobotEpisode], starts: np.ndarray) -> None:
        data_path = V30_DATA_PATH.format(chunk_index=0, file_index=0)
        _write_parquet(self.root / data_path, self._data_table(episodes, starts))
        rows = [self._v30_episode_row(e, int(starts[i]), int(starts[i + 1])) for i, e in enumerate(episodes)]
        for key, camera in zip(self.video_keys, self.cameras):
            frames = np.concatenate([e.frames[camera] for e in episodes])
            write_mp4(self.root / V30_VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0), frames,
                      fps=self.fps, codec=self.codec)
        _write_parquet(self.root / "meta/episodes/chunk-000/file-000.parquet", pa.Table.from_pylist(rows))
        self._write_v30_tasks(_used_tasks(episodes))
        _write_json(self.root / "meta/stats.json", self._stats(episodes, _V30_STATS))
        info = self._info(episodes, data_path=V30_DATA_PATH, video_path=V30_VIDEO_PATH)
        info.update(data_files_size_in_mb=100, video_files_size_in_mb=500)
        _write_json(self.root / "meta/info.json", _ordered_info(info))

    def _v30_episode_row(self, episode: SynthLeRobotEpisode, start: int, stop: int) -> dict:
        row: dict = {"episode_index": episode.index, "tasks": [episode.task], "length": len(episode),
                     "data/chunk_index": 0, "data/file_index": 0,
                     "dataset_from_index": start, "dataset_to_index": stop}
        for key in self.video_keys:  # every camera's file concatenates the episodes in the same order
            row.update({f"videos/{key}/chunk_index": 0, f"videos/{key}/file_index": 0,
                        f"videos/{key}/from_timestamp": start / self.fps,
                        f"videos/{key}/to_timestamp": stop / self.fps})
        for feature, stats in self._stats([episode], _V30_STATS, global_start=start).items():
            row.update({f"stats/{feature}/{name}": value for name, value in stats.items()})
        row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0})
        return row

    def _write_v30_tasks(self, tasks: list[str]) -> None:
        import pandas as pd  # LeRobot writes this table from pandas, with the task string as the index

        frame = pd.DataFrame({"task_index": range(len(tasks))}, index=pd.Index(tasks, name="task"))
        path = self.root / "meta/tasks.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(path)

    # v2.1 -----------------------------------------------------------------------------------------------------

    def _write_v21(self, episodes: list[SynthLeRobotEpisode], starts: np.ndarray) -> None:
        for i, episode in enumerate(episodes):
            chunk = episode.index // CHUNKS_SIZE
            path = V21_DATA_PATH.format(episode_chunk=chunk, episode_index=episode.index)
            _write_parquet(self.root / path, self._data_table([episode], starts[i : i + 1]))
            for key, camera in zip(self.video_keys, self.cameras):
                video = V21_VIDEO_PATH.format(episode_chunk=chunk, video_key=key, episode_index=episode.index)
                write_mp4(self.root / video, episode.frames[camera], fps=self.fps, codec=self.codec)
        meta = self.root / "meta"
        _write_jsonl(meta / "episodes.jsonl",
                     [{"episode_index": e.index, "tasks": [e.task], "length": len(e)} for e in episodes])
        _write_jsonl(meta / "tasks.jsonl",
                     [{"task_index": i, "task": task} for i, task in enumerate(_used_tasks(episodes))])
        _write_jsonl(meta / "episodes_stats.jsonl", [
            {"episode_index": e.index, "stats": self._stats([e], _V21_STATS, global_start=int(starts[i]))}
            for i, e in enumerate(episodes)
        ])
        info = self._info(episodes, data_path=V21_DATA_PATH, video_path=V21_VIDEO_PATH)
        info.update(total_chunks=math.ceil(len(episodes) / CHUNKS_SIZE),
                    total_videos=len(episodes) * len(self.video_keys))
        _write_json(meta / "info.json", _ordered_info(info))

    # Shared ---------------------------------------------------------------------------------------------------

    def _info(self, episodes: list[SynthLeRobotEpisode], *, data_path: str, video_path: str) -> dict:
        return {
            "codebase_version": self.version,
            "robot_type": self.robot_type,
            "total_episodes": len(episodes),
            "total_frames": sum(len(e) for e in episodes),
            "total_tasks": len(_used_tasks(episodes)),
            "chunks_size": CHUNKS_SIZE,
            "fps": self.fps,
            "splits": {"train": f"0:{len(episodes)}"},
            "data_path": data_path,
            "video_path": video_path if self.video_keys else None,
            "features": self._features(),
        }

    def _features(self) -> dict:
        # v2.1-era datasets often wrap names as {"motors": [...]}; v3.0 writes plain lists. Readers take both.
        names = {"motors": JOINT_NAMES} if self.version == "v2.1" else JOINT_NAMES
        features: dict = {
            STATE_KEY: {"dtype": "float32", "shape": [len(JOINT_NAMES)], "names": names},
            ACTION_KEY: {"dtype": "float32", "shape": [len(JOINT_NAMES)], "names": names},
        }
        height, width = self.image_size
        for key in self.camera_keys:
            feature = {"dtype": "image" if self.images_in_parquet else "video", "shape": [height, width, 3],
                       "names": ["height", "width", "channels"]}
            if not self.images_in_parquet:
                feature["info"] = {
                    "video.height": height, "video.width": width, "video.codec": self.codec,
                    "video.pix_fmt": "yuv420p", "video.is_depth_map": False, "video.fps": self.fps,
                    "video.channels": 3, "has_audio": False,
                }
            features[key] = feature
        features["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
        for key in ("frame_index", "episode_index", "index", "task_index"):
            features[key] = {"dtype": "int64", "shape": [1], "names": None}
        return features

    def _data_table(self, episodes: list[SynthLeRobotEpisode], starts: np.ndarray) -> pa.Table:
        columns: dict[str, pa.Array] = {
            STATE_KEY: _vectors([e.state for e in episodes]),  # HF Sequence(length=8): a fixed size list
            ACTION_KEY: _vectors([e.action for e in episodes]),
        }
        if self.images_in_parquet:
            for key, camera in zip(self.camera_keys, self.cameras):
                columns[key] = self._image_column([e.frames[camera] for e in episodes])
        frame_index = np.concatenate([np.arange(len(e)) for e in episodes])
        columns["timestamp"] = pa.array((frame_index / self.fps).astype(np.float32))
        columns["frame_index"] = pa.array(frame_index, pa.int64())
        columns["episode_index"] = pa.array(np.concatenate([np.full(len(e), e.index) for e in episodes]), pa.int64())
        columns["index"] = pa.array(int(starts[0]) + np.arange(len(frame_index)), pa.int64())
        columns["task_index"] = pa.array(np.concatenate([np.full(len(e), e.task_index) for e in episodes]),
                                         pa.int64())
        return pa.table(columns)

    def _image_column(self, frames: list[np.ndarray]) -> pa.StructArray:
        encoded = [self._encode_image(pixels) for episode in frames for pixels in episode]
        paths = [f"frame_{i:06d}.{'png' if self.image_format == 'png' else 'jpg'}" for i in range(len(encoded))]
        return pa.StructArray.from_arrays([pa.array(encoded, pa.binary()), pa.array(paths, pa.string())],
                                          names=["bytes", "path"])

    def _encode_image(self, pixels: np.ndarray) -> bytes:
        if self.image_format == "jpeg":
            return simplejpeg.encode_jpeg(np.ascontiguousarray(pixels), quality=95, colorspace="RGB")
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG", compress_level=1)
        return buffer.getvalue()

    def _stats(self, episodes: list[SynthLeRobotEpisode], names: tuple[str, ...], global_start: int = 0) -> dict:
        n = sum(len(e) for e in episodes)
        frame_index = np.concatenate([np.arange(len(e)) for e in episodes])
        values = {
            STATE_KEY: np.concatenate([e.state for e in episodes]),
            ACTION_KEY: np.concatenate([e.action for e in episodes]),
            "timestamp": (frame_index / self.fps)[:, None],
            "frame_index": frame_index[:, None],
            "episode_index": np.concatenate([np.full(len(e), e.index) for e in episodes])[:, None],
            "index": (global_start + np.arange(n))[:, None],
            "task_index": np.concatenate([np.full(len(e), e.task_index) for e in episodes])[:, None],
        }
        stats = {key: _array_stats(array.astype(np.float64), names) for key, array in values.items()}
        for key, camera in zip(self.camera_keys, self.cameras):
            pixels = np.concatenate([e.frames[camera][:, ::8, ::8] for e in episodes]).reshape(-1, 3) / 255.0
            stats[key] = {name: np.asarray(value).reshape(-1, 1, 1).tolist() if name != "count" else value
                          for name, value in _array_stats(pixels, names).items()}
        return stats


def _vectors(parts: list[np.ndarray]) -> pa.FixedSizeListArray:
    values = np.concatenate(parts)
    return pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), values.shape[1])


def _used_tasks(episodes: list[SynthLeRobotEpisode]) -> list[str]:
    """The tasks table: only tasks some episode uses (episode k has task k mod 6, so they are TASKS[:k])."""
    return list(TASKS[: max(e.task_index for e in episodes) + 1])


def _array_stats(values: np.ndarray, names: tuple[str, ...]) -> dict[str, list]:
    """Per-dimension statistics of [n, D] values, as LeRobot's stats files hold them (lists, count as [n])."""
    everything = {
        "min": values.min(axis=0), "max": values.max(axis=0), "mean": values.mean(axis=0),
        "std": values.std(axis=0), "count": np.array([values.shape[0]]),
    }
    for q in (1, 10, 50, 90, 99):
        everything[f"q{q:02d}"] = np.quantile(values, q / 100, axis=0)
    return {name: everything[name].tolist() for name in names}


def _ordered_info(info: dict) -> dict:
    """info.json keys in the order LeRobot writes them (identity, sizes, paths, features)."""
    order = ("codebase_version", "robot_type", "total_episodes", "total_frames", "total_tasks", "total_videos",
             "total_chunks", "chunks_size", "data_files_size_in_mb", "video_files_size_in_mb", "fps", "splits",
             "data_path", "video_path", "features")
    return {key: info[key] for key in order if key in info}


def _write_parquet(path: pathlib.Path, table: pa.Table) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path, compression="snappy")


def _write_json(path: pathlib.Path, document: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=4) + "\n")


def _write_jsonl(path: pathlib.Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
