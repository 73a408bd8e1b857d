"""TeleopMcapSource on format-faithful ROS 2 MCAP logs: exact values on the grid, policies and bad input."""

import copy

import numpy as np
import pytest
import simplejpeg

from vlaforge.datasets.bimanual import ARM_JOINTS, DIMENSION_NAMES, EMBODIMENT
from vlaforge.datasets.drops import DropLedger
from vlaforge.datasets.synth.teleop import make_recording
from vlaforge.datasets.synth.teleop_mcap import camera_topic, write_teleop_mcap
from vlaforge.datasets.teleop_mcap import TeleopMcapSource
from vlaforge.datasets.timeline import NS_PER_S, TimestampOrderError

CAMERAS = {"cam_high": "exterior_1", "cam_left_wrist": "left_wrist", "cam_right_wrist": "right_wrist"}


@pytest.fixture(scope="module")
def recording():
    return make_recording(seed=3, duration_s=2.0)


def _read(root, **options):
    source = TeleopMcapSource.Config(root=str(root), **options).build()
    ledger = DropLedger()
    episodes = [episode for unit in source.plan() for episode in source.read(unit, ledger)]
    return episodes, ledger.take(), source.take_tables()["resampling"]


def _nearest(stamps, ticks):
    distances = np.abs(ticks[:, None] - np.asarray(stamps)[None, :])
    return distances.argmin(axis=1)  # the first minimum: ties go to the earlier measurement


def _tracks(recording):
    return [*recording.cameras.values(), *recording.follower.values(), *recording.leader.values()]


def _ticks(streams):
    """The 30 Hz grid over `streams`, computed independently of the code under test."""
    start, stop = max(int(s[0]) for s in streams), min(int(s[-1]) for s in streams)
    ticks = start + np.rint(np.arange(int((stop - start) * 30 / NS_PER_S) + 2) * NS_PER_S / 30).astype(np.int64)
    return ticks[ticks < stop]


def test_every_tick_holds_the_nearest_measurement_of_every_stream(recording, tmp_path):
    write_teleop_mcap(tmp_path / "session_a" / "episode_0003.mcap", recording)
    (episode,), drops, rows = _read(tmp_path)
    assert drops == []
    ticks = _ticks([t.stamps for t in _tracks(recording)])
    assert len(episode) == len(ticks)
    np.testing.assert_allclose(episode.timestamps, (ticks - ticks[0]) / NS_PER_S)
    for arm, columns in (("left", slice(0, 7)), ("right", slice(7, 14))):
        follower, leader = recording.follower[arm], recording.leader[arm]
        np.testing.assert_array_equal(episode.state[:, columns],
                                      follower.position[_nearest(follower.stamps, ticks)].astype(np.float32))
        np.testing.assert_array_equal(episode.action[:, columns],
                                      leader.position[_nearest(leader.stamps, ticks)].astype(np.float32))
        np.testing.assert_array_equal(episode.extras["qvel"][:, columns],
                                      follower.velocity[_nearest(follower.stamps, ticks)].astype(np.float32))
    for name, camera in CAMERAS.items():
        track = recording.cameras[name]
        assert list(episode.frames[camera]) == [track.jpeg[i] for i in _nearest(track.stamps, ticks)]  # bytes untouched
    assert episode.episode_id == f"{tmp_path.name}-session_a-episode_0003"
    assert episode.state_names == episode.action_names == DIMENSION_NAMES and episode.embodiment == EMBODIMENT
    assert episode.instructions == [recording.instruction] and episode.control_rate_hz == 30.0
    assert episode.lineage.file == "session_a/episode_0003.mcap" and "mcap ros2" in episode.lineage.source_version
    # The report: one row per stream, counts as written.
    by_stream = {row["stream"]: row for row in rows}
    assert set(by_stream) == {camera_topic(name) for name in CAMERAS} | {
        "/follower_left/joint_states", "/follower_right/joint_states", "/leader_left/joint_states",
        "/leader_right/joint_states"}
    high = by_stream[camera_topic("cam_high")]
    assert high["measurements"] == len(recording.cameras["cam_high"].stamps)
    assert high["role"] == "camera.exterior_1" and high["ticks"] == len(ticks) and high["outcome"] == "kept"
    assert by_stream["/follower_left/joint_states"]["max_offset_ms"] < 3.0  # 200 Hz joints: within 2.5 ms + jitter
    assert episode.flags["timeline"]["max_offset_ms"] == pytest.approx(max(r["max_offset_ms"] for r in rows), abs=1e-3)


def test_log_times_when_configured_and_where_a_header_stamp_is_unset(recording, tmp_path):
    write_teleop_mcap(tmp_path / "a.mcap", recording)
    (by_log,), _, _ = _read(tmp_path, timestamps="log_time")
    ticks = _ticks([t.log for t in _tracks(recording)])
    leader = recording.leader["left"]
    np.testing.assert_array_equal(by_log.action[:, :7], leader.position[_nearest(leader.log, ticks)].astype(np.float32))

    unset = copy.deepcopy(recording)
    left = unset.follower["left"]
    left.stamps[:] = 0  # a driver that never fills header.stamp: its log times stand in
    write_teleop_mcap(tmp_path / "a.mcap", unset)
    (episode,), _, _ = _read(tmp_path)
    ticks = _ticks([t.log if t is left else t.stamps for t in _tracks(unset)])
    np.testing.assert_array_equal(episode.state[:, :7], left.position[_nearest(left.log, ticks)].astype(np.float32))


def test_joints_are_taken_by_name_whatever_order_the_driver_publishes(recording, tmp_path):
    write_teleop_mcap(tmp_path / "ordered" / "e.mcap", recording)
    write_teleop_mcap(tmp_path / "shuffled" / "e.mcap", recording, joint_names=tuple(reversed(ARM_JOINTS)))
    (ordered,), _, _ = _read(tmp_path / "ordered")
    (shuffled,), _, _ = _read(tmp_path / "shuffled")
    np.testing.assert_array_equal(ordered.state, shuffled.state)
    np.testing.assert_array_equal(ordered.action, shuffled.action)


def test_frames_are_re_encoded_only_when_the_size_differs(recording, tmp_path):
    from vlaforge.datasets.frames import FrameConfig

    write_teleop_mcap(tmp_path / "e.mcap", recording)
    (episode,), _, _ = _read(tmp_path, frames=FrameConfig(size=(48, 64)))
    assert simplejpeg.decode_jpeg_header(episode.frames["left_wrist"][0])[:2] == (48, 64)


def _damaged(recording, tmp_path):
    """A good episode_0000.mcap, and a copy of the recording (to damage) with the path to write it to."""
    damaged = copy.deepcopy(recording)
    write_teleop_mcap(tmp_path / "episode_0000.mcap", recording)
    return damaged, tmp_path / "episode_0001.mcap"


def test_timestamps_going_backwards_are_quarantined_with_file_topic_and_index(recording, tmp_path):
    bad, path = _damaged(recording, tmp_path)
    stamps = bad.cameras["cam_left_wrist"].stamps
    stamps[20], stamps[21] = stamps[21], stamps[20]
    write_teleop_mcap(path, bad)
    episodes, drops, _ = _read(tmp_path)
    assert [e.lineage.file for e in episodes] == ["episode_0000.mcap"]
    (drop,) = drops
    assert drop.quarantined and drop.reason.value == "nonmonotonic_timestamps" and drop.file == "episode_0001.mcap"
    assert "episode_0001.mcap: /cam_left_wrist/image_raw/compressed: timestamps go backwards at measurement 21" in \
        drop.message and "on_bad_timestamps=drop" in drop.message

    _, counted, _ = _read(tmp_path, on_bad_timestamps="drop")
    assert [(d.reason.value, d.quarantined) for d in counted] == [("nonmonotonic_timestamps", False)]
    with pytest.raises(TimestampOrderError, match="measurement 21"):
        _read(tmp_path, on_bad_timestamps="raise")


def test_a_missing_camera_topic_is_quarantined_or_dropped_by_policy(recording, tmp_path):
    _, path = _damaged(recording, tmp_path)
    write_teleop_mcap(path, recording, skip_topics=(camera_topic("cam_right_wrist"),))
    episodes, drops, _ = _read(tmp_path)
    assert len(episodes) == 1
    (drop,) = drops
    assert (drop.reason.value, drop.quarantined) == ("missing_stream", True)
    assert "topic /cam_right_wrist/image_raw/compressed has no messages" in drop.message
    _, drops, _ = _read(tmp_path, on_missing_stream="drop")
    assert [(d.reason.value, d.quarantined) for d in drops] == [("missing_stream", False)]


def test_camera_topics_named_another_way_are_answered_with_the_set_line_that_maps_them(recording, tmp_path):
    """A driver that publishes `/<camera>/image/compressed` (no `_raw`): the quarantine row lists the file's
    CompressedImage topics and the `--set cameras=...` line; passing that line reads the file."""
    import json

    renamed = {camera_topic(c): f"/{c}/image/compressed" for c in CAMERAS}
    write_teleop_mcap(tmp_path / "renamed.mcap", recording, renamed_topics=renamed)
    _, (drop,), _ = _read(tmp_path)
    assert drop.reason.value == "missing_stream"
    assert ("the file's sensor_msgs/msg/CompressedImage streams are /cam_high/image/compressed, "
            "/cam_left_wrist/image/compressed, /cam_right_wrist/image/compressed") in drop.message
    assert "fix the recording" not in drop.message
    line = drop.message.split("pass --set '", 1)[1].split("'", 1)[0]
    field, value = line.split("=", 1)
    assert field == "cameras"
    cameras = json.loads(value)
    assert cameras == {f"/{c}/image/compressed": canonical for c, canonical in CAMERAS.items()}
    (episode,), drops, _ = _read(tmp_path, cameras=cameras)  # what the suggested --set line does
    assert drops == [] and sorted(episode.frames) == sorted(CAMERAS.values())


def test_a_realsense_style_topic_is_offered_for_the_camera_it_most_likely_is(recording, tmp_path):
    import json

    renamed = {camera_topic("cam_high"): "/camera/color/image_raw/compressed"}
    write_teleop_mcap(tmp_path / "realsense.mcap", recording, renamed_topics=renamed)
    _, (drop,), _ = _read(tmp_path)
    cameras = json.loads(drop.message.split("pass --set 'cameras=", 1)[1].split("'", 1)[0])
    assert cameras == {"/camera/color/image_raw/compressed": "exterior_1",
                       "/cam_left_wrist/image_raw/compressed": "left_wrist",
                       "/cam_right_wrist/image_raw/compressed": "right_wrist"}


def test_an_absent_joint_topic_is_answered_with_the_files_joint_state_topics(recording, tmp_path):
    write_teleop_mcap(tmp_path / "arms.mcap", recording,
                      renamed_topics={"/follower_left/joint_states": "/puppet_left/joint_states",
                                      "/follower_right/joint_states": "/puppet_right/joint_states"})
    _, (drop,), _ = _read(tmp_path)
    assert "the file's sensor_msgs/msg/JointState streams are /puppet_left/joint_states, " in drop.message
    assert """--set 'state_topics=["/puppet_left/joint_states", "/puppet_right/joint_states"]'""" in drop.message


def test_a_truncated_file_is_quarantined(recording, tmp_path):
    _, path = _damaged(recording, tmp_path)
    write_teleop_mcap(path, recording)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    episodes, (drop,), _ = _read(tmp_path)
    assert len(episodes) == 1
    assert (drop.reason.value, drop.file) == ("truncated_file", "episode_0001.mcap")
    assert "ends abruptly" in drop.message and "mcap recover" in drop.message


def test_a_frame_that_does_not_decode_is_quarantined_naming_topic_and_measurement(recording, tmp_path):
    bad, path = _damaged(recording, tmp_path)
    bad.cameras["cam_high"].jpeg[10] = bad.cameras["cam_high"].jpeg[10][:200]  # cut mid-scan: no end marker
    write_teleop_mcap(path, bad)
    episodes, (drop,), rows = _read(tmp_path)
    assert len(episodes) == 1
    assert {row["outcome"] for row in rows if row["file"] == "episode_0001.mcap"} == {"quarantined"}
    assert drop.reason.value == "bad_image"
    assert "/cam_high/image_raw/compressed, measurement 10" in drop.message and "not a complete JPEG" in drop.message


def test_joints_missing_from_the_messages_are_a_named_bad_record(recording, tmp_path):
    write_teleop_mcap(tmp_path / "e.mcap", recording)
    _, (drop,), _ = _read(tmp_path, joint_names=("j1", "j2", "j3", "j4", "j5", "j6", "gripper"))
    assert drop.reason.value == "bad_record" and "without ['j1'" in drop.message and "--set" in drop.message


def _with_hole(recording, camera, start_s, stop_s):
    holed = copy.deepcopy(recording)
    track = holed.cameras[camera]
    t = (track.stamps - holed.start_ns) / NS_PER_S
    keep = (t < start_s) | (t > stop_s)
    track.stamps, track.log = track.stamps[keep], track.log[keep]
    track.jpeg = [jpeg for jpeg, k in zip(track.jpeg, keep) if k]
    return holed


def test_gap_policies_flag_split_and_drop(recording, tmp_path):
    write_teleop_mcap(tmp_path / "e.mcap", _with_hole(recording, "cam_left_wrist", 0.8, 1.2))
    (flagged,), drops, rows = _read(tmp_path)
    assert drops == [] and {row["outcome"] for row in rows} == {"flagged"}
    (gap,) = flagged.flags["timeline"]["gaps"]
    assert gap["stream"] == "/cam_left_wrist/image_raw/compressed" and 0.7 < gap["from_s"] < gap["to_s"] < 1.3

    pieces, drops, _ = _read(tmp_path, on_gap="split")
    assert [p.episode_id.rsplit("-", 1)[-1] for p in pieces] == ["seg00", "seg01"] and drops == []
    assert sum(len(p) for p in pieces) < len(flagged)  # the ticks inside the hole are gone
    assert pieces[1].flags["segment"] == 1 and pieces[1].timestamps[0] == 0.0

    none, (drop,), _ = _read(tmp_path, on_gap="drop")
    assert none == [] and (drop.reason.value, drop.quarantined) == ("timeline_gap", False)


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="TeleopMcapSource.Config.on_gap must be one of"):
        TeleopMcapSource.Config(root="x", on_gap="splitt")
    with pytest.raises(ValueError, match="cameras maps '/cam' to 'top'"):
        TeleopMcapSource.Config(root="x", cameras={"/cam": "top"})
    with pytest.raises(ValueError, match="timestamps must be one of"):
        TeleopMcapSource.Config(root="x", timestamps="publish")


def test_frames_are_read_on_access_and_a_file_changed_meanwhile_is_a_named_error(recording, tmp_path):
    from vlaforge.datasets.teleop import FrameReadError
    from vlaforge.datasets.teleop_frames import LazyFrames

    path = write_teleop_mcap(tmp_path / "e.mcap", recording)
    (episode,), _, _ = _read(tmp_path)
    frames, track = episode.frames["left_wrist"], recording.cameras["cam_left_wrist"]
    ticks = _ticks([t.stamps for t in _tracks(recording)])
    assert isinstance(frames, LazyFrames) and frames[-1] == track.jpeg[_nearest(track.stamps, ticks)[-1]]
    path.write_bytes(path.read_bytes()[:4096])  # cut short after the first pass
    with pytest.raises(FrameReadError, match=r"e.mcap: /cam_left_wrist/image_raw/compressed, measurement \d+ cannot "
                                             r"be read again .* the file changed or became unreadable"):
        frames[len(frames) // 2]


def test_a_frame_whose_bytes_are_not_found_in_its_message_is_decoded_again(recording, tmp_path, monkeypatch):
    import vlaforge.datasets.teleop_mcap as teleop_mcap

    write_teleop_mcap(tmp_path / "e.mcap", recording)
    (cut_out,), _, _ = _read(tmp_path)
    monkeypatch.setattr(teleop_mcap, "field_offset", lambda message, field: -1)
    (decoded,), _, _ = _read(tmp_path)
    for camera in CAMERAS.values():
        assert list(decoded.frames[camera]) == list(cut_out.frames[camera])
