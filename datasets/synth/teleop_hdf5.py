"""Bimanual teleop episodes in the ALOHA / ACT HDF5 layout, one file per episode, as ALOHA's recorder writes them.

    /observations/qpos              (T, 14) float32   follower joint positions (left 6 + gripper, right 6 + gripper)
    /observations/qvel              (T, 14) float32
    /observations/effort            (T, 14) float32
    /observations/images/<camera>   (T, H, W, 3) uint8, chunks (1, H, W, 3)           when not compressed
                                    (T, L) uint8 zero-padded JPEG bytes, chunks (1, L)  when compressed
    /action                         (T, 14) float32   leader joint positions
    /compress_len                   (cameras, T) float32, each frame's JPEG length (compressed only), rows in the
                                    recorder's camera order
    attributes: sim (bool), compress (bool)

Compressed frames are written as ALOHA's recorder writes them: `cv2.imencode(".jpg", rgb_image, [JPEG quality 50])`,
which takes the RGB array for BGR, so the JPEG holds BGR-ordered pixels (red shows blue in a standard decoder).
simplejpeg's `encode_jpeg(rgb_image, colorspace="BGR")` makes the same call into libjpeg-turbo (4:2:0 sampling, as
OpenCV's default). `channel_order="rgb"` writes standard JPEGs instead (a recorder that converts to BGR first).

ALOHA's recorder creates its numeric datasets with a shape only, so they take h5py's default float32; this writer
names that dtype ("f4") explicitly, for the same bytes.
Two additions that ALOHA itself does not write, both documented in `datasets/teleop_hdf5.py`: the root attribute
`instruction` (the task text), and, for recordings whose streams tick on their own clocks, one timestamp dataset per
stream under `/timestamps/` mirroring the stream's path (`/timestamps/observations/qpos`, `/timestamps/action`,
`/timestamps/observations/images/cam_high`), int64 nanoseconds. A third, with `calibration`: the overhead camera's
dataset carries the attributes `intrinsics` (3x3), `camera_to_base` (4x4) and `distortion`.
"""

from __future__ import annotations

import pathlib

import h5py
import numpy as np
import simplejpeg

from vlaforge.datasets.bimanual import ARMS
from vlaforge.datasets.synth.teleop import TeleopRecording, make_recording

TIMESTAMPS_GROUP = "timestamps"


def _joined(tracks: dict, field: str, role: str) -> tuple[np.ndarray, np.ndarray]:
    """Both arms' values side by side [T, 14], and their shared stamps [T]."""
    left, right = (tracks[arm] for arm in ARMS)
    if not np.array_equal(left.stamps, right.stamps):
        raise ValueError(f"the {role} arms tick on different clocks; HDF5 holds one (T, 14) array per role: make the "
                         f"recording with shared_arm_clock=True or fixed_rate_hz")
    return np.concatenate([getattr(left, field), getattr(right, field)], axis=1), left.stamps


RECORDER_QUALITY = 50
"""The JPEG quality ALOHA's recorder compresses with."""


def recorded_jpeg(jpeg: bytes, channel_order: str) -> bytes:
    """A camera frame as the recorder stores it: "bgr" re-encodes its pixels the way `cv2.imencode` does on an RGB
    array (channels taken as BGR); "rgb" keeps the standard JPEG. A frame a test has damaged (one that does not
    decode) is stored as given: such damage happens to the bytes after the recorder wrote them."""
    if channel_order == "rgb":
        return jpeg
    try:
        pixels = simplejpeg.decode_jpeg(jpeg, colorspace="RGB")
    except ValueError:
        return jpeg
    return simplejpeg.encode_jpeg(pixels, quality=RECORDER_QUALITY, colorspace="BGR", colorsubsampling="420")


def _write_images(group: h5py.Group, camera: str, jpegs: list[bytes], compress: bool, padded: int) -> None:
    if compress:
        dataset = group.create_dataset(camera, (len(jpegs), padded), dtype="uint8", chunks=(1, padded))
        for i, jpeg in enumerate(jpegs):
            row = np.zeros(padded, dtype=np.uint8)
            row[: len(jpeg)] = np.frombuffer(jpeg, dtype=np.uint8)
            dataset[i] = row
        return
    height, width = simplejpeg.decode_jpeg_header(jpegs[0])[:2]
    dataset = group.create_dataset(camera, (len(jpegs), height, width, 3), dtype="uint8", chunks=(1, height, width, 3))
    for i, jpeg in enumerate(jpegs):
        dataset[i] = simplejpeg.decode_jpeg(jpeg, colorspace="RGB")


def write_aloha_hdf5(path: pathlib.Path, recording: TeleopRecording, *, compress: bool = True,
                     timestamps: bool = False, skip_cameras: tuple[str, ...] = (),
                     channel_order: str = "bgr",
                     calibration: dict[str, tuple[np.ndarray, np.ndarray]] | None = None) -> pathlib.Path:
    """One episode file. Without `timestamps` every stream must share one clock (a fixed-rate recording); with
    them, each stream keeps its own length and clock. `channel_order` is how compressed frames are written (see
    the module docstring). `calibration` maps cameras to (K [3, 3], camera_to_base [4, 4]), stored as attributes
    of their image datasets."""
    qpos, qpos_stamps = _joined(recording.follower, "position", "follower")
    qvel, _ = _joined(recording.follower, "velocity", "follower")
    action, action_stamps = _joined(recording.leader, "position", "leader")
    cameras = {name: track for name, track in recording.cameras.items() if name not in skip_cameras}
    if not timestamps and any(len(t.stamps) != len(qpos) or not np.array_equal(t.stamps, qpos_stamps)
                              for t in [*cameras.values(), recording.leader["left"]]):
        raise ValueError("a fixed-rate file needs every stream on one clock: make the recording with fixed_rate_hz")
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", rdcc_nbytes=2 * 1024**2) as root:
        root.attrs["sim"] = False
        root.attrs["compress"] = compress
        root.attrs["instruction"] = recording.instruction
        observations = root.create_group("observations")
        images = observations.create_group("images")
        stored = {camera: [recorded_jpeg(jpeg, channel_order) if compress else jpeg for jpeg in track.jpeg]
                  for camera, track in cameras.items()}
        lengths = [[len(jpeg) for jpeg in jpegs] for jpegs in stored.values()]
        padded = max(max(row) for row in lengths)
        for camera, jpegs in stored.items():
            _write_images(images, camera, jpegs, compress, padded)
            if calibration and camera in calibration:
                k, camera_to_base = calibration[camera]
                images[camera].attrs["intrinsics"] = np.asarray(k, np.float64)
                images[camera].attrs["camera_to_base"] = np.asarray(camera_to_base, np.float64)
                images[camera].attrs["distortion"] = np.array([0.01, -0.02, 0.0, 0.0, 0.0])
        for name, values in (("observations/qpos", qpos), ("observations/qvel", qvel),
                             ("observations/effort", np.zeros_like(qpos)), ("action", action)):
            root.create_dataset(name, values.shape, dtype="f4")[...] = values
        if compress:
            table = np.zeros((len(cameras), max(len(row) for row in lengths)))
            for row, frame_lengths in enumerate(lengths):
                table[row, : len(frame_lengths)] = frame_lengths
            root.create_dataset("compress_len", table.shape, dtype="f4")[...] = table
        if timestamps:
            stamps = {"observations/qpos": qpos_stamps, "action": action_stamps,
                      **{f"observations/images/{name}": track.stamps for name, track in cameras.items()}}
            for name, values in stamps.items():
                root.create_dataset(f"{TIMESTAMPS_GROUP}/{name}", data=np.asarray(values, dtype=np.int64))
    return path


def episode_file(index: int) -> str:
    return f"episode_{index}.hdf5"


def write_aloha_dataset(root: pathlib.Path, n_episodes: int = 3, *, duration_s: float = 4.0, seed: int = 0,
                        compress: bool = True, timestamps: bool = False, channel_order: str = "bgr",
                        **recording_options) -> pathlib.Path:
    """`n_episodes` files under `root` (episode_0.hdf5, ... as ALOHA names them). Without `timestamps` the
    recordings tick at ALOHA's fixed 50 Hz; with them, cameras near 30 Hz and joints at 200 Hz on their own clocks."""
    if not timestamps:
        recording_options.setdefault("fixed_rate_hz", 50.0)
    else:
        recording_options.setdefault("shared_arm_clock", True)
    for index in range(n_episodes):
        recording = make_recording(seed + index, duration_s, **recording_options)
        write_aloha_hdf5(pathlib.Path(root) / episode_file(index), recording, compress=compress,
                         timestamps=timestamps, channel_order=channel_order)
    return pathlib.Path(root)
