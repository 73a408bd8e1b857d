"""In-memory canonical episodes with real-looking frames, for tests of stages and shard writing."""

from __future__ import annotations

import numpy as np

from vlaforge.datasets.frames import FrameConfig, encode_jpeg
from vlaforge.datasets.schema import Camera, Episode, Lineage
from vlaforge.datasets.synth.scenes import camera_frames


def make_episode(
    episode_id: str = "synth-0001",
    n_steps: int = 40,
    *,
    idle_head: int = 0,
    idle_tail: int = 0,
    state_dim: int = 8,
    action_dim: int = 8,
    cameras: tuple[str, ...] = (Camera.EXTERIOR_1.value, Camera.WRIST.value),
    image_size: tuple[int, int] = (48, 64),
    success: bool | None = True,
    seed: int = 0,
    embodiment: str = "synth_arm",
) -> Episode:
    """A smooth random-walk episode whose state holds still for `idle_head` / `idle_tail` steps at the ends."""
    rng = np.random.default_rng(seed)
    moving = n_steps - idle_head - idle_tail
    steps = np.cumsum(rng.normal(0, 0.05, size=(moving, state_dim)), axis=0)
    state = np.concatenate([np.repeat(steps[:1], idle_head, 0), steps, np.repeat(steps[-1:], idle_tail, 0)])
    action = np.concatenate([np.diff(state, axis=0), np.zeros((1, state_dim))])[:, :action_dim]
    if action_dim > state_dim:
        action = np.pad(action, ((0, 0), (0, action_dim - state_dim)))
    frames = {
        camera: [encode_jpeg(f, FrameConfig()) for f in camera_frames(i, n_steps, *image_size)]
        for i, camera in enumerate(cameras)
    }
    return Episode(
        episode_id=episode_id,
        source="synth",
        embodiment=embodiment,
        control_rate_hz=15.0,
        timestamps=np.arange(n_steps) / 15.0,
        frames=frames,
        state=state.astype(np.float32),
        state_names=[f"joint_{i}" for i in range(state_dim)],
        action=action.astype(np.float32),
        action_names=[f"joint_velocity_{i}" for i in range(action_dim)],
        instructions=["put the red mug on the shelf", ""],
        lineage=Lineage(file="synth.tfrecord", index=f"record {seed}", source_version="0.0.1"),
        success=success,
        extras={"cartesian_position": rng.normal(size=(n_steps, 6)).astype(np.float32)},
    )
