"""A small DROID 1.0.1 dataset, written the way TFDS writes RLDS: real framing, CRCs, metadata and features.

The layout is `<root>/<builder>/<version>/` with `dataset_info.json`, `features.json` and shards named
`<builder>-train.tfrecord-0000i-of-0000N`, one `tf.train.Example` per episode (see FORMATS.md). Episodes are
plausible: smooth joint motion with still steps at both ends, joint velocities that integrate to the positions,
a gripper that closes and reopens, a cartesian pose, JPEG frames panning over real photos, and instructions.

`make_droid_episode` builds one episode as a dict keyed by serialized feature key, so a test can damage it (a NaN
action, a corrupt JPEG at step k) before `write_droid_shard` writes it.
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Iterable, Mapping

import numpy as np
import simplejpeg

from vlaforge.datasets.synth.scenes import camera_frames
from vlaforge.datasets.tf_example import encode_example
from vlaforge.datasets.tfrecord import write_records

CONTROL_RATE_HZ = 15.0
CAMERAS = ("exterior_image_1_left", "exterior_image_2_left", "wrist_image_left")
_FEATURES = "tensorflow_datasets.core.features."
_TASKS = (
    ("put the red mug on the shelf", "place the red mug onto the shelf"),
    ("open the top drawer of the cabinet", "pull the top drawer open"),
    ("wipe the table with the blue towel", "clean the table using the blue cloth"),
    ("put the marker in the cup", "drop the marker into the cup"),
    ("close the laptop lid", "shut the laptop"),
    ("stack the green block on the yellow block", "place the green block on top of the yellow one"),
)
_LABS = ("AUTOLab", "ILIAD", "IRIS", "RAIL", "REAL")
_HOME = np.array([0.0, -0.35, 0.0, -2.2, 0.0, 1.9, 0.8])


def _tensor(shape: tuple[int, ...], dtype: str, description: str, scalar: bool = False) -> dict:
    return {
        "pythonClassName": _FEATURES + ("scalar.Scalar" if scalar else "tensor_feature.Tensor"),
        "tensor": {
            "shape": {"dimensions": [str(d) for d in shape]} if shape else {},
            "dtype": dtype,
            "encoding": "none",
        },
        "description": description,
    }


def _image(size: tuple[int, int], description: str) -> dict:
    dims = [str(size[0]), str(size[1]), "3"]
    return {
        "pythonClassName": _FEATURES + "image_feature.Image",
        "image": {"shape": {"dimensions": dims}, "dtype": "uint8", "encodingFormat": "jpeg"},
        "description": description,
    }


def _text(description: str) -> dict:
    return {"pythonClassName": _FEATURES + "text_feature.Text", "text": {}, "description": description}


def _dict(features: dict) -> dict:
    return {"pythonClassName": _FEATURES + "features_dict.FeaturesDict", "featuresDict": {"features": features}}


def droid_features(image_size: tuple[int, int] = (180, 320)) -> dict:
    """The features.json document of DROID 1.0.1 (every feature, in TFDS's nesting)."""
    f64 = "float64"
    observation = {
        "exterior_image_1_left": _image(image_size, "Exterior camera 1 left viewpoint"),
        "exterior_image_2_left": _image(image_size, "Exterior camera 2 left viewpoint"),
        "wrist_image_left": _image(image_size, "Wrist camera RGB left viewpoint"),
        "cartesian_position": _tensor((6,), f64, "Robot Cartesian state"),
        "gripper_position": _tensor((1,), f64, "Gripper position state"),
        "joint_position": _tensor((7,), f64, "Joint position state"),
    }
    action_dict = {
        "cartesian_position": _tensor((6,), f64, "Commanded Cartesian position"),
        "cartesian_velocity": _tensor((6,), f64, "Commanded Cartesian velocity"),
        "gripper_position": _tensor((1,), f64, "Commanded gripper position"),
        "gripper_velocity": _tensor((1,), f64, "Commanded gripper velocity"),
        "joint_position": _tensor((7,), f64, "Commanded joint position"),
        "joint_velocity": _tensor((7,), f64, "Commanded joint velocity"),
    }
    steps = {
        "is_first": _tensor((), "bool", "True on first step of the episode.", scalar=True),
        "is_last": _tensor((), "bool", "True on last step of the episode.", scalar=True),
        "is_terminal": _tensor((), "bool", "True on last step of the episode if it is a terminal step.", True),
        "language_instruction": _text("Language Instruction."),
        "language_instruction_2": _text("Alternative Language Instruction."),
        "language_instruction_3": _text("Alternative Language Instruction."),
        "observation": _dict(observation),
        "discount": _tensor((), "float32", "Discount if provided, default to 1.", scalar=True),
        "reward": _tensor((), "float32", "Reward if provided, 1 on final step for demos.", scalar=True),
        "action_dict": _dict(action_dict),
        "action": _tensor((7,), f64, "Robot action, consists of [6x joint velocities, 1x gripper position]."),
    }
    metadata = {"file_path": _text("Path to the original data file."),
                "recording_folderpath": _text("Path to the folder of recordings.")}
    steps_feature = {
        "pythonClassName": _FEATURES + "dataset_feature.Dataset",
        "sequence": {"feature": _dict(steps), "length": "-1"},
    }
    return _dict({"steps": steps_feature, "episode_metadata": _dict(metadata)})


def droid_dataset_info(builder: str, version: str, shard_lengths: list[int], num_bytes: int) -> dict:
    """The dataset_info.json document TFDS writes (int64 values as strings)."""
    return {
        "citation": "@article{khazatsky2024droid, title={DROID: A Large-Scale In-The-Wild Robot Manipulation Dataset}}",
        "description": "DROID: A Large-Scale In-The-Wild Robot Manipulation Dataset (synthetic sample).",
        "fileFormat": "tfrecord",
        "moduleName": f"{builder}.{builder}_dataset_builder",
        "name": builder,
        "releaseNotes": {"1.0.0": "Initial release.", "1.0.1": "Language annotations for every episode."},
        "splits": [
            {
                "filepathTemplate": "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}",
                "name": "train",
                "numBytes": str(num_bytes),
                "shardLengths": [str(n) for n in shard_lengths],
            }
        ],
        "version": version,
    }


def _joint_motion(rng: np.random.Generator, n: int, idle: int) -> tuple[np.ndarray, np.ndarray]:
    """Joint positions [n, 7] and velocities [n, 7] (rad/s): a smoothed random walk, still for `idle` steps at
    each end, integrated so that q[t+1] = q[t] + v[t] / rate."""
    moving = max(n - 2 * idle, 0)
    walk = np.cumsum(rng.normal(0.0, 0.08, size=(moving + 8, 7)), axis=0)
    kernel = np.hanning(9) / np.hanning(9).sum()
    smooth = np.stack([np.convolve(walk[:, j], kernel, "valid") for j in range(7)], axis=1)[:moving]
    envelope = np.sin(np.linspace(0.0, np.pi, moving))[:, None] ** 2
    velocity = np.zeros((n, 7))
    if moving:
        velocity[idle : idle + moving] = (smooth - smooth.mean(0)) * envelope
    start = _HOME + rng.normal(0.0, 0.05, size=7)
    position = start + np.concatenate([np.zeros((1, 7)), np.cumsum(velocity[:-1] / CONTROL_RATE_HZ, axis=0)])
    return position, velocity


def _gripper(n: int, idle: int) -> np.ndarray:
    """Gripper opening [n, 1] in [0, 0.9] (higher is more closed): closes early in the motion and reopens before
    it ends, so the still steps at both ends are still for the gripper too."""
    t = np.arange(n, dtype=np.float64)
    moving = max(n - 2 * idle, 0)
    ramp = max(1.0, min(4.0, 0.15 * moving))
    closing = np.clip((t - (idle + 0.35 * moving)) / ramp, 0.0, 1.0)
    opening = np.clip((t - (idle + 0.8 * moving)) / ramp, 0.0, 1.0)
    return (closing - opening)[:, None] * 0.9


def _cartesian(joints: np.ndarray, mixing: np.ndarray) -> np.ndarray:
    """A made-up but smooth forward kinematics: xyz and roll/pitch/yaw [n, 6] from joints [n, 7]."""
    base = np.array([0.45, 0.0, 0.35, np.pi, 0.0, 0.0])
    return base + (joints - _HOME) @ mixing


def _frames(index: int, camera: int, n: int, image_size: tuple[int, int]) -> list[bytes]:
    pixels = camera_frames(index + camera, n, *image_size)
    return [simplejpeg.encode_jpeg(frame, quality=90, colorspace="RGB") for frame in pixels]


def episode_paths(index: int, seed: int, failed: bool) -> tuple[bytes, bytes]:
    """DROID-style file_path and recording_folderpath; the timestamp encodes seed and index, so they are unique
    (and so are episode ids) for index < 3600 and seed < 672."""
    lab, outcome = _LABS[index % len(_LABS)], "failure" if failed else "success"
    day, clock = 1 + (seed // 24) % 28, f"{seed % 24:02d}:{index // 60 % 60:02d}:{index % 60:02d}"
    folder = f"gs://xembodiment/r2d2/r2d2-data-full/{lab}/{outcome}/2023-07-{day:02d}/Fri_Jul_{day:02d}_{clock}_2023"
    return f"{folder}/trajectory.h5".encode(), f"{folder}/recordings/MP4".encode()


def make_droid_episode(
    index: int,
    *,
    seed: int = 0,
    n_steps: int = 50,
    image_size: tuple[int, int] = (180, 320),
    failed: bool = False,
    idle_steps: int = 4,
) -> dict[str, np.ndarray | list[bytes]]:
    """One DROID episode keyed by serialized feature key: per-step arrays [n, ...], frames and text as bytes."""
    rng = np.random.default_rng([seed, index])
    n = n_steps
    joints, joint_velocity = _joint_motion(rng, n, idle_steps)
    gripper = _gripper(n, idle_steps)
    mixing = rng.normal(0.0, 0.15, size=(7, 6))
    cartesian = _cartesian(joints, mixing)
    next_joints = joints + joint_velocity / CONTROL_RATE_HZ
    next_gripper = np.concatenate([gripper[1:], gripper[-1:]])
    cartesian_velocity = (_cartesian(next_joints, mixing) - cartesian) * CONTROL_RATE_HZ
    task, variant = _TASKS[(seed + index) % len(_TASKS)]
    file_path, recording_folder = episode_paths(index, seed, failed)
    episode: dict[str, np.ndarray | list[bytes]] = {
        f"steps/observation/{camera}": _frames(index, c, n, image_size) for c, camera in enumerate(CAMERAS)
    }
    episode |= {
        "steps/observation/cartesian_position": cartesian,
        "steps/observation/gripper_position": gripper,
        "steps/observation/joint_position": joints,
        "steps/action_dict/cartesian_position": _cartesian(next_joints, mixing),
        "steps/action_dict/cartesian_velocity": cartesian_velocity,
        "steps/action_dict/gripper_position": next_gripper,
        "steps/action_dict/gripper_velocity": (next_gripper - gripper) * CONTROL_RATE_HZ,
        "steps/action_dict/joint_position": next_joints,
        "steps/action_dict/joint_velocity": joint_velocity,
        "steps/action": np.concatenate([cartesian_velocity, next_gripper], axis=1),
        "steps/is_first": np.arange(n) == 0,
        "steps/is_last": np.arange(n) == n - 1,
        "steps/is_terminal": np.arange(n) == n - 1,
        "steps/reward": ((np.arange(n) == n - 1) & (not failed)).astype(np.float32),
        "steps/discount": np.ones(n, np.float32),
        "steps/language_instruction": [task.encode()] * n,
        "steps/language_instruction_2": [variant.encode()] * n,
        "steps/language_instruction_3": [(f"{variant} please" if index % 2 else "").encode()] * n,
        "episode_metadata/file_path": [file_path],
        "episode_metadata/recording_folderpath": [recording_folder],
    }
    return episode


def encode_droid_episode(episode: Mapping[str, np.ndarray | list[bytes]]) -> bytes:
    """One episode as a serialized tf.train.Example, each per-step feature flattened over steps like TFDS does."""
    return encode_example({key: np.asarray(v).reshape(-1) if isinstance(v, np.ndarray) else v
                           for key, v in episode.items()})


def write_droid_shard(path: str | pathlib.Path, episodes: Iterable[Mapping]) -> int:
    """Write episodes (dicts from `make_droid_episode`, possibly damaged) as one TFRecord shard; returns bytes."""
    return write_records(path, (encode_droid_episode(episode) for episode in episodes))


def write_droid_dataset(
    root: str | pathlib.Path,
    *,
    n_episodes: int = 6,
    n_shards: int = 2,
    min_steps: int = 40,
    max_steps: int = 80,
    seed: int = 0,
    builder: str = "droid",
    version: str = "1.0.1",
    image_size: tuple[int, int] = (180, 320),
    failure_every: int = 3,
    idle_steps: int = 4,
) -> pathlib.Path:
    """Write a DROID-format dataset under `root/builder/version` and return that version directory.

    Every `failure_every`-th episode (0: none) is a failure. Reruns with the same arguments are byte-identical.
    """
    if n_shards < 1 or n_episodes < 0 or not 1 <= min_steps <= max_steps:
        raise ValueError(f"need n_shards >= 1, n_episodes >= 0, 1 <= min_steps <= max_steps; got "
                         f"{n_shards=}, {n_episodes=}, {min_steps=}, {max_steps=}")
    out = pathlib.Path(root) / builder / version
    out.mkdir(parents=True, exist_ok=True)
    lengths = np.random.default_rng([seed, 1 << 20]).integers(min_steps, max_steps + 1, size=n_episodes)
    groups = np.array_split(np.arange(n_episodes), n_shards)
    num_bytes = 0
    for shard, indices in enumerate(groups):
        episodes = (
            make_droid_episode(int(i), seed=seed, n_steps=int(lengths[i]), image_size=image_size,
                               failed=failure_every > 0 and (i + 1) % failure_every == 0, idle_steps=idle_steps)
            for i in indices
        )
        num_bytes += write_droid_shard(out / f"{builder}-train.tfrecord-{shard:05d}-of-{n_shards:05d}", episodes)
    info = droid_dataset_info(builder, version, [len(g) for g in groups], num_bytes)
    (out / "dataset_info.json").write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
    (out / "features.json").write_text(json.dumps(droid_features(image_size), indent=2) + "\n", encoding="utf-8")
    return out
