"""Trajectory generator: the gripper's future path projected through a calibration (checked against hand-computed
pixels), a 2D point source when there is no calibration, and named drops."""

import json

import numpy as np
import pytest

from vlaforge.annotators.trajectory_generator import TrajectoryGenerator
from vlaforge.datasets.drops import DropReason
from vlaforge.datasets.schema import sample_key
from vlaforge.datasets.synth.pick_place import OVERHEAD, pick_place_episode, write_calibration


def _stage(**options):
    stage = TrajectoryGenerator.Config(dataset="robot-traces", **options).build()
    stage.setup()
    return stage


def test_projected_path_matches_hand_computed_pixels(tmp_path):
    calibration = write_calibration(tmp_path / "calibration.json")
    samples = _stage(calibration=str(calibration), horizon_s=1.0, points=6, stride_s=1.0)([pick_place_episode("ep-1")])
    # Starts every second while a whole second of path remains: t = 0, 1, 2, 3, 4 s (t = 5 s would need 6.0 s).
    assert [s.key for s in samples] == [f"{sample_key('ep-1', step)}_exterior_1" for step in (0, 15, 30, 45, 60)]
    first = samples[0]
    meta = json.loads(first.members["meta.json"])
    assert meta["extra"]["steps"] == [0, 3, 6, 9, 12, 15]
    # By hand: the end effector is at x = 0.4 + 0.1 t, y = -0.05, z = 0.2; the camera 1 m up at x = 0.5 looks down,
    # so a point is (x - 0.5, 0.05, 0.8) in the camera frame: u = 400 (x - 0.5) / 0.8 + 319.5 + 0.5, v = 265 in
    # the 640x480 calibration image, i.e. u / 5 and 53 in the stored 128x96 frame.
    hand = [[(400 * (x - 0.5) / 0.8 + 320) / 5, 53.0] for x in 0.4 + 0.1 * np.array([0, 3, 6, 9, 12, 15]) / 15]
    np.testing.assert_allclose(meta["extra"]["pixels"], hand, atol=0.01)
    answer = json.loads(json.loads(first.members["conversation.json"])[1]["content"][0]["text"])
    assert answer[0] == [422, 552] and answer[-1] == [500, 552]  # 54/128 and 64/128, 53/96 of 1000
    assert [x for x, _ in answer] == sorted(x for x, _ in answer)  # moving right in the image, as in the world
    provenance = meta["provenance"][0]
    assert provenance["model"] == "vlaforge.projection" and provenance["revision"].startswith("sha256:")
    assert provenance["prompt_version"] == "trajectory@v1"
    question = json.loads(first.members["conversation.json"])[0]["content"][1]["text"]
    assert "put the red mug on the shelf" in question and "1 seconds" in question


def test_points_from_a_2d_source_when_no_calibration_covers_the_episode(tmp_path):
    calibration = write_calibration(tmp_path / "calibration.json", episode="another-episode")
    episode = pick_place_episode("ep-2")
    episode.extras["gripper_point"] = np.stack([np.linspace(0.1, 0.9, 90), np.full(90, 0.5)], axis=1)
    stage = _stage(calibration=str(calibration), point_extra="gripper_point", point_units="normalized", points=3,
                   horizon_s=2.0, stride_s=10.0)
    [sample] = stage([episode])
    answer = json.loads(json.loads(sample.members["conversation.json"])[1]["content"][0]["text"])
    assert answer == [[100, 500], [235, 500], [370, 500]]  # 0.1 + 0.8 * step / 89 at steps 0, 15, 30, as 0-1000
    assert json.loads(sample.members["meta.json"])["provenance"][0]["model"] == "vlaforge.gripper-points"


def test_no_calibration_and_out_of_view_are_named_drops(tmp_path):
    stage = _stage(point_extra="gripper_point")
    assert stage([pick_place_episode("ep-3")]) == []
    [drop] = stage.ledger.take()
    assert drop.reason == DropReason.NO_CALIBRATION and "no 2D points extra 'gripper_point'" in drop.message
    looking_up = {**OVERHEAD, "extrinsics": [0.5, 0.0, 1.0, 0.0, 0.0, 0.0]}  # the path is behind this camera
    calibration = write_calibration(tmp_path / "up.json", entry=looking_up)
    stage = _stage(calibration=str(calibration), stride_s=2.0)
    assert stage([pick_place_episode("ep-4")]) == []
    drops = stage.ledger.take()
    assert {d.reason for d in drops} == {DropReason.TRAJECTORY_OUT_OF_VIEW} and len(drops) == 3
    assert "0 of 6 path points are in view" in drops[0].message


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match="point_units must be one of"):
        TrajectoryGenerator.Config(dataset="d", point_units="mm")
    with pytest.raises(ValueError, match="points >= 2"):
        TrajectoryGenerator.Config(dataset="d", points=1)
