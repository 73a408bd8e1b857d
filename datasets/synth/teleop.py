"""A synthetic bimanual teleop recording: what the MCAP and HDF5 writers write, and what a test compares against.

The motion is smooth and known in closed form: each of the 14 dimensions (per arm 6 joints and a gripper in
[0, 1]) is a slow sinusoid around a home pose. The operator moves the leader arms (the action); the follower arms
(the state) track them with a small lag. Sensors tick on their own clocks, like a real rig:

- cameras near 30 Hz, each frame's stamp jittered by about 1.5 ms, and now and then a frame dropped;
- joint states at 200 Hz with a little jitter, one stream per arm and role;
- every stream starts and stops at a slightly different time;
- each message is logged (its MCAP log time) a few milliseconds after its header stamp.

Frames are real-looking: each camera pans slowly across a different photo (`scenes.camera_frames`), JPEG-encoded.
A recording can also tick on one shared clock at a fixed rate (ALOHA's 50 Hz), with every stream the same length.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import simplejpeg

from vlaforge.datasets.bimanual import ARMS, ARM_JOINTS
from vlaforge.datasets.synth.scenes import camera_frames
from vlaforge.datasets.timeline import NS_PER_S

CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")
"""ALOHA's camera names, in its recorder's order."""
INSTRUCTIONS = (
    "take the red brick off the tower and put it in the bin",
    "fold the towel in half, then in half again",
    "pick up the blue cup with the left arm and hand it to the right arm",
    "take the lego wheel off the car",
)
_HOME = np.array([0.0, -0.96, 1.16, 0.0, -0.3, 0.0])
_JOINTS = len(ARM_JOINTS)


@dataclasses.dataclass(frozen=True)
class Motion:
    """Leader and follower joint positions [m, 14] as functions of time (seconds from the recording start)."""

    amplitude: np.ndarray
    frequency_hz: np.ndarray
    phase: np.ndarray
    lag_s: float = 0.04
    """How far the followers trail the leaders."""

    @classmethod
    def random(cls, rng: np.random.Generator) -> "Motion":
        dims = 2 * _JOINTS
        return cls(rng.uniform(0.1, 0.5, dims), rng.uniform(0.08, 0.35, dims), rng.uniform(0, 2 * np.pi, dims))

    def leader(self, t_s: np.ndarray) -> np.ndarray:
        angle = 2 * np.pi * self.frequency_hz * np.asarray(t_s, dtype=np.float64)[:, None] + self.phase
        values = np.tile(np.append(_HOME, 0.5), 2) + self.amplitude * np.sin(angle)
        gripper = [_JOINTS - 1, 2 * _JOINTS - 1]
        values[:, gripper] = 0.5 + 0.45 * np.sin(angle[:, gripper])  # normalized gripper opening in [0.05, 0.95]
        return values

    def follower(self, t_s: np.ndarray) -> np.ndarray:
        return self.leader(np.asarray(t_s) - self.lag_s)

    def follower_velocity(self, t_s: np.ndarray) -> np.ndarray:
        angle = 2 * np.pi * self.frequency_hz * (np.asarray(t_s, dtype=np.float64)[:, None] - self.lag_s) + self.phase
        scale = self.amplitude.copy()
        scale[[_JOINTS - 1, 2 * _JOINTS - 1]] = 0.45
        return scale * 2 * np.pi * self.frequency_hz * np.cos(angle)


@dataclasses.dataclass
class JointTrack:
    """One arm's joint stream: header stamps and log times [m] int64 ns, position and velocity [m, 7]."""

    stamps: np.ndarray
    log: np.ndarray
    position: np.ndarray
    velocity: np.ndarray


@dataclasses.dataclass
class CameraTrack:
    """One camera's stream: header stamps and log times [m] int64 ns, and one JPEG per stamp."""

    stamps: np.ndarray
    log: np.ndarray
    jpeg: list[bytes]


@dataclasses.dataclass
class TeleopRecording:
    """Everything a writer writes for one episode; tests damage it before writing (swap stamps, cut frames)."""

    start_ns: int
    instruction: str
    cameras: dict[str, CameraTrack]
    """ALOHA camera name -> track."""
    follower: dict[str, JointTrack]
    """Arm ("left", "right") -> track: the state."""
    leader: dict[str, JointTrack]
    """Arm -> track: the action."""
    motion: Motion


def _clock(rng: np.random.Generator, start_ns: int, duration_s: float, hz: float, jitter_ms: float,
           drop_rate: float, fixed: bool) -> np.ndarray:
    """[m] int64 strictly increasing stamps of one sensor."""
    if fixed:
        return start_ns + np.rint(np.arange(int(round(duration_s * hz))) * NS_PER_S / hz).astype(np.int64)
    head, tail = rng.uniform(0.0, 0.04, 2)
    count = int((duration_s - head - tail) * hz)
    ideal = (head + np.arange(count) / hz) * NS_PER_S
    jitter = np.clip(rng.normal(0.0, jitter_ms, count), -3 * jitter_ms, 3 * jitter_ms) * 1e6
    stamps = start_ns + np.rint(ideal + jitter).astype(np.int64)
    keep = rng.random(count) >= drop_rate
    keep[:2] = keep[-2:] = True  # a dropped first or last frame would only shorten the recording
    return stamps[keep]


def _log_times(rng: np.random.Generator, stamps: np.ndarray, latency_ms: float) -> np.ndarray:
    """When each message reached the recorder: a little after its stamp, never out of order within a topic."""
    log = stamps + np.rint(rng.uniform(0.5, 1.5, len(stamps)) * latency_ms * 1e6).astype(np.int64)
    return np.maximum.accumulate(log + np.arange(len(log))) - np.arange(len(log))


def make_recording(
    seed: int = 0,
    duration_s: float = 4.0,
    *,
    camera_hz: float = 30.0,
    joint_hz: float = 200.0,
    image_size: tuple[int, int] = (96, 128),
    drop_rate: float = 0.03,
    fixed_rate_hz: float | None = None,
    shared_arm_clock: bool = False,
    cameras: tuple[str, ...] = CAMERAS,
) -> TeleopRecording:
    """One recording. `fixed_rate_hz` puts every stream on one jitter-free clock (the ALOHA HDF5 layout);
    `shared_arm_clock` gives both arms of a role the same stamps (one 14-D dataset per role in HDF5)."""
    rng = np.random.default_rng([seed, 4242])
    motion = Motion.random(rng)
    start_ns = (1_760_000_000 + 3600 * seed) * NS_PER_S + int(rng.integers(0, NS_PER_S))
    fixed = fixed_rate_hz is not None

    def joints(role: str) -> dict[str, JointTrack]:
        tracks, stamps = {}, None
        for arm in ARMS:
            if stamps is None or not (shared_arm_clock or fixed):
                stamps = _clock(rng, start_ns, duration_s, fixed_rate_hz or joint_hz, 0.1, 0.0, fixed)
            t_s = (stamps - start_ns) / NS_PER_S
            columns = slice(0, _JOINTS) if arm == ARMS[0] else slice(_JOINTS, 2 * _JOINTS)
            position = (motion.follower(t_s) if role == "follower" else motion.leader(t_s))[:, columns]
            velocity = motion.follower_velocity(t_s)[:, columns] if role == "follower" else np.zeros_like(position)
            tracks[arm] = JointTrack(stamps, _log_times(rng, stamps, 1.0), position, velocity)
        return tracks

    tracks = {}
    for index, camera in enumerate(cameras):
        stamps = _clock(rng, start_ns, duration_s, fixed_rate_hz or camera_hz, 1.5, drop_rate, fixed)
        pixels = camera_frames(seed + index, len(stamps), *image_size)
        jpeg = [simplejpeg.encode_jpeg(frame, quality=90, colorspace="RGB") for frame in pixels]
        tracks[camera] = CameraTrack(stamps, _log_times(rng, stamps, 8.0), jpeg)
    return TeleopRecording(start_ns, INSTRUCTIONS[seed % len(INSTRUCTIONS)], tracks, joints("follower"),
                           joints("leader"), motion)
