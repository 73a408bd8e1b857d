"""DROID's published per-episode camera calibration, imported at ingest into each episode's calibration.

After DROID's release its authors published more accurate calibrations in a separate repository (KarlP/droid on
the hub), as JSON files keyed by DROID's episode id ("<lab>+<hash>+<date-time>"):

- `episode_id_to_path.json`: episode id -> the episode's path under `r2d2-data-full/` (`<lab>/success/<date>/<time>`);
  an RLDS episode's `episode_metadata/file_path` is `.../r2d2-data-full/<that path>/trajectory.h5`;
- `camera_serials.json`: episode id -> `{"ext1_cam_serial": ..., "ext2_cam_serial": ..., ...}` (ZED serials);
- `cam2base_extrinsic_superset.json`: episode id -> `{"<serial>": [x, y, z, rx, ry, rz], "<serial>_quality_metric":
  ..., "<serial>_metric_type": ...}` for both exterior cameras; `cam2base_extrinsics.json`: the same for one camera,
  with `quality_metric` and `metric_type` beside it. The pose is the left camera's in the robot base frame, Euler
  x-y-z like the robot's cartesian poses (`calibration.pose_matrix`); the superset wins where both have a serial;
- `intrinsics.json`: episode id -> `{"<serial>": {"cameraMatrix": [fx, cx, fy, cy], "width": 1280, "height": 720}}`
  (the left ZED image; rescaled to the stored frames when used). Some entries are zero-filled: skipped.

`ext1_cam_serial` belongs to the `exterior_image_1_left` stream (our `exterior_1`), `ext2_cam_serial` to
`exterior_2`. Files that are absent are tolerated (a team may hold only some); an episode the files do not cover
gets no calibration.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import numpy as np

from vlaforge.datasets.calibration import CalibrationError, camera_entry, pose_matrix
from vlaforge.datasets.schema import Camera

FILES = ("episode_id_to_path.json", "camera_serials.json", "cam2base_extrinsic_superset.json",
         "cam2base_extrinsics.json", "intrinsics.json")
SERIAL_KEYS = {"ext1_cam_serial": Camera.EXTERIOR_1.value, "ext2_cam_serial": Camera.EXTERIOR_2.value}
_PATH_ROOT = "r2d2-data-full/"


class DroidCalibration:
    """The calibration files of one directory, looked up by an RLDS episode's `file_path`."""

    def __init__(self, directory: pathlib.Path, tables: dict[str, dict[str, Any]]) -> None:
        self.directory = directory
        self.tables = tables
        self.path_to_id = {str(path).strip("/"): eid for eid, path in tables["episode_id_to_path.json"].items()}

    @classmethod
    def load(cls, directory: str | pathlib.Path) -> "DroidCalibration":
        directory = pathlib.Path(directory)
        tables = {}
        for name in FILES:
            path = directory / name
            try:
                tables[name] = json.loads(path.read_text()) if path.exists() else {}
            except (OSError, ValueError) as error:
                raise CalibrationError(f"{path}: cannot read it as JSON ({error}); re-download DROID's calibration "
                                       "files") from None
        for name in ("episode_id_to_path.json", "camera_serials.json", "intrinsics.json"):
            if not tables[name]:
                raise CalibrationError(f"{directory}: no {name}; point calibration_dir at the directory holding "
                                       f"DROID's calibration release ({', '.join(FILES)})")
        return cls(directory, tables)

    def episode_id(self, file_path: str) -> str | None:
        """DROID's episode id of an RLDS episode's `file_path`, or None when the files do not list it."""
        relative = file_path.split(_PATH_ROOT, 1)[-1].rsplit("/trajectory", 1)[0].strip("/")
        return self.path_to_id.get(relative)

    def entries(self, file_path: str) -> dict[str, dict[str, Any]]:
        """Camera -> calibration entry for the episode at `file_path` (empty when not covered)."""
        episode = self.episode_id(file_path)
        if episode is None:
            return {}
        serials = self.tables["camera_serials.json"].get(episode) or {}
        found = {}
        for serial_key, camera in SERIAL_KEYS.items():
            serial = str(serials.get(serial_key) or "")
            entry = self._entry(episode, serial) if serial else None
            if entry is not None:
                found[camera] = entry
        return found

    def _entry(self, episode: str, serial: str) -> dict[str, Any] | None:
        extrinsic = self._extrinsic(episode, serial)
        intrinsic = (self.tables["intrinsics.json"].get(episode) or {}).get(serial)
        if extrinsic is None or not isinstance(intrinsic, dict):
            return None
        fx, cx, fy, cy = (float(v) for v in intrinsic.get("cameraMatrix", (0, 0, 0, 0)))
        width, height = int(intrinsic.get("width", 0)), int(intrinsic.get("height", 0))
        if min(fx, fy, width, height) <= 0:
            return None  # the release has some zero-filled intrinsics
        pose, source = extrinsic
        return camera_entry(width=width, height=height, k=[fx, 0.0, cx, 0.0, fy, cy, 0.0, 0.0, 1.0],
                            camera_to_base=pose_matrix(np.asarray(pose, np.float64)), source=source)

    def _extrinsic(self, episode: str, serial: str) -> tuple[list[float], str] | None:
        """(6-D pose, where it came from), the superset first."""
        superset = self.tables["cam2base_extrinsic_superset.json"].get(episode) or {}
        if serial in superset:
            return superset[serial], (f"droid:cam2base_extrinsic_superset.json {episode} {serial} (quality "
                                      f"{superset.get(f'{serial}_quality_metric')})")
        single = self.tables["cam2base_extrinsics.json"].get(episode) or {}
        if serial in single:
            return single[serial], (f"droid:cam2base_extrinsics.json {episode} {serial} (quality "
                                    f"{single.get('quality_metric')})")
        return None
