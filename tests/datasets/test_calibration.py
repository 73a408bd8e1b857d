"""Pinhole projection against hand-computed projections, DROID's Euler convention against scipy, calibration files."""

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from vlaforge.datasets.calibration import (
    Calibration,
    CalibrationError,
    PinholeCamera,
    euler_xyz_matrix,
    pose_matrix,
    tool_points,
)
from vlaforge.datasets.qwen_coordinates import to_qwen_point

# A camera 1 m above the base at x = 0.5, looking straight down (rotated pi about x): camera x = base x,
# camera y = -base y, camera z = -base z.
DOWN = [0.5, 0.0, 1.0, np.pi, 0.0, 0.0]


def _camera(**overrides):
    values = dict(fx=400.0, fy=400.0, cx=319.5, cy=239.5, width=640, height=480, camera_to_base=pose_matrix(DOWN))
    return PinholeCamera(**{**values, **overrides})


def test_projection_matches_the_hand_computed_pixel():
    # P = (0.6, 0.1, 0.2): relative to the camera (0.1, 0.1, -0.8) -> camera frame (0.1, -0.1, 0.8).
    # u = 400 * 0.1 / 0.8 + 319.5 = 369.5 (pixel centre) -> 370.0 continuous; v = -50 + 239.5 = 189.5 -> 190.0.
    pixels, depth = _camera().project(np.array([[0.6, 0.1, 0.2]]))
    np.testing.assert_allclose(pixels, [[370.0, 190.0]], atol=1e-9)
    np.testing.assert_allclose(depth, [0.8])
    assert to_qwen_point(pixels[0], 480, 640) == [578, 396]  # 370/640, 190/480 of 1000


def test_point_under_the_camera_lands_on_the_principal_point_and_behind_is_invisible():
    camera = _camera()
    pixels, depth = camera.project(np.array([[0.5, 0.0, 0.3], [0.5, 0.0, 1.5], [3.0, 0.0, 0.0]]))
    np.testing.assert_allclose(pixels[0], [320.0, 240.0])  # the image centre, continuous
    assert depth[1] < 0
    assert camera.visible(pixels, depth).tolist() == [True, False, False]  # behind; far outside the image


def test_intrinsics_rescale_with_the_frame():
    small = _camera().scaled_to(240, 320)
    assert (small.fx, small.cx, small.cy) == (200.0, 159.5, 119.5)
    pixels, _ = small.project(np.array([[0.6, 0.1, 0.2]]))
    np.testing.assert_allclose(pixels, [[185.0, 95.0]], atol=1e-9)  # half of (370, 190)


def test_euler_convention_is_scipy_xyz_as_droid_uses():
    rng = np.random.default_rng(3)
    for angles in rng.uniform(-np.pi, np.pi, size=(20, 3)):
        np.testing.assert_allclose(euler_xyz_matrix(angles), Rotation.from_euler("xyz", angles).as_matrix(), atol=1e-12)


def test_tool_offset_turns_with_the_end_effector():
    poses = np.array([[0.4, 0.0, 0.3, 0.0, 0.0, np.pi / 2]])  # yawed 90 degrees: tool x points along base y
    np.testing.assert_allclose(tool_points(poses, (0.1, 0.0, 0.0)), [[0.4, 0.1, 0.3]], atol=1e-12)
    np.testing.assert_allclose(tool_points(poses, (0, 0, 0)), [[0.4, 0.0, 0.3]])


def test_calibration_file_by_episode_then_default(tmp_path):
    intrinsics = {"fx": 400, "fy": 400, "cx": 319.5, "cy": 239.5, "width": 640, "height": 480}
    path = tmp_path / "calibration.json"
    path.write_text(json.dumps({"format": "vlaforge-calibration/1", "episodes": {
        "*": {"exterior_1": {"intrinsics": intrinsics, "extrinsics": DOWN}},
        "ep-7": {"exterior_1": {"intrinsics": {**intrinsics, "fx": 500}, "camera_to_base": pose_matrix(DOWN).tolist()}},
    }}))
    calibration = Calibration.load(path)
    assert calibration.camera("ep-7", "exterior_1").fx == 500
    assert calibration.camera("ep-1", "exterior_1").fx == 400
    assert calibration.camera("ep-1", "wrist") is None
    assert calibration.digest.startswith("sha256:")
    no_intrinsics = {"*": {"wrist": {"extrinsics": DOWN}}}
    path.write_text(json.dumps({"format": "vlaforge-calibration/1", "episodes": no_intrinsics}))
    with pytest.raises(CalibrationError, match=r"episodes\['\*'\]\['wrist'\]: needs intrinsics"):
        Calibration.load(path)
