"""DROID (RLDS as TFDS writes it) read without TensorFlow: round trip from the synthetic writer, damage of every
kind quarantined with a message that names the file, the record and the fix, and an independent reader cross-check.
"""

import hashlib
import json
import shutil

import numpy as np
import pytest
import simplejpeg

from vlaforge.datasets.droid_rlds import DroidRldsSource
from vlaforge.datasets.drops import DropLedger, DropReason
from vlaforge.datasets.schema import Camera
from vlaforge.datasets.source import SourceError
from vlaforge.datasets.synth.droid import make_droid_episode, write_droid_dataset, write_droid_shard
from vlaforge.datasets.tfrecord import TFRecordReader, read_records, write_records

SYNTH = dict(n_episodes=5, n_shards=2, min_steps=10, max_steps=16, seed=5, idle_steps=2)
SHARD_0 = "droid-train.tfrecord-00000-of-00002"
SHARD_1 = "droid-train.tfrecord-00001-of-00002"


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return write_droid_dataset(tmp_path_factory.mktemp("droid"), **SYNTH)


@pytest.fixture
def dataset(base, tmp_path):
    """A private copy of the sample dataset that a test may damage."""
    return shutil.copytree(base, tmp_path / "droid" / "1.0.1")


def _read(root, **config):
    source = DroidRldsSource.Config(root=str(root), **config).build()
    ledger = DropLedger()
    episodes = [episode for unit in source.plan() for episode in source.read(unit, ledger)]
    return episodes, ledger.take()


def _expected(index, n_steps):
    """The episode the writer wrote at `index` (episode 2 of 5 fails with failure_every=3)."""
    return make_droid_episode(index, seed=SYNTH["seed"], n_steps=n_steps, failed=index % 3 == 2,
                              idle_steps=SYNTH["idle_steps"])


def _offsets(path):
    with open(path, "rb") as file:
        return [(record.offset, len(record.data)) for record in TFRecordReader(file)]


def test_round_trip_gives_every_episode_with_its_names_values_and_instructions(dataset):
    episodes, drops = _read(dataset)
    assert drops == [] and len(episodes) == 5
    assert [e.success for e in episodes] == [True, True, False, True, True]
    for index, episode in enumerate(episodes):
        n = len(episode)
        assert SYNTH["min_steps"] <= n <= SYNTH["max_steps"]
        written = _expected(index, n)
        assert episode.state_names == [f"joint_position_{i}" for i in range(7)] + ["gripper_position"]
        assert episode.action_names == [f"joint_velocity_{i}" for i in range(7)] + ["gripper_position"]
        assert episode.state.dtype == episode.action.dtype == np.float32
        joints, gripper = written["steps/observation/joint_position"], written["steps/action_dict/gripper_position"]
        np.testing.assert_array_equal(episode.state[:, :7], joints.astype(np.float32))
        np.testing.assert_array_equal(episode.action[:, 7:], gripper.astype(np.float32))
        np.testing.assert_array_equal(
            episode.extras["cartesian_position"], written["steps/observation/cartesian_position"].astype(np.float32)
        )
        np.testing.assert_allclose(episode.timestamps, np.arange(n) / 15.0)
        assert episode.instructions[0] == written["steps/language_instruction"][0].decode()
        assert "" not in episode.instructions and len(episode.instructions) == (3 if index % 2 else 2)
        assert (episode.source, episode.embodiment, episode.control_rate_hz) == ("droid", "franka_droid", 15.0)
    assert [(e.lineage.file, e.lineage.index) for e in episodes] == [
        (SHARD_0, "record 0"), (SHARD_0, "record 1"), (SHARD_0, "record 2"),
        (SHARD_1, "record 0"), (SHARD_1, "record 1"),
    ]
    assert {e.lineage.source_version for e in episodes} == {"1.0.1"}


def test_frames_are_the_written_jpeg_bytes_and_decode_to_180x320(dataset):
    episodes, _ = _read(dataset)
    for index, episode in enumerate(episodes[:2]):
        written = _expected(index, len(episode))
        assert set(episode.frames) == {Camera.EXTERIOR_1.value, Camera.EXTERIOR_2.value, Camera.WRIST.value}
        assert episode.frames["wrist"] == written["steps/observation/wrist_image_left"]  # pass-through, same bytes
        assert episode.frames["exterior_1"] == written["steps/observation/exterior_image_1_left"]
        assert simplejpeg.decode_jpeg(episode.frames["exterior_2"][-1]).shape == (180, 320, 3)


def test_episode_ids_are_stable_and_derived_from_the_recording_metadata(dataset):
    first, _ = _read(dataset)
    again, _ = _read(dataset, files_per_unit=2)
    assert [e.episode_id for e in first] == [e.episode_id for e in again]
    written = _expected(0, len(first[0]))
    identity = written["episode_metadata/recording_folderpath"][0] + b"--" + written["episode_metadata/file_path"][0]
    assert first[0].episode_id == "droid-" + hashlib.sha1(identity).hexdigest()[:16]
    assert len({e.episode_id for e in first}) == 5


def test_the_builder_name_comes_from_dataset_info(tmp_path):
    root = write_droid_dataset(tmp_path, **{**SYNTH, "n_episodes": 2, "n_shards": 1}, builder="r2d2_faceblur",
                               version="1.0.0")
    assert root == tmp_path / "r2d2_faceblur" / "1.0.0"
    source = DroidRldsSource.Config(root=str(root)).build()
    assert source.dataset_name == "r2d2_faceblur"
    assert source.plan()[0].files == ("r2d2_faceblur-train.tfrecord-00000-of-00001",)
    episodes, _ = _read(root)
    assert all(e.episode_id.startswith("r2d2_faceblur-") and e.lineage.source_version == "1.0.0" for e in episodes)


def test_cameras_can_be_chosen_and_named_with_the_camera_enum(dataset):
    episodes, _ = _read(dataset, cameras={"steps/observation/wrist_image_left": Camera.WRIST})
    assert list(episodes[0].frames) == ["wrist"] and type(list(episodes[0].frames)[0]) is str


def test_the_action_mapping_is_configurable(dataset):
    flat, _ = _read(dataset, action_features=("steps/action",))
    assert flat[0].action.shape[1] == 7 and flat[0].action_names == [f"action_{i}" for i in range(7)]
    written = _expected(0, len(flat[0]))
    cartesian_velocity_and_gripper = np.concatenate(
        [written["steps/action_dict/cartesian_velocity"], written["steps/action_dict/gripper_position"]], axis=1
    )
    np.testing.assert_array_equal(flat[0].action, cartesian_velocity_and_gripper.astype(np.float32))
    openpi_style = ("steps/action_dict/joint_position", "steps/action_dict/gripper_position")
    joints, _ = _read(dataset, action_features=openpi_style)
    assert joints[0].action.shape[1] == 8 and joints[0].action_names[0] == "joint_position_0"


def test_a_truncated_shard_quarantines_its_tail_and_the_rest_is_read(dataset):
    offsets = _offsets(dataset / SHARD_0)
    cut = offsets[1][0] + 1000  # inside record 1's data
    (dataset / SHARD_0).write_bytes((dataset / SHARD_0).read_bytes()[:cut])
    episodes, drops = _read(dataset)
    assert [(e.lineage.file, e.lineage.index) for e in episodes] == [
        (SHARD_0, "record 0"), (SHARD_1, "record 0"), (SHARD_1, "record 1")
    ]
    [drop] = drops
    assert drop.reason is DropReason.TRUNCATED_FILE and drop.file == SHARD_0 and drop.quarantined
    assert f"record 1 at byte offset {offsets[1][0]}" in drop.message
    assert "lists 3 episodes" in drop.message and "re-download this shard" in drop.message


def test_a_shard_cut_at_a_record_boundary_is_caught_by_the_episode_count(dataset):
    offsets = _offsets(dataset / SHARD_0)
    (dataset / SHARD_0).write_bytes((dataset / SHARD_0).read_bytes()[: offsets[2][0]])
    episodes, drops = _read(dataset)
    assert len(episodes) == 4
    [drop] = drops
    assert drop.reason is DropReason.TRUNCATED_FILE and "after 2 records" in drop.message and "lists 3" in drop.message


def test_a_flipped_bit_in_one_record_skips_that_record_and_reads_the_next(dataset):
    offsets = _offsets(dataset / SHARD_0)
    data = bytearray((dataset / SHARD_0).read_bytes())
    data[offsets[1][0] + 12 + 500] ^= 0x10
    (dataset / SHARD_0).write_bytes(bytes(data))
    episodes, drops = _read(dataset)
    assert [e.lineage.index for e in episodes if e.lineage.file == SHARD_0] == ["record 0", "record 2"]
    [drop] = drops
    assert drop.reason is DropReason.CRC_MISMATCH and drop.episode == "record 1"
    assert f"{SHARD_0}: record 1 at byte offset {offsets[1][0]}" in drop.message and "sha256" in drop.message


def test_a_corrupt_length_field_loses_the_rest_of_that_file_only(dataset):
    offsets = _offsets(dataset / SHARD_0)
    data = bytearray((dataset / SHARD_0).read_bytes())
    data[offsets[1][0] + 2] ^= 0x01
    (dataset / SHARD_0).write_bytes(bytes(data))
    episodes, drops = _read(dataset)
    assert [e.lineage.file for e in episodes] == [SHARD_0, SHARD_1, SHARD_1]
    assert [(d.reason, d.episode) for d in drops] == [(DropReason.CRC_MISMATCH, "record 1")]
    assert "records 1 onwards are lost" in drops[0].message


def test_features_json_without_a_needed_feature_names_it_and_the_fix(dataset):
    features = json.loads((dataset / "features.json").read_text())
    observation = features["featuresDict"]["features"]["steps"]["sequence"]["feature"]["featuresDict"]["features"][
        "observation"
    ]["featuresDict"]["features"]
    del observation["joint_position"]
    (dataset / "features.json").write_text(json.dumps(features))
    with pytest.raises(SourceError) as caught:
        DroidRldsSource.Config(root=str(dataset)).build().plan()
    message = str(caught.value)
    assert "features.json has no feature 'steps/observation/joint_position'" in message
    assert "needs a per-step tensor or scalar feature" in message
    assert "Config.state_features" in message and "--set state_features=" in message
    assert "'steps/action_dict/joint_position'" in message  # the close match that is there
    suggested = json.loads(message.split("--set state_features='", 1)[1].split("'", 1)[0])
    assert "steps/observation/joint_position" not in suggested  # never the very feature that is missing
    assert suggested == ["steps/action_dict/joint_position", "steps/observation/gripper_position"]


def test_a_missing_camera_is_answered_with_a_mapping_of_cameras_the_dataset_has(dataset):
    features = json.loads((dataset / "features.json").read_text())
    observation = features["featuresDict"]["features"]["steps"]["sequence"]["feature"]["featuresDict"]["features"][
        "observation"]["featuresDict"]["features"]
    observation["wrist_image"] = observation.pop("wrist_image_left")  # an older release's name
    (dataset / "features.json").write_text(json.dumps(features))
    with pytest.raises(SourceError) as caught:
        DroidRldsSource.Config(root=str(dataset)).build().plan()
    suggested = json.loads(str(caught.value).split("--set cameras='", 1)[1].split("'", 1)[0])
    assert suggested == {"steps/observation/exterior_image_1_left": "exterior_1",
                         "steps/observation/exterior_image_2_left": "exterior_2",
                         "steps/observation/wrist_image": "wrist"}


def test_a_typo_in_the_config_gets_a_did_you_mean(dataset):
    with pytest.raises(SourceError, match=r"Did you mean 'steps/observation/cartesian_position'"):
        DroidRldsSource.Config(root=str(dataset), extra_features=("steps/observation/cartesian_pose",)).build().plan()
    expected = (r"lists 'steps/observation/wrist_image_left' as a per-step image uint8 \[180, 320, 3\], "
                r"but DroidRldsSource.Config.state_features needs a per-step tensor or scalar feature")
    with pytest.raises(SourceError, match=expected):
        DroidRldsSource.Config(root=str(dataset), state_features=("steps/observation/wrist_image_left",)).build().plan()


def _rewrite_shard_0(dataset, damage):
    """Shard 0 rewritten from the writer's own episodes, after `damage(episodes)`."""
    lengths = [len(e) for e in _read(dataset)[0][:3]]
    episodes = [_expected(i, n) for i, n in enumerate(lengths)]
    damage(episodes)
    write_droid_shard(dataset / SHARD_0, episodes)
    return episodes


def test_a_corrupt_jpeg_quarantines_the_episode_naming_the_step_and_camera(dataset):
    def damage(episodes):
        frames = episodes[1]["steps/observation/exterior_image_2_left"]
        frames[6] = frames[6][: len(frames[6]) // 2]  # a JPEG cut in half

    _rewrite_shard_0(dataset, damage)
    episodes, drops = _read(dataset)
    assert len(episodes) == 4
    [drop] = drops
    assert drop.reason is DropReason.BAD_IMAGE and drop.file == SHARD_0 and drop.episode.startswith("droid-")
    assert "record 1" in drop.message and "step 6" in drop.message and "exterior_image_2_left" in drop.message
    assert "exterior_2" in drop.message and "re-download" in drop.message


def test_a_nan_action_passes_through_untouched(dataset):
    def damage(episodes):
        episodes[0]["steps/action_dict/joint_velocity"][3, 2] = np.nan

    _rewrite_shard_0(dataset, damage)
    episodes, drops = _read(dataset)
    assert drops == [] and len(episodes) == 5
    assert np.isnan(episodes[0].action[3, 2]) and np.isfinite(np.delete(episodes[0].action.ravel(), 3 * 8 + 2)).all()


def test_bad_protobuf_and_inconsistent_lengths_are_quarantined_and_reading_goes_on(dataset):
    def damage(episodes):
        episodes[0]["steps/observation/joint_position"] = episodes[0]["steps/observation/joint_position"][:-1]

    _rewrite_shard_0(dataset, damage)
    records = list(read_records(dataset / SHARD_0))
    write_records(dataset / SHARD_0, [records[0], b"\x0a\x05garbage", records[2]])
    episodes, drops = _read(dataset)
    assert [e.lineage.index for e in episodes if e.lineage.file == SHARD_0] == ["record 2"]
    assert [(d.reason, d.episode) for d in drops] == [
        (DropReason.INCONSISTENT_LENGTHS, "record 0"), (DropReason.BAD_RECORD, "record 1")
    ]
    assert "joint_position" in drops[0].message and "not a valid tf.train.Example" in drops[1].message


def test_empty_recording_metadata_falls_back_to_shard_and_record(dataset):
    def damage(episodes):
        episodes[0]["episode_metadata/file_path"] = [b""]
        episodes[0]["episode_metadata/recording_folderpath"] = [b""]

    _rewrite_shard_0(dataset, damage)
    episode = _read(dataset)[0][0]
    assert episode.success is None
    assert episode.episode_id == "droid-" + hashlib.sha1(f"{SHARD_0}--record 0".encode()).hexdigest()[:16]


def test_reading_streams_one_record_at_a_time(dataset):
    """The first episode comes out before the reader has touched the (truncated) second record."""
    offsets = _offsets(dataset / SHARD_0)
    (dataset / SHARD_0).write_bytes((dataset / SHARD_0).read_bytes()[: offsets[1][0] + 100])
    source = DroidRldsSource.Config(root=str(dataset)).build()
    ledger = DropLedger()
    stream = source.read(source.plan()[0], ledger)
    first = next(stream)
    assert first.lineage.index == "record 0" and len(ledger) == 0
    assert list(stream) == [] and ledger.take()[0].reason is DropReason.TRUNCATED_FILE


def test_plan_lists_shards_in_order_and_refuses_a_missing_one(dataset):
    units = DroidRldsSource.Config(root=str(dataset), files_per_unit=2).build().plan()
    assert [u.files for u in units] == [(SHARD_0, SHARD_1)]
    (dataset / SHARD_1).unlink()
    with pytest.raises(SourceError, match=f"missing, first {SHARD_1}"):
        DroidRldsSource.Config(root=str(dataset)).build().plan()


def test_pointing_at_the_builder_dir_instead_of_the_version_dir_says_so(dataset):
    with pytest.raises(SourceError, match=r"dataset_info.json does not exist.*version directory"):
        DroidRldsSource.Config(root=str(dataset.parent)).build().plan()


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("cameras", {"steps/observation/wrist_image_left": "wristcam"}, "cameras maps .* to 'wristcam', which is not"),
        ("files_per_unit", 0, "files_per_unit must be an int >= 1, got 0"),
        ("control_rate_hz", -15.0, "control_rate_hz must be > 0, got -15.0"),
        ("state_features", ("observation/joint_position",), "state_features holds 'observation/joint_position'"),
        ("action_features", (), "action_features must name at least one feature"),
    ],
)
def test_config_validation_names_the_field_and_the_bad_value(field, value, message):
    with pytest.raises(ValueError, match=message):
        DroidRldsSource.Config(root="/data/droid/1.0.1", **{field: value})


def test_the_independent_tfrecord_package_sees_the_same_values(dataset):
    from tfrecord.reader import tfrecord_loader

    description = {"steps/observation/joint_position": "float", "steps/is_first": "int",
                   "steps/observation/wrist_image_left": "byte", "episode_metadata/file_path": "byte"}
    theirs = list(tfrecord_loader(str(dataset / SHARD_0), None, description))
    ours, _ = _read(dataset)
    assert len(theirs) == 3
    for mine, record in zip(ours, theirs):
        n = len(mine)
        assert record["steps/is_first"].tolist() == [1] + [0] * (n - 1)
        np.testing.assert_array_equal(record["steps/observation/joint_position"].reshape(n, 7), mine.state[:, :7])
        assert [bytes(b) for b in record["steps/observation/wrist_image_left"]] == mine.frames["wrist"]
        assert mine.success == (b"success" in bytes(record["episode_metadata/file_path"]))


def test_the_synthetic_writer_is_deterministic(base, tmp_path):
    again = write_droid_dataset(tmp_path, **SYNTH)
    for name in ("dataset_info.json", "features.json", SHARD_0, SHARD_1):
        assert (again / name).read_bytes() == (base / name).read_bytes(), name
    info = json.loads((again / "dataset_info.json").read_text())
    assert info["splits"][0]["shardLengths"] == ["3", "2"]
    assert info["splits"][0]["numBytes"] == str((again / SHARD_0).stat().st_size + (again / SHARD_1).stat().st_size)


def test_synthetic_episodes_are_still_at_both_ends_and_their_velocities_integrate():
    idle = 4
    episode = make_droid_episode(3, seed=1, n_steps=30, idle_steps=idle, image_size=(36, 64))
    joints, gripper = episode["steps/observation/joint_position"], episode["steps/observation/gripper_position"]
    state = np.concatenate([joints, gripper], axis=1)
    assert np.ptp(state[: idle + 1], axis=0).max() == 0 and np.ptp(state[-idle:], axis=0).max() == 0
    assert np.ptp(state[idle:-idle], axis=0).max() > 0.01  # it does move in between
    velocity = episode["steps/action_dict/joint_velocity"]
    np.testing.assert_allclose(np.diff(episode["steps/observation/joint_position"], axis=0), velocity[:-1] / 15.0,
                               atol=1e-12)
    assert episode["steps/observation/gripper_position"].max() > 0.5  # the gripper closes at some point
