"""DROID's calibration release as its JSON files lay it out (KarlP/droid on the hub), for episodes written by
`synth/droid.py`: `episode_id_to_path.json`, `camera_serials.json`, `cam2base_extrinsic_superset.json` (both
exterior cameras, with per-serial quality metrics), `cam2base_extrinsics.json` (one camera, top-level metrics) and
`intrinsics.json` (`cameraMatrix` [fx, cx, fy, cy] of the 1280x720 left image). Episode ids have DROID's form
`<lab>+<8 hex>+<date>-<h>h-<m>m-<s>s`. The last episode is left out of every file (not every episode is covered),
and one intrinsics entry is zero-filled, as some of the release's are.
"""

from __future__ import annotations

import hashlib
import json
import pathlib

import numpy as np

EXTRINSICS = {"ext1": [0.5, 0.0, 1.0, float(np.pi), 0.0, 0.0], "ext2": [0.5, 0.6, 0.8, 2.4, 0.0, 0.0]}
"""The exterior cameras' poses in the base frame [x, y, z, rx, ry, rz] (one rig for every episode here): the first
overhead, looking down at the workspace; the second from the side."""
INTRINSICS = {"cameraMatrix": [800.0, 639.5, 800.0, 359.5], "width": 1280, "height": 720}


def droid_episode_id(path: str) -> str:
    """A DROID-style episode id for an episode path (`<lab>/success/<date>/<time>`)."""
    lab = path.split("/")[0]
    return f"{lab}+{hashlib.sha1(path.encode()).hexdigest()[:8]}+2023-07-01-10h-{len(path) % 60:02d}m-00s"


def write_droid_calibration(directory: str | pathlib.Path, file_paths: list[str]) -> pathlib.Path:
    """The release's files for the episodes whose RLDS `file_path`s are given (all but the last); returns the
    directory."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    id_to_path, serials, superset, single, intrinsics = {}, {}, {}, {}, {}
    for index, file_path in enumerate(file_paths[:-1]):
        path = file_path.split("r2d2-data-full/", 1)[1].removesuffix("/trajectory.h5")
        episode = droid_episode_id(path)
        ext1, ext2 = f"{22000000 + index}", f"{23000000 + index}"
        id_to_path[episode] = path
        serials[episode] = {"ext1_cam_serial": ext1, "ext2_cam_serial": ext2, "wrist_cam_serial": f"{18000000 + index}"}
        superset[episode] = {ext1: EXTRINSICS["ext1"], f"{ext1}_quality_metric": 0.93, f"{ext1}_metric_type": "iou",
                             ext2: EXTRINSICS["ext2"], f"{ext2}_quality_metric": 0.88, f"{ext2}_metric_type": "iou"}
        single[episode] = {ext1: list(np.asarray(EXTRINSICS["ext1"]) + 0.01), "quality_metric": 0.8,
                           "metric_type": "iou"}
        zeroed = index == 1
        intrinsics[episode] = {ext1: INTRINSICS, ext2: {"cameraMatrix": [0.0, 0.0, 0.0, 0.0], "width": 0,
                                                        "height": 0} if zeroed else INTRINSICS}
    for name, table in (("episode_id_to_path.json", id_to_path), ("camera_serials.json", serials),
                        ("cam2base_extrinsic_superset.json", superset), ("cam2base_extrinsics.json", single),
                        ("intrinsics.json", intrinsics)):
        (directory / name).write_text(json.dumps(table))
    return directory
