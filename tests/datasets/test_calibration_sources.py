"""Camera calibration kept at ingest: MCAP CameraInfo and /tf_static, HDF5 attributes, DROID's published
per-episode calibration; it travels in the shards' meta and old shards without it still read."""

import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from vlaforge.datasets.calibration import CalibrationError, FrameTree, camera_from_entry, pose_matrix
from vlaforge.datasets.droid_calibration import DroidCalibration
from vlaforge.datasets.droid_rlds import DroidRldsSource
from vlaforge.datasets.drops import DropLedger
from vlaforge.datasets.synth.droid import episode_paths, write_droid_dataset
from vlaforge.datasets.synth.droid_calibration import EXTRINSICS, write_droid_calibration
from vlaforge.datasets.synth.teleop import make_recording
from vlaforge.datasets.synth.teleop_hdf5 import write_aloha_hdf5
from vlaforge.datasets.synth.teleop_mcap import STATIC_TRANSFORMS, write_teleop_mcap, write_teleop_mcap_dataset
from vlaforge.datasets.teleop_hdf5 import TeleopHdf5Source
from vlaforge.datasets.teleop_mcap import TeleopMcapSource


def _episodes(source):
    ledger = DropLedger()
    episodes = [e for unit in source.plan() for e in source.read(unit, ledger)]
    return episodes, ledger.take()


def _expected_overhead_pose():
    """base_link -> cam_high_link -> cam_high_optical_frame, composed with scipy (independently of FrameTree)."""
    pose = np.eye(4)
    for _, _, translation, rotation in STATIC_TRANSFORMS:
        step = np.eye(4)
        step[:3, :3] = Rotation.from_quat(rotation).as_matrix()  # scipy takes (x, y, z, w), as ROS does
        step[:3, 3] = translation
        pose = pose @ step
    return pose


def test_mcap_camera_info_and_tf_static_calibrate_the_overhead_camera(tmp_path):
    root = write_teleop_mcap_dataset(tmp_path / "mcap", n_episodes=1)
    (episode,), drops = _episodes(TeleopMcapSource.Config(root=str(root)).build())
    assert not drops
    entry = episode.calibration["exterior_1"]
    assert entry["intrinsics"] == {"fx": 102.4, "fy": 102.4, "cx": 63.5, "cy": 47.5, "width": 128, "height": 96}
    np.testing.assert_allclose(entry["camera_to_base"], _expected_overhead_pose(), atol=1e-6)
    assert entry["distortion"]["model"] == "plumb_bob" and entry["source"].startswith("mcap:episode_0000.mcap")
    camera = camera_from_entry(entry, "test")
    pixels, depth = camera.project(np.array([[1.2, 0.0, 0.0], [0.45, 0.0, 1.5]]))  # on the floor ahead; above
    assert depth[0] > 0 and camera.visible(pixels[:1], depth[:1]).all() and depth[1] < 0
    missing = episode.flags["calibration_missing"]
    assert set(missing) == {"left_wrist", "right_wrist"} and "no /tf_static chain" in missing["left_wrist"]


def test_mcap_calibration_topics_and_frames_can_be_named_and_missing_ones_are_said(tmp_path):
    write_teleop_mcap(tmp_path / "mcap" / "plain.mcap", make_recording(0, 1.0), camera_info=False)
    (plain,), _ = _episodes(TeleopMcapSource.Config(root=str(tmp_path / "mcap")).build())
    assert plain.calibration == {} and plain.flags["calibration_missing"]["exterior_1"] == "no CameraInfo message"
    root = write_teleop_mcap_dataset(tmp_path / "other", n_episodes=1)
    source = TeleopMcapSource.Config(root=str(root), base_frame="world",
                                     camera_info_topics={"/cam_high/camera_info": "exterior_1"}).build()
    (episode,), _ = _episodes(source)
    assert episode.calibration == {} and "to 'world'" in episode.flags["calibration_missing"]["exterior_1"]


def test_hdf5_attributes_calibrate_their_camera(tmp_path):
    k = np.array([[90.0, 0, 63.5], [0, 90.0, 47.5], [0, 0, 1]])
    pose = pose_matrix([0.5, 0.0, 1.0, np.pi, 0.0, 0.0])
    write_aloha_hdf5(tmp_path / "aloha" / "episode_0.hdf5", make_recording(0, 1.0, fixed_rate_hz=50.0,
                                                                           shared_arm_clock=True),
                     calibration={"cam_high": (k, pose)})
    (episode,), _ = _episodes(TeleopHdf5Source.Config(root=str(tmp_path / "aloha")).build())
    entry = episode.calibration["exterior_1"]
    assert entry["intrinsics"] == {"fx": 90.0, "fy": 90.0, "cx": 63.5, "cy": 47.5, "width": 128, "height": 96}
    np.testing.assert_allclose(entry["camera_to_base"], pose)
    assert set(episode.calibration) == {"exterior_1"} and entry["distortion"]["coefficients"][0] == 0.01


def test_droids_published_calibration_is_imported_per_episode(tmp_path):
    root = write_droid_dataset(tmp_path / "raw", n_episodes=3, n_shards=1, seed=5, failure_every=0)
    paths = [episode_paths(i, 5, False)[0].decode() for i in range(3)]
    calibration = write_droid_calibration(tmp_path / "droid-calibration", paths)
    episodes, _ = _episodes(DroidRldsSource.Config(root=str(root), calibration_dir=str(calibration)).build())
    first, second, last = episodes
    assert set(first.calibration) == {"exterior_1", "exterior_2"}
    np.testing.assert_allclose(first.calibration["exterior_1"]["camera_to_base"], pose_matrix(EXTRINSICS["ext1"]))
    assert "cam2base_extrinsic_superset.json" in first.calibration["exterior_1"]["source"]  # the superset wins
    assert first.calibration["exterior_1"]["intrinsics"]["width"] == 1280
    assert set(second.calibration) == {"exterior_1"}  # its ext2 intrinsics are zero-filled in the release
    assert last.calibration == {}  # not covered by the files
    with pytest.raises(CalibrationError, match="no episode_id_to_path.json"):
        DroidCalibration.load(tmp_path)


def test_the_frame_tree_composes_and_refuses_disconnected_frames():
    tree = FrameTree()
    tree.add("base", "a", (1.0, 0.0, 0.0), (0.0, 0.0, 0.7071068, 0.7071068))  # 90 degrees about z
    tree.add("a", "b", (1.0, 0.0, 0.0), (0.0, 0.0, 0.0, 1.0))
    np.testing.assert_allclose(tree.pose("b", "base")[:3, 3], [1.0, 1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(tree.pose("base", "b") @ tree.pose("b", "base"), np.eye(4), atol=1e-9)
    assert tree.pose("b", "elsewhere") is None


def test_calibration_travels_in_shard_meta_and_old_shards_read_without_it(tmp_path, ingest_locally):
    from vlaforge.pipelines.shards.robot_source import RobotShardSource

    root = write_teleop_mcap_dataset(tmp_path / "mcap", n_episodes=1, duration_s=1.0)
    ingest_locally("teleop-mcap", root, tmp_path / "shards", shard_max_samples=100, validation_fraction=0.0)
    shard = next((tmp_path / "shards").rglob("*.tar"))
    import tarfile

    with tarfile.open(shard) as tar:
        meta = json.loads(tar.extractfile(next(m for m in tar if m.name.endswith("meta.json"))).read())
    assert meta["calibration"]["exterior_1"]["intrinsics"]["fx"] == 102.4
    (episode,), _ = _episodes(RobotShardSource.Config(root=str(tmp_path / "shards"), split=None).build())
    assert episode.calibration["exterior_1"] == meta["calibration"]["exterior_1"]
    from vlaforge.pipelines.samples import RobotSampleBuilder

    episode.calibration = {}  # an episode without calibration writes no key at all
    sample = next(RobotSampleBuilder.Config().build().iter_samples(episode))
    assert "calibration" not in json.loads(sample.members["meta.json"])
