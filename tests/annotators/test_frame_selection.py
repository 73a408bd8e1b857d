"""Frame selection: first, every k-th and gripper key frames, per camera; frames that do not decode are quarantined."""

import numpy as np
import pytest

from vlaforge.annotators.frame_selection import FrameSelector, gripper_key_steps
from vlaforge.datasets.synth.episodes import make_episode


def _with_gripper(episode, signal):
    episode.state = np.concatenate([episode.state, np.asarray(signal, np.float32)[:, None]], axis=1)
    episode.state_names = [*episode.state_names, "gripper_position_0"]
    return episode


def test_gripper_key_steps_find_closing_and_opening():
    signal = np.r_[np.zeros(5), np.ones(6), np.zeros(4)]
    assert gripper_key_steps(signal, threshold=None, min_range=0.05, closed_high=True) == [
        (5, "gripper_close"), (11, "gripper_open")]
    assert gripper_key_steps(signal, threshold=None, min_range=0.05, closed_high=False) == [
        (5, "gripper_open"), (11, "gripper_close")]
    noisy = 0.5 + 0.001 * np.sin(np.arange(20))
    assert gripper_key_steps(noisy, threshold=None, min_range=0.05, closed_high=True) == []


def test_selector_takes_first_and_gripper_frames_for_every_camera():
    episode = _with_gripper(make_episode("ep-7", n_steps=20), np.r_[np.zeros(8), np.ones(12)])
    episode.first_step = 100
    episode.flags["split"] = "validation"
    frames = FrameSelector.Config(policies=("first", "gripper"), dataset="droid").build()([episode])
    assert [(f.step, f.camera, f.selected_by) for f in frames] == [
        (100, "exterior_1", "first"), (100, "wrist", "first"),
        (108, "exterior_1", "gripper_close"), (108, "wrist", "gripper_close")]
    assert frames[0].pixels.shape == (48, 64, 3) and frames[0].jpeg == episode.frames["exterior_1"][0]
    assert frames[2].source_key == "ep-7_000108" and frames[2].image_key == "ep-7_000108_exterior_1"
    assert frames[0].dataset == "droid" and frames[0].instructions == ["put the red mug on the shelf"]
    assert {f.split for f in frames} == {"validation"}


def test_every_k_one_camera_and_the_cap():
    episode = make_episode("ep-1", n_steps=25)
    stage = FrameSelector.Config(policies=("every_k",), every_k=10, cameras=("wrist",), max_frames=2).build()
    assert [(f.step, f.camera) for f in stage([episode])] == [(0, "wrist"), (10, "wrist")]


def test_episode_without_a_gripper_dimension_keeps_its_other_policies():
    frames = FrameSelector.Config(policies=("first", "gripper"), cameras=("wrist",)).build()([make_episode()])
    assert [f.selected_by for f in frames] == ["first"]
    with pytest.raises(ValueError, match="no state dimension named 'claw'"):
        FrameSelector.Config(gripper_dimension="claw").build()([make_episode()])


def test_a_frame_that_does_not_decode_is_quarantined_and_the_rest_go_on():
    episode = make_episode("ep-bad", n_steps=5)
    episode.frames["wrist"][0] = b"\xff\xd8 this is not a jpeg \xff\xd9"
    stage = FrameSelector.Config(policies=("first",)).build()
    frames = stage([episode])
    assert [f.camera for f in frames] == ["exterior_1"]
    (drop,) = stage.ledger.take()
    assert drop.quarantined and drop.reason.value == "bad_image" and "step 0 camera wrist" in drop.message


def test_config_validation():
    with pytest.raises(ValueError, match="policies must be a non-empty subset"):
        FrameSelector.Config(policies=("random",))
