"""Pinhole projection of end-effector positions into a camera image, and the calibration file that feeds it.

Conventions (DROID's): a 6-D pose is [x, y, z, rx, ry, rz] with extrinsic x-y-z Euler angles in radians
(`scipy.spatial.transform.Rotation.from_euler("xyz", ...)`), so R = Rz · Ry · Rx. Camera extrinsics are the camera's
pose in the robot base frame (camera-to-base), as DROID's `ext1_cam_extrinsics` are. The camera frame is OpenCV's
(x right, y down, z forward) and intrinsics put pixel centres at integers; projected points are returned in the
continuous convention of `qwen_coordinates` (0 is the left edge of the first pixel), i.e. u_opencv + 0.5.

The calibration file maps episodes (by episode id, or "*" for every episode) and cameras to intrinsics and
extrinsics:

    {"format": "vlaforge-calibration/1",
     "episodes": {"<episode id or *>": {"exterior_1": {
         "intrinsics": {"fx": 523.1, "fy": 523.1, "cx": 640.2, "cy": 360.5, "width": 1280, "height": 720},
         "extrinsics": [x, y, z, rx, ry, rz]            # or "camera_to_base": 4x4 row-major
     }}}}

Intrinsics are for an image of `width` x `height`; they are rescaled to the stored frame's size.

Calibration kept at ingest travels per episode and camera in the shards themselves: the robot sample's `meta.json`
has a `calibration` key (camera -> an entry of the file format above, with `camera_to_base` and a `source` saying
where it came from, and `distortion` when the source gives it; projection ignores distortion). Sources fill it from
what the data holds: ROS 2 `sensor_msgs/msg/CameraInfo` topics and `/tf_static` (`ros_calibration`), HDF5
attributes (`teleop_hdf5.py`), DROID's published per-episode calibration (`droid_calibration.py`). Shards written
before it exist have no such key and read as episodes without calibration.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

CALIBRATION_FORMAT = "vlaforge-calibration/1"
ANY_EPISODE = "*"


class CalibrationError(ValueError):
    """A calibration file that cannot be used; the message names the file, the entry and the field."""


def euler_xyz_matrix(angles: Sequence[float]) -> np.ndarray:
    """[3, 3] rotation of extrinsic x-y-z Euler angles (radians): Rz(rz) @ Ry(ry) @ Rx(rx)."""
    rx, ry, rz = (float(a) for a in angles)
    cx, sx, cy, sy, cz, sz = np.cos(rx), np.sin(rx), np.cos(ry), np.sin(ry), np.cos(rz), np.sin(rz)
    x = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    y = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    z = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return z @ y @ x


def pose_matrix(pose: Sequence[float]) -> np.ndarray:
    """[4, 4] homogeneous transform of a 6-D pose [x, y, z, rx, ry, rz]."""
    matrix = np.eye(4)
    matrix[:3, :3] = euler_xyz_matrix(pose[3:6])
    matrix[:3, 3] = pose[:3]
    return matrix


def tool_points(poses: np.ndarray, offset: Sequence[float]) -> np.ndarray:
    """[n, 3] positions of a point fixed in the end-effector frame (e.g. the fingertip centre, `offset` metres from
    the flange) for 6-D poses [n, 6]. A zero offset returns the pose positions."""
    offset = np.asarray(offset, np.float64)
    if not offset.any():
        return poses[:, :3].astype(np.float64)
    return np.stack([pose_matrix(p)[:3, :3] @ offset + p[:3] for p in poses.astype(np.float64)])


@dataclasses.dataclass(frozen=True)
class PinholeCamera:
    """Intrinsics for an image of `width` x `height`, and the camera's pose in the robot base frame."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int
    camera_to_base: np.ndarray
    """[4, 4]."""

    def scaled_to(self, height: int, width: int) -> "PinholeCamera":
        """The same camera for the image resized to `height` x `width` (pixel centres stay at integers)."""
        sx, sy = width / self.width, height / self.height
        return dataclasses.replace(self, fx=self.fx * sx, fy=self.fy * sy, cx=(self.cx + 0.5) * sx - 0.5,
                                   cy=(self.cy + 0.5) * sy - 0.5, width=width, height=height)

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Points [n, 3] in the base frame -> (pixels [n, 2] continuous x, y; depth [n] along the optical axis).
        Points with depth <= 0 are behind the camera: their pixels are meaningless."""
        base_to_camera = np.linalg.inv(self.camera_to_base)
        homogeneous = np.concatenate([points, np.ones((len(points), 1))], axis=1)
        in_camera = homogeneous @ base_to_camera.T
        depth = in_camera[:, 2]
        safe = np.where(np.abs(depth) < 1e-12, 1e-12, depth)
        u = self.fx * in_camera[:, 0] / safe + self.cx + 0.5
        v = self.fy * in_camera[:, 1] / safe + self.cy + 0.5
        return np.stack([u, v], axis=1), depth

    def visible(self, pixels: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """[n] bool: in front of the camera and inside the image."""
        x, y = pixels[:, 0], pixels[:, 1]
        inside = (x >= 0) & (x <= self.width) & (y >= 0) & (y <= self.height)
        return (depth > 0) & inside


class Calibration:
    """Cameras by episode (exact id first, then "*") and camera name, loaded from a calibration file."""

    def __init__(self, entries: dict[str, dict[str, PinholeCamera]], digest: str) -> None:
        self.entries = entries
        self.digest = digest
        """sha256 of the file: recorded in provenance."""

    def camera(self, episode_id: str, camera: str) -> PinholeCamera | None:
        for key in (episode_id, ANY_EPISODE):
            found = self.entries.get(key, {}).get(camera)
            if found is not None:
                return found
        return None

    @classmethod
    def load(cls, path: str | pathlib.Path) -> "Calibration":
        path = pathlib.Path(path)
        try:
            raw = path.read_bytes()
            data = json.loads(raw)
        except (OSError, ValueError) as error:
            raise CalibrationError(f"{path}: cannot read the calibration file ({error})") from None
        if not isinstance(data, dict) or data.get("format") != CALIBRATION_FORMAT:
            raise CalibrationError(f"{path}: 'format' must be {CALIBRATION_FORMAT!r}")
        entries = {episode: {camera: _camera(path, episode, camera, spec) for camera, spec in cameras.items()}
                   for episode, cameras in (data.get("episodes") or {}).items()}
        return cls(entries, "sha256:" + hashlib.sha256(raw).hexdigest()[:16])


def _camera(path: pathlib.Path, episode: str, camera: str, spec: dict[str, Any]) -> PinholeCamera:
    return camera_from_entry(spec, f"{path}: episodes[{episode!r}][{camera!r}]")


def camera_from_entry(spec: dict[str, Any], where: str) -> PinholeCamera:
    """A camera from one entry of the calibration format (a file's, or a shard meta's `calibration`); raises
    CalibrationError naming `where` and the field."""
    try:
        intrinsics = spec["intrinsics"]
        if "camera_to_base" in spec:
            matrix = np.asarray(spec["camera_to_base"], np.float64).reshape(4, 4)
        else:
            matrix = pose_matrix(np.asarray(spec["extrinsics"], np.float64).reshape(6))
        camera_model = PinholeCamera(
            fx=float(intrinsics["fx"]), fy=float(intrinsics["fy"]), cx=float(intrinsics["cx"]),
            cy=float(intrinsics["cy"]), width=int(intrinsics["width"]), height=int(intrinsics["height"]),
            camera_to_base=matrix,
        )
    except (KeyError, TypeError, ValueError) as error:
        raise CalibrationError(f"{where}: needs intrinsics {{fx, fy, cx, cy, width, height}} and extrinsics "
                               f"[x, y, z, rx, ry, rz] or camera_to_base 4x4 ({type(error).__name__}: "
                               f"{error})") from None
    if min(camera_model.fx, camera_model.fy, camera_model.width, camera_model.height) <= 0:
        raise CalibrationError(f"{where}: focal lengths and image size must be > 0")
    return camera_model


def camera_entry(*, width: int, height: int, k: Sequence[float], camera_to_base: np.ndarray, source: str,
                 distortion_model: str = "", distortion: Sequence[float] = ()) -> dict[str, Any]:
    """An entry of the calibration format from a 3x3 intrinsic matrix `k` (row-major, OpenCV's convention, as ROS's
    CameraInfo `k` is) and the camera's pose in the base frame [4, 4]."""
    entry: dict[str, Any] = {
        "intrinsics": {"fx": float(k[0]), "fy": float(k[4]), "cx": float(k[2]), "cy": float(k[5]),
                       "width": int(width), "height": int(height)},
        "camera_to_base": [[float(v) for v in row] for row in np.asarray(camera_to_base, np.float64).reshape(4, 4)],
        "source": source,
    }
    if distortion_model or len(distortion):
        entry["distortion"] = {"model": distortion_model, "coefficients": [float(v) for v in distortion]}
    return entry


def quaternion_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """[3, 3] rotation of a unit quaternion (x, y, z, w), as geometry_msgs/Quaternion orders it."""
    norm = np.sqrt(x * x + y * y + z * z + w * w)
    if norm == 0:
        raise CalibrationError("a rotation quaternion is all zeros")
    x, y, z, w = x / norm, y / norm, z / norm, w / norm
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


class FrameTree:
    """Static transforms as tf2 publishes them (`/tf_static`): each child frame's pose in its parent frame."""

    def __init__(self) -> None:
        self.parents: dict[str, tuple[str, np.ndarray]] = {}
        """child frame -> (parent frame, [4, 4] child-to-parent)."""

    def add(self, parent: str, child: str, translation: Sequence[float], rotation_xyzw: Sequence[float]) -> None:
        matrix = np.eye(4)
        matrix[:3, :3] = quaternion_matrix(*rotation_xyzw)
        matrix[:3, 3] = translation
        self.parents[child.lstrip("/")] = (parent.lstrip("/"), matrix)

    def _to_root(self, frame: str) -> tuple[str, np.ndarray]:
        """(the root of `frame`'s tree, [4, 4] frame-to-root)."""
        pose, seen = np.eye(4), set()
        frame = frame.lstrip("/")
        while frame in self.parents and frame not in seen:
            seen.add(frame)
            parent, matrix = self.parents[frame]
            pose = matrix @ pose
            frame = parent
        return frame, pose

    def pose(self, frame: str, base: str) -> np.ndarray | None:
        """[4, 4] `frame`-to-`base` (the frame's pose in the base frame); None when no chain of transforms joins
        them."""
        root, frame_to_root = self._to_root(frame)
        base_root, base_to_root = self._to_root(base)
        if root != base_root:
            return None
        return np.linalg.inv(base_to_root) @ frame_to_root


def ros_calibration(infos: dict[str, dict[str, Any]], tree: FrameTree, base_frame: str,
                    source: str) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Calibration entries from ROS messages: per camera, its first CameraInfo (`width`, `height`, `k`,
    `distortion_model`, `d`, `frame_id`) placed in `base_frame` through `tree`. Returns (camera -> entry, camera ->
    why it has none)."""
    entries, missing = {}, {}
    for camera, info in infos.items():
        pose = tree.pose(info["frame_id"], base_frame)
        if pose is None:
            missing[camera] = (f"no /tf_static chain from {info['frame_id']!r} to {base_frame!r} (frames known: "
                               f"{sorted(tree.parents)[:8]})")
        elif not any(info["k"]) or not info["width"] or not info["height"]:
            missing[camera] = "its CameraInfo is uncalibrated (k all zeros or no image size)"
        else:
            entries[camera] = camera_entry(width=info["width"], height=info["height"], k=info["k"],
                                           camera_to_base=pose, source=source,
                                           distortion_model=info.get("distortion_model", ""),
                                           distortion=info.get("d", ()))
    return entries, missing
