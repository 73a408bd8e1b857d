"""`vlaforge inspect RAW_PATH` on each raw format as a new user would point it: what the dataset holds, what the
ingest would do with it, and a suggested `vlaforge ingest` line that runs as printed."""

import json
import shlex

import pytest

from vlaforge.flows.cli import main


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "250")  # rich wraps tables at the terminal width


def _inspect(path, capsys, *extra):
    assert main(["inspect", str(path), *extra]) == 0
    out = capsys.readouterr().out
    suggested = out.rsplit("suggested:\n", 1)[1].strip()
    assert suggested.startswith("vlaforge ingest ")
    return out, shlex.split(suggested)


def _run_suggested(words, tmp_path, capsys):
    """The suggested line, as printed (plus where to run and where to write), through the real CLI."""
    index = words.index("--output")
    words[index + 1] = str(tmp_path / "shards")
    assert main([*words[1:], "--runner", "local", "--no-progress"]) == 0, capsys.readouterr().err
    capsys.readouterr()
    return json.loads((tmp_path / "shards" / "summary.json").read_text())


def test_mcap_logs_with_another_drivers_topic_names(tmp_path, capsys):
    from vlaforge.datasets.synth.teleop import make_recording
    from vlaforge.datasets.synth.teleop_mcap import camera_topic, write_teleop_mcap

    renamed = {camera_topic(c): f"/{c}/image/compressed" for c in ("cam_high", "cam_left_wrist", "cam_right_wrist")}
    for seed in (1, 2):
        write_teleop_mcap(tmp_path / "logs" / f"take_{seed}.mcap", make_recording(seed=seed, duration_s=1.5),
                          renamed_topics=renamed)
    out, words = _inspect(tmp_path / "logs", capsys)
    assert "teleop-mcap" in out and "2 MCAP logs" in out
    row = next(line for line in out.splitlines() if "/cam_high/image/compressed" in line and "Compressed" in line)
    topic, kind, logs, messages, rate, longest, gaps = (cell.strip() for cell in row.strip("│ ").split("│"))
    assert (kind, logs) == ("sensor_msgs/msg/CompressedImage", "2/2") and 25 < float(rate) < 32  # near 30 Hz
    assert int(messages) > 70 and float(longest) > 0
    assert "/follower_left/joint_states" in out and "sensor_msgs/msg/JointState" in out
    assert "/cam_high/image_raw/compressed (sensor_msgs/msg/CompressedImage, read by default as cameras) is in 0 of 2" \
        in out
    cameras = json.loads(words[words.index("--set") + 1].removeprefix("cameras="))
    assert cameras == {"/cam_high/image/compressed": "exterior_1", "/cam_left_wrist/image/compressed": "left_wrist",
                       "/cam_right_wrist/image/compressed": "right_wrist"}
    summary = _run_suggested(words, tmp_path, capsys)
    assert summary["episodes_written"] == 2 and summary["quarantined"] == 0


def test_aloha_hdf5_episodes(tmp_path, capsys):
    from vlaforge.datasets.synth.teleop_hdf5 import write_aloha_dataset

    root = write_aloha_dataset(tmp_path / "aloha", n_episodes=2, duration_s=1.5, seed=4)
    out, words = _inspect(root / "episode_0.hdf5", capsys)  # one file: its directory is the input
    assert "2 HDF5 episode files, 75-75 rows each" in out
    assert "/observations/images/cam_high" in out and "(75, " in out and "uint8" in out
    assert "/observations/qpos" in out and "(75, 14)" in out and "float32" in out
    assert "taken as BGR pixels" in out and "timing: one row per tick at 50 Hz" in out
    assert words[words.index("--input") + 1] == str(root) and "--set" not in words
    assert _run_suggested(words, tmp_path, capsys)["episodes_written"] == 2


def test_an_rlds_dataset_from_its_builder_directory(droid_dataset, tmp_path, capsys):
    out, words = _inspect(droid_dataset.parent.parent, capsys)  # .../droid: the version directory is found
    assert "droid 1.0.1, split train: 6 episodes in 3 tfrecord shards" in out
    assert "steps/observation/wrist_image_left" in out and "jpeg" in out and "episode_metadata/file_path" in out
    assert words[words.index("--input") + 1] == str(droid_dataset) and "--set" not in words
    assert _run_suggested(words, tmp_path, capsys)["episodes_read"] == 6


def test_an_rlds_dataset_without_a_default_feature_gets_the_set_line(droid_dataset, tmp_path, capsys):
    import shutil

    copy = shutil.copytree(droid_dataset, tmp_path / "droid" / "1.0.1")
    features = json.loads((copy / "features.json").read_text())
    steps = features["featuresDict"]["features"]["steps"]["sequence"]["feature"]["featuresDict"]["features"]
    steps["observation"]["featuresDict"]["features"].pop("joint_position")
    (copy / "features.json").write_text(json.dumps(features))
    _, words = _inspect(copy, capsys)
    assert "state_features=" + json.dumps(["steps/action_dict/joint_position", "steps/observation/gripper_position"]) \
        in words


def test_a_lerobot_dataset(tmp_path, capsys):
    from vlaforge.datasets.synth.lerobot import write_lerobot_dataset

    root = write_lerobot_dataset(tmp_path / "molmo", n_episodes=2)
    out, words = _inspect(root, capsys)
    assert "LeRobot v3.0, robot_type franka, 15 fps: 2 episodes" in out
    assert "observation.images.wrist_image" in out and "h264 320x180" in out and "observation.state" in out
    assert "observation.images.first_view -> exterior_1" in out
    assert _run_suggested(words, tmp_path, capsys)["episodes_read"] == 2


def test_a_path_that_is_no_dataset_is_a_named_error(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("hello")
    assert main(["inspect", str(tmp_path)]) == 2
    assert "is no dataset vlaforge reads" in capsys.readouterr().err
