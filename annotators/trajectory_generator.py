"""Point-trajectory samples: where the gripper will go over the next seconds, drawn as points in the image.

The path comes from geometry, not from a VLM: the end-effector poses of the coming steps projected through the
camera's calibration, or, for datasets without a calibration, per-step 2D gripper points kept as an extra array
(pixels, 0-1 or 0-1000). The calibration is a file (`calibration`, see `datasets/calibration.py`), or, without
one, what the shards carry: the calibration kept at ingest (MCAP CameraInfo and /tf_static, HDF5 attributes,
DROID's published per-episode extrinsics) in each episode's meta. The answer is a JSON list
of [x, y] points in Qwen3-VL's 0-1000 convention, the first being the gripper now.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, ClassVar

import numpy as np

from vlaforge.annotators.vlm_generator import GeneratorConfig, VlmGenerator
from vlaforge.datasets.calibration import Calibration, PinholeCamera, camera_from_entry, tool_points
from vlaforge.datasets.drops import DropReason
from vlaforge.datasets.frames import jpeg_shape
from vlaforge.datasets.qwen_coordinates import SCALE, to_qwen_point
from vlaforge.datasets.schema import Episode, MetaField, VlTask, sample_key
from vlaforge.pipelines.vl_samples import VlSample, assistant, user

_UNITS = ("pixels", "normalized", "qwen")


class TrajectoryGenerator(VlmGenerator):
    """Episode -> samples every `stride_s` seconds: the frame + instruction -> the gripper's future points."""

    task: ClassVar[VlTask] = VlTask.TRAJECTORY
    prompt_name: ClassVar[str] = "trajectory"
    needs_vlm: ClassVar[bool] = False

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(GeneratorConfig):
        calibration: str | None = None
        """Calibration JSON (see `datasets/calibration.py`): per episode and camera, intrinsics and extrinsics;
        None uses the calibration the shards carry (kept at ingest)."""
        pose_extra: str = "cartesian_position"
        """Extra array of end-effector poses [n, 6] (x, y, z, Euler xyz) in the robot base frame."""
        tool_offset: tuple[float, float, float] = (0.0, 0.0, 0.0)
        """The tracked point in the end-effector frame (metres): e.g. the fingertip centre."""
        point_extra: str | None = None
        """Extra array of 2D gripper points [n, 2] in the camera's image, used when no calibration covers it."""
        point_units: str = "pixels"
        """Units of `point_extra`: "pixels" (of the stored frame), "normalized" (0-1) or "qwen" (0-1000)."""
        horizon_s: float = 1.0
        """How far ahead the path goes."""
        points: int = 6
        """Points in the answer, evenly spaced in time over the horizon, the current one first."""
        stride_s: float = 1.0
        """Seconds between the start frames of two samples of one episode."""
        min_visible: float = 1.0
        """Share of the points that must be in front of the camera and inside the image."""

        def __post_init__(self) -> None:
            super().__post_init__()
            if self.point_units not in _UNITS:
                raise ValueError(f"TrajectoryGenerator.Config.point_units must be one of {_UNITS}, got "
                                 f"{self.point_units!r}")
            if self.horizon_s <= 0 or self.stride_s <= 0 or self.points < 2:
                raise ValueError(f"TrajectoryGenerator.Config: horizon_s and stride_s must be > 0 and points >= 2, "
                                 f"got {self.horizon_s}, {self.stride_s}, {self.points}")
            if not 0 < self.min_visible <= 1:
                raise ValueError(f"TrajectoryGenerator.Config.min_visible must be in (0, 1], got {self.min_visible}")

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.calibration: Calibration | None = None

    def setup(self) -> None:
        if self.config.calibration and self.calibration is None:
            self.calibration = Calibration.load(self.config.calibration)

    def __call__(self, batch: list[Episode]) -> list[VlSample]:
        self.setup()
        samples = []
        for episode in batch:
            frames = self.camera_frames(episode)
            path_of = self._path_source(episode) if frames is not None else None
            if path_of is None:
                continue
            for start, steps in self._windows(episode):
                sample = self._sample(episode, frames, start, steps, path_of)
                if sample is not None:
                    samples.append(sample)
        return samples

    def _windows(self, episode: Episode) -> list[tuple[int, np.ndarray]]:
        """(start step, [points] steps of its path) for every start whose whole horizon lies in the episode."""
        times, windows, next_time = episode.timestamps, [], -np.inf
        for start in range(len(episode)):
            if times[start] + self.config.horizon_s > times[-1] + 1e-9:
                break
            if times[start] + 1e-9 >= next_time:
                targets = times[start] + np.linspace(0, self.config.horizon_s, self.config.points)
                steps = np.clip(np.searchsorted(times, targets - 1e-9), 0, len(episode) - 1)
                windows.append((start, steps))
                next_time = times[start] + self.config.stride_s
        return windows

    def _path_source(self, episode: Episode):
        """A function (steps, height, width) -> (pixels [k, 2], visible [k]), with its provenance; None after a
        NO_CALIBRATION drop."""
        camera_name = self.config.camera
        camera, revision = self._camera(episode, camera_name)
        if camera is not None and self.config.pose_extra in episode.extras:
            positions = tool_points(episode.extras[self.config.pose_extra], self.config.tool_offset)

            def projected(steps: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
                scaled = camera.scaled_to(height, width)
                pixels, depth = scaled.project(positions[steps])
                return pixels, scaled.visible(pixels, depth)

            return projected, {"model": "vlaforge.projection", "revision": revision}
        if self.config.point_extra and self.config.point_extra in episode.extras:
            points = episode.extras[self.config.point_extra][:, :2].astype(np.float64)
            return self._points(points), {"model": "vlaforge.gripper-points", "revision": self.config.point_extra}
        self.ledger.drop(file=episode.lineage.file, episode=episode.episode_id, reason=DropReason.NO_CALIBRATION,
                         steps=len(episode), message=(
                             f"episode {episode.episode_id}: no calibration for camera {camera_name!r} (file: "
                             f"{self.config.calibration}; shards: {sorted(episode.calibration)}) with poses "
                             f"{self.config.pose_extra!r}, and no 2D points extra {self.config.point_extra!r}; extras "
                             f"are {sorted(episode.extras)}"))
        return None

    def _camera(self, episode: Episode, name: str) -> tuple[PinholeCamera | None, str]:
        """(the camera, what pins its calibration): the file's entry when a file is given, else the one the
        episode's shards carry."""
        if self.calibration is not None:
            return self.calibration.camera(episode.episode_id, name), self.calibration.digest
        entry = episode.calibration.get(name)
        if entry is None:
            return None, ""
        text = json.dumps(entry, sort_keys=True)
        where = f"episode {episode.episode_id}'s shard calibration of {name!r}"
        return camera_from_entry(entry, where), "shards:sha256:" + hashlib.sha256(text.encode()).hexdigest()[:16]

    def _points(self, points: np.ndarray):
        def given(steps: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
            scale = {"pixels": (1.0, 1.0), "normalized": (width, height), "qwen": (width / SCALE, height / SCALE)}
            pixels = points[steps] * np.array(scale[self.config.point_units])
            inside = (pixels >= 0).all(axis=1) & (pixels[:, 0] <= width) & (pixels[:, 1] <= height)
            return pixels, inside & np.isfinite(pixels).all(axis=1)

        return given

    def _sample(self, episode: Episode, frames: list[bytes], start: int, steps: np.ndarray,
                path_of: tuple[Any, dict[str, str]]) -> VlSample | None:
        key = sample_key(episode.episode_id, episode.first_step + start)
        if not episode.instruction:
            self.ledger.drop(file=episode.lineage.file, episode=key, reason=DropReason.NO_INSTRUCTION,
                             message=f"{key}: the trajectory question quotes the instruction; the episode has none")
            return None
        height, width = jpeg_shape(frames[start])
        project, origin = path_of
        pixels, visible = project(steps, height, width)
        if visible.mean() < self.config.min_visible:
            self.ledger.drop(file=episode.lineage.file, episode=key, reason=DropReason.TRAJECTORY_OUT_OF_VIEW,
                             message=f"{key}: {int(visible.sum())} of {len(visible)} path points are in view of "
                                     f"{self.config.camera!r}; min_visible is {self.config.min_visible}")
            return None
        answer = json.dumps([to_qwen_point(p, height, width) for p in pixels], separators=(", ", ": "))
        seconds = f"{self.config.horizon_s:g}"
        question = self.prompt.question(key, instruction=episode.instruction, seconds=seconds)
        settings = {"horizon_s": self.config.horizon_s, "points": self.config.points,
                    "tool_offset": list(self.config.tool_offset), "point_units": self.config.point_units}
        return self.sample(
            key=f"{key}_{self.config.camera}", images=[frames[start]],
            conversation=[user(None, question), assistant(answer)], source_key=key, source_group=episode.episode_id,
                split=episode.flags.get(MetaField.SPLIT.value),
            provenance=[{**origin, "prompt_version": self.prompt.tag, "settings": settings}],
            extra={"camera": self.config.camera, "steps": [episode.first_step + int(s) for s in steps],
                   "pixels": [[round(float(x), 2), round(float(y), 2)] for x, y in pixels]},
        )
