"""LeRobot v3.0 and v2.1 read with pyarrow and PyAV: round trips from the format-faithful writer (values, names,
instructions, canonical cameras, frames that look like what was written, the right episode out of a concatenated
v3.0 mp4), images stored in the parquet, unusable metadata refused with the fix, and bad episodes quarantined
while the others are still read.
"""

import json
import shutil

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import simplejpeg

from vlaforge.datasets.drops import DropLedger, DropReason
from vlaforge.datasets.frames import FrameConfig
from vlaforge.datasets.lerobot import LeRobotSource, default_cameras
from vlaforge.datasets.source import SourceError
from vlaforge.datasets.synth.lerobot import (
    JOINT_NAMES,
    TASKS,
    episode_lengths,
    make_lerobot_episode,
    write_lerobot_dataset,
    write_mp4,
)

SYNTH = dict(n_episodes=4, min_steps=12, max_steps=20, fps=15, image_size=(96, 128), seed=3)
LENGTHS = episode_lengths(4, 12, 20, seed=3)
CAMERAS = {"first_view": "exterior_1", "second_view": "exterior_2", "wrist_image": "wrist"}
V30_DATA = "data/chunk-000/file-000.parquet"


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    """The sample datasets, written once: v3.0 and v2.1 with H.264 videos, v3.0 with PNG images in the parquet."""
    raw = tmp_path_factory.mktemp("lerobot")
    return {
        "v3.0": write_lerobot_dataset(raw / "molmoact_v30", version="v3.0", **SYNTH),
        "v2.1": write_lerobot_dataset(raw / "lerobot_v21", version="v2.1", **SYNTH),
        "images": write_lerobot_dataset(raw / "images_v30", version="v3.0", images_in_parquet=True, **SYNTH),
    }


@pytest.fixture
def copy_of(datasets, tmp_path):
    """A private copy of a sample dataset that a test may damage."""
    return lambda name: shutil.copytree(datasets[name], tmp_path / datasets[name].name)


def _read(root, **config):
    source = LeRobotSource.Config(root=str(root), **config).build()
    ledger = DropLedger()
    episodes = [episode for unit in source.plan() for episode in source.read(unit, ledger)]
    return episodes, ledger.take()


def _written(index):
    return make_lerobot_episode(index, LENGTHS[index], seed=SYNTH["seed"], fps=SYNTH["fps"],
                                image_size=SYNTH["image_size"])


def _pixels(jpeg):
    return simplejpeg.decode_jpeg(jpeg, colorspace="RGB").astype(np.int16)


def _error(jpeg, written):
    return float(np.abs(_pixels(jpeg) - written.astype(np.int16)).mean())


@pytest.mark.parametrize("version", ["v3.0", "v2.1"])
def test_round_trip_gives_every_episode_with_values_names_instructions_and_cameras(datasets, version):
    episodes, drops = _read(datasets[version])
    assert drops == [] and [len(e) for e in episodes] == LENGTHS
    name = datasets[version].name
    for index, episode in enumerate(episodes):
        written = _written(index)
        np.testing.assert_array_equal(episode.state, written.state)
        np.testing.assert_array_equal(episode.action, written.action)
        assert episode.state.dtype == episode.action.dtype == np.float32 and episode.state.shape[1] == 8
        assert episode.state_names == episode.action_names == JOINT_NAMES  # v2.1 writes {"motors": [...]}
        assert episode.instructions == [TASKS[index]]
        np.testing.assert_allclose(episode.timestamps, np.arange(len(episode)) / 15, atol=1e-6)
        assert (episode.source, episode.embodiment, episode.control_rate_hz) == ("lerobot", "franka", 15.0)
        assert set(episode.frames) == set(CAMERAS.values())
        assert episode.episode_id == f"{name}-ep{index:06d}"
        data_file = V30_DATA if version == "v3.0" else f"data/chunk-000/episode_{index:06d}.parquet"
        assert episode.lineage.as_dict() == {"file": data_file, "index": f"episode {index}",
                                             "source_version": version}


@pytest.mark.parametrize("version", ["v3.0", "v2.1"])
def test_frames_look_like_the_written_frames_after_h264_and_jpeg(datasets, version):
    episodes, _ = _read(datasets[version])
    for index, episode in enumerate(episodes):
        written = _written(index)
        for lerobot_name, camera in CAMERAS.items():
            errors = [_error(jpeg, frame) for jpeg, frame in zip(episode.frames[camera], written.frames[lerobot_name])]
            assert max(errors) < 12, (index, camera, max(errors))


def test_each_episode_gets_its_own_frames_from_the_concatenated_v30_video(datasets):
    episodes, _ = _read(datasets["v3.0"])
    first_of_2 = episodes[2].frames["wrist"][0]
    written_1, written_2 = _written(1).frames["wrist_image"], _written(2).frames["wrist_image"]
    own = _error(first_of_2, written_2[0])
    # Not the previous episode's last frame, and not one frame late within its own episode.
    assert own < _error(first_of_2, written_1[-1]) / 3 and own < _error(first_of_2, written_2[1])
    last_of_1 = episodes[1].frames["wrist"][-1]
    assert _error(last_of_1, written_1[-1]) < _error(last_of_1, written_1[-2])


def test_frames_are_stored_at_the_configured_size(datasets):
    episodes, _ = _read(datasets["v3.0"], frames=FrameConfig(size=(48, 64), quality=85))
    shapes = {_pixels(jpeg).shape for episode in episodes for frames in episode.frames.values() for jpeg in frames}
    assert shapes == {(48, 64, 3)}


def test_png_images_in_the_parquet_are_read_and_stored_as_jpeg(datasets):
    source = LeRobotSource.Config(root=str(datasets["images"])).build()
    assert [unit.files for unit in source.plan()] == [(V30_DATA,)]  # no video files to touch
    episodes, drops = _read(datasets["images"])
    assert drops == [] and [len(e) for e in episodes] == LENGTHS
    written = _written(3)
    errors = [_error(jpeg, frame) for jpeg, frame in zip(episodes[3].frames["exterior_2"],
                                                          written.frames["second_view"])]
    assert max(errors) < 4  # PNG is lossless: only the JPEG encoding differs


def test_bare_image_keys_as_molmoact_names_them_map_to_canonical_cameras(tmp_path):
    root = write_lerobot_dataset(tmp_path / "bare", version="v2.1", images_in_parquet=True, camera_prefix="",
                                 **{**SYNTH, "n_episodes": 1})
    episodes, drops = _read(root)
    assert drops == [] and set(episodes[0].frames) == set(CAMERAS.values())
    assert _error(episodes[0].frames["wrist"][3], _written(0).frames["wrist_image"][3]) < 4


def test_default_camera_names_follow_the_table_and_never_collide():
    assert default_cameras(["observation.images.top", "observation.images.front", "observation.images.wrist",
                            "observation.image", "observation.images.laptop.v2"]) == {
        "observation.images.top": "exterior_1", "observation.images.front": "front",
        "observation.images.wrist": "wrist", "observation.image": "image", "observation.images.laptop.v2": "laptop-v2"}


def test_jpeg_images_in_the_parquet_at_the_target_size_pass_through_byte_for_byte(tmp_path):
    root = write_lerobot_dataset(tmp_path / "jpeg", version="v2.1", images_in_parquet=True, image_format="jpeg",
                                 **{**SYNTH, "n_episodes": 1})
    episodes, _ = _read(root, cameras={"observation.images.wrist_image": "wrist"})
    stored = pq.read_table(root / "data/chunk-000/episode_000000.parquet")["observation.images.wrist_image"]
    assert list(episodes[0].frames) == ["wrist"]
    assert episodes[0].frames["wrist"] == [cell["bytes"] for cell in stored.to_pylist()]


def test_null_names_are_generated_and_depth_maps_are_not_taken_as_cameras(copy_of):
    root = copy_of("v3.0")
    info = json.loads((root / "meta/info.json").read_text())
    info["features"]["observation.state"]["names"] = None
    info["features"]["observation.images.wrist_image"]["info"]["is_depth_map"] = True
    (root / "meta/info.json").write_text(json.dumps(info))
    episodes, _ = _read(root)
    assert episodes[0].state_names == [f"state_{i}" for i in range(8)] and episodes[0].action_names == JOINT_NAMES
    assert set(episodes[0].frames) == {"exterior_1", "exterior_2"}


def test_an_unsupported_codebase_version_is_refused_with_the_fix(copy_of):
    root = copy_of("v2.1")
    info = json.loads((root / "meta/info.json").read_text())
    (root / "meta/info.json").write_text(json.dumps({**info, "codebase_version": "v1.6"}))
    with pytest.raises(SourceError) as caught:
        LeRobotSource.Config(root=str(root)).build().plan()
    message = str(caught.value)
    assert "meta/info.json" in message and "'v1.6'" in message and "v3.0 and v2.1" in message
    assert "convert_dataset_v21_to_v30" in message


def test_a_missing_configured_feature_is_refused_with_close_matches(datasets):
    with pytest.raises(SourceError, match=r"no feature 'observation.stat'.*Did you mean 'observation.state'"):
        LeRobotSource.Config(root=str(datasets["v3.0"]), state_feature="observation.stat").build().plan()
    cameras = {"observation.images.front": "exterior_1"}
    with pytest.raises(SourceError, match=r"Did you mean 'observation.images.first_view'.*--set cameras="):
        LeRobotSource.Config(root=str(datasets["v3.0"]), cameras=cameras).build().plan()


def test_a_root_above_the_dataset_points_at_the_datasets_below_it(datasets, tmp_path):
    shutil.copytree(datasets["v2.1"], tmp_path / "molmoact_dataset_household" / "train")
    with pytest.raises(SourceError, match=r"molmoact_dataset_household/train.*point root at one of them"):
        LeRobotSource.Config(root=str(tmp_path)).build().plan()
    source = LeRobotSource.Config(root=str(tmp_path / "molmoact_dataset_household" / "train")).build()
    assert source.dataset_name == "molmoact_dataset_household-train"


def test_a_video_shorter_than_its_parquet_is_quarantined_and_the_other_episodes_are_read(copy_of):
    root = copy_of("v2.1")
    video = "videos/chunk-000/observation.images.first_view/episode_000001.mp4"
    write_mp4(root / video, _written(1).frames["first_view"][: LENGTHS[1] - 5], fps=15)
    episodes, drops = _read(root)
    assert [e.episode_id for e in episodes] == [f"lerobot_v21-ep{i:06d}" for i in (0, 2, 3)]
    assert [(d.reason, d.file, d.episode, d.steps) for d in drops] == [
        (DropReason.VIDEO_TOO_SHORT, video, "lerobot_v21-ep000001", LENGTHS[1])]
    assert f"needs {LENGTHS[1]} frames but the video gives only {LENGTHS[1] - 5}" in drops[0].message
    assert video in drops[0].message and "re-encode the video or trim the episode" in drops[0].message


def test_a_concatenated_v30_video_that_ends_early_costs_only_its_last_episode(copy_of):
    root = copy_of("v3.0")
    video = "videos/observation.images.wrist_image/chunk-000/file-000.mp4"
    frames = np.concatenate([_written(i).frames["wrist_image"] for i in range(4)])
    write_mp4(root / video, frames[:-3], fps=15)
    episodes, drops = _read(root, episodes_per_unit=2)
    assert [e.episode_id for e in episodes] == [f"molmoact_v30-ep{i:06d}" for i in (0, 1, 2)]
    assert [(d.reason, d.file, d.episode) for d in drops] == [(DropReason.VIDEO_TOO_SHORT, video,
                                                               "molmoact_v30-ep000003")]
    assert f"gives only {LENGTHS[3] - 3}" in drops[0].message


def test_unreadable_files_are_quarantined_per_episode(copy_of):
    root = copy_of("v2.1")
    broken = "videos/chunk-000/observation.images.second_view/episode_000002.mp4"
    (root / broken).write_bytes(b"not an mp4 at all")
    (root / "data/chunk-000/episode_000003.parquet").unlink()
    episodes, drops = _read(root)
    assert [e.lineage.index for e in episodes] == ["episode 0", "episode 1"]
    assert [(d.reason, d.file) for d in drops] == [(DropReason.UNREADABLE_FILE, broken),
                                                  (DropReason.UNREADABLE_FILE, "data/chunk-000/episode_000003.parquet")]
    assert all("re-download" in d.message for d in drops)


def test_rows_that_disagree_with_the_episode_metadata_are_quarantined(copy_of):
    root = copy_of("v3.0")
    path = root / "meta/episodes/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    lengths = table["length"].to_pylist()
    lengths[1] += 2
    pq.write_table(table.set_column(table.column_names.index("length"), "length", pa.array(lengths)), path)
    episodes, drops = _read(root)
    assert [e.lineage.index for e in episodes] == ["episode 0", "episode 2", "episode 3"]
    assert [(d.reason, d.file, d.episode) for d in drops] == [(DropReason.INCONSISTENT_LENGTHS, V30_DATA,
                                                               "molmoact_v30-ep000001")]
    assert f"{LENGTHS[1]} rows, but the episode metadata gives length {LENGTHS[1] + 2}" in drops[0].message


def test_a_broken_embedded_image_is_quarantined(copy_of):
    root = copy_of("images")
    table = pq.read_table(root / V30_DATA)
    key = "observation.images.second_view"
    cells = table[key].to_pylist()
    step = LENGTHS[0] + 4  # episode 1, step 4
    cells[step] = {"bytes": cells[step]["bytes"][:200], "path": cells[step]["path"]}
    column = pa.array(cells, type=table.schema.field(key).type)
    pq.write_table(table.set_column(table.column_names.index(key), key, column), root / V30_DATA)
    episodes, drops = _read(root)
    assert [e.lineage.index for e in episodes] == ["episode 0", "episode 2", "episode 3"]
    assert [(d.reason, d.episode) for d in drops] == [(DropReason.BAD_IMAGE, "images_v30-ep000001")]
    assert "step 4, camera exterior_2" in drops[0].message


def test_units_cover_every_episode_once_and_name_the_files_they_read(datasets):
    source = LeRobotSource.Config(root=str(datasets["v2.1"]), episodes_per_unit=3).build()
    units = source.plan()
    assert [unit.episodes for unit in units] == [(0, 3), (3, 4)]
    assert units[1].files == ("data/chunk-000/episode_000003.parquet",
                              *(f"videos/chunk-000/observation.images.{name}/episode_000003.mp4" for name in CAMERAS))
    ledger = DropLedger()
    assert [len(e) for unit in units for e in source.read(unit, ledger)] == LENGTHS


def test_names_and_embodiment_can_be_overridden(datasets):
    episodes, _ = _read(datasets["v2.1"], dataset_name="molmoact", embodiment="franka_molmoact",
                        cameras={"observation.images.first_view": "exterior_1"})
    assert episodes[0].episode_id == "molmoact-ep000000" and episodes[0].embodiment == "franka_molmoact"
    assert list(episodes[0].frames) == ["exterior_1"]


@pytest.mark.parametrize("config, field", [
    (dict(cameras={"observation.images.first_view": "first.view"}), "cameras"),
    (dict(cameras={"a": "wrist", "b": "wrist"}), "cameras"),
    (dict(episodes_per_unit=0), "episodes_per_unit"),
    (dict(video_tolerance_s=-1.0), "video_tolerance_s"),
])
def test_bad_config_values_are_refused_naming_the_field(config, field):
    with pytest.raises(ValueError, match=f"LeRobotSource.Config.{field}"):
        LeRobotSource.Config(root="/data/x", **config)


def _has_av1() -> bool:
    try:
        av.codec.Codec("libsvtav1", "w")
        av.codec.Codec("av1", "r")
    except Exception:  # noqa: BLE001 - any failure means this PyAV build lacks the codec
        return False
    return True


@pytest.mark.skipif(not _has_av1(), reason="this PyAV build has no AV1 encoder/decoder")
def test_av1_videos_are_read(tmp_path):
    root = write_lerobot_dataset(tmp_path / "av1", version="v3.0", codec="av1", **{**SYNTH, "n_episodes": 2})
    assert json.loads((root / "meta/info.json").read_text())["features"]["observation.images.wrist_image"][
        "info"]["video.codec"] == "av1"
    episodes, drops = _read(root)
    assert drops == [] and [len(e) for e in episodes] == LENGTHS[:2]
    written = _written(1).frames["first_view"]
    assert max(_error(jpeg, frame) for jpeg, frame in zip(episodes[1].frames["exterior_1"], written)) < 12
