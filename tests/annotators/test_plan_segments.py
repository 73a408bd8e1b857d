"""Plan segmentation on trajectories with known gripper events and pauses."""

import numpy as np
import pytest

from vlaforge.annotators.plan_segments import (
    Boundary,
    Segment,
    SegmentationConfig,
    gripper_closed,
    pauses,
    segment,
    segment_episode,
)
from vlaforge.datasets.synth.episodes import make_episode

RATE = 15.0


def _trajectory():
    """90 steps at 15 Hz: reach (0-29), grasp at 30, carry (30-59), hold still (60-69), place (70-79), release at
    80, retreat (80-89). Speeds are 0.1 m/s while moving."""
    n = 90
    velocity = np.zeros((n, 3))
    velocity[:60, 0] = 0.1
    velocity[70:, 1] = 0.1
    positions = np.concatenate([[[0.0, 0.0, 0.0]], np.cumsum(velocity[:-1] / RATE, axis=0)])
    gripper = np.zeros(n)
    gripper[30:80] = 1.0
    return gripper, positions, np.arange(n) / RATE


def test_known_gripper_events_and_pause_cut_the_episode():
    gripper, positions, times = _trajectory()
    segments = segment_episode(gripper, positions, times, SegmentationConfig())
    assert segments == [
        Segment(0, 30, Boundary.GRIPPER_CLOSES),
        Segment(30, 60, Boundary.PAUSE),
        Segment(60, 80, Boundary.GRIPPER_OPENS),
        Segment(80, 90, Boundary.EPISODE_END),
    ]


def test_noise_around_the_threshold_is_not_an_event():
    rng = np.random.default_rng(0)
    signal = 0.5 + rng.uniform(-0.08, 0.08, size=200)
    signal[0] = 0.2  # clearly open at the start
    assert len(set(gripper_closed(signal, 0.5, 0.1))) == 1
    signal[100:] = 0.95
    closed = gripper_closed(signal, 0.5, 0.1)
    assert np.flatnonzero(closed[1:] != closed[:-1]).tolist() == [99]


def test_a_flickering_grasp_merges_into_one_segment_ending_at_the_last_close():
    gripper, positions, times = _trajectory()
    gripper[33:36] = 0.0  # a re-grasp right after the grasp: two extra events 0.2 s apart
    segments = segment_episode(gripper, positions, times, SegmentationConfig(min_segment_s=0.5))
    assert segments[0] == Segment(0, 36, Boundary.GRIPPER_CLOSES)
    assert [s.stop for s in segments] == [36, 60, 80, 90]


def test_stillness_touching_the_episode_ends_is_waiting_not_a_pause():
    times = np.arange(60) / RATE
    positions = np.zeros((60, 3))
    positions[20:40, 0] = np.arange(1, 21) * 0.1 / RATE  # still 0-19, moving 20-39, still again 40-59
    positions[40:, 0] = positions[39, 0]
    assert pauses(positions, times, 0.01, 0.4) == []
    positions[28:36, 0] = positions[27, 0]  # a 0.53 s stop in the middle
    positions[36:40, 0] = positions[27, 0] + np.arange(1, 5) * 0.1 / RATE
    positions[40:, 0] = positions[39, 0]
    assert pauses(positions, times, 0.01, 0.4) == [(27, 36)]


def test_segment_reads_the_episode_gripper_dimension_and_pose_extra():
    episode = make_episode(n_steps=90)
    gripper, positions, _ = _trajectory()
    episode.state[:, -1] = gripper
    episode.state_names[-1] = "gripper_position"
    episode.extras["cartesian_position"] = np.concatenate([positions, np.zeros((90, 3))], axis=1).astype(np.float32)
    assert [s.ends_with for s in segment(episode, SegmentationConfig())] == [
        Boundary.GRIPPER_CLOSES, Boundary.PAUSE, Boundary.GRIPPER_OPENS, Boundary.EPISODE_END]
    with pytest.raises(ValueError, match="min_pause_s must be >= 0"):
        SegmentationConfig(min_pause_s=-1)
