"""A pick-and-place episode whose events are known, and a calibration of a camera that sees it.

For tests and benchmarks of the embodied-reasoning generators: 90 steps at 15 Hz. The end effector reaches along
+x (steps 0-29), the gripper closes at step 30, it carries along +x (30-59), holds still (60-69), places along +y
(70-79), the gripper opens at step 80, and it retreats along +y (80-89). Speeds are 0.1 m/s while moving. An
overhead camera 1 m above (0.5, 0, 0), looking straight down, sees the whole path.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np

from vlaforge.datasets.calibration import CALIBRATION_FORMAT
from vlaforge.datasets.frames import FrameConfig, encode_jpeg
from vlaforge.datasets.schema import Camera, Episode, Lineage
from vlaforge.datasets.synth.scenes import camera_frames

RATE_HZ = 15.0
STEPS = 90
CLOSES_AT, PAUSE, OPENS_AT = 30, (60, 70), 80
START = np.array([0.4, -0.05, 0.2])
"""End-effector position at step 0, metres in the robot base frame."""
DOWN = (np.pi, 0.0, 0.0)
"""End-effector (and overhead camera) orientation: pointing down."""
OVERHEAD = {
    "intrinsics": {"fx": 400.0, "fy": 400.0, "cx": 319.5, "cy": 239.5, "width": 640, "height": 480},
    "extrinsics": [0.5, 0.0, 1.0, *DOWN],
}
"""Calibration entry of the overhead camera (intrinsics for 640x480; frames of any size with that aspect)."""


def pick_place_positions() -> np.ndarray:
    """[90, 3] end-effector positions of the episode."""
    velocity = np.zeros((STEPS, 3))
    velocity[:PAUSE[0], 0] = 0.1
    velocity[PAUSE[1] :, 1] = 0.1
    return START + np.concatenate([np.zeros((1, 3)), np.cumsum(velocity[:-1] / RATE_HZ, axis=0)])


def pick_place_episode(episode_id: str = "pick-place-0001", *, seed: int = 0, image_size: tuple[int, int] = (96, 128),
                       instruction: str = "put the red mug on the shelf",
                       cameras: tuple[str, ...] = (Camera.EXTERIOR_1.value, Camera.WRIST.value)) -> Episode:
    """The episode, with `gripper_position` as the last state dimension and `cartesian_position` [n, 6] poses."""
    rng = np.random.default_rng(seed)
    positions = pick_place_positions()
    gripper = np.zeros(STEPS)
    gripper[CLOSES_AT:OPENS_AT] = 1.0
    joints = np.cumsum(rng.normal(0, 0.01, size=(STEPS, 7)), axis=0)
    state = np.concatenate([joints, gripper[:, None]], axis=1).astype(np.float32)
    action = np.concatenate([np.diff(state, axis=0), np.zeros((1, 8))]).astype(np.float32)
    frames = {camera: [encode_jpeg(f, FrameConfig()) for f in camera_frames(seed + i, STEPS, *image_size)]
              for i, camera in enumerate(cameras)}
    poses = np.concatenate([positions, np.tile(DOWN, (STEPS, 1))], axis=1)
    return Episode(
        episode_id=episode_id, source="synth", embodiment="franka", control_rate_hz=RATE_HZ,
        timestamps=np.arange(STEPS) / RATE_HZ, frames=frames, state=state,
        state_names=[f"joint_position_{i}" for i in range(7)] + ["gripper_position"], action=action,
        action_names=[f"joint_velocity_{i}" for i in range(7)] + ["gripper_position"], instructions=[instruction],
        lineage=Lineage(file="synth-pick-place", index=episode_id, source_version="1"), success=True,
        extras={"cartesian_position": poses.astype(np.float32)},
    )


def write_calibration(path: str | pathlib.Path, *, episode: str = "*", camera: str = Camera.EXTERIOR_1.value,
                      entry: dict | None = None) -> pathlib.Path:
    """A calibration file holding the overhead camera (or `entry`) for `episode` ("*": every episode)."""
    path = pathlib.Path(path)
    path.write_text(json.dumps({"format": CALIBRATION_FORMAT, "episodes": {episode: {camera: entry or OVERHEAD}}},
                               indent=1))
    return path
