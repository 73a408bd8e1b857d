"""TeleopHdf5Source on ALOHA-layout files: fixed rate or per-stream timestamps, raw or JPEG frames, the recorders'
colour convention, bad input."""

import tarfile

import h5py
import numpy as np
import pytest
import simplejpeg

from vlaforge.datasets.bimanual import DIMENSION_NAMES
from vlaforge.datasets.drops import DropLedger
from vlaforge.datasets.synth.teleop import make_recording
from vlaforge.datasets.synth.teleop_hdf5 import write_aloha_hdf5
from vlaforge.datasets.teleop_hdf5 import TeleopHdf5Source
from vlaforge.datasets.timeline import NS_PER_S

CAMERAS = {"cam_high": "exterior_1", "cam_left_wrist": "left_wrist", "cam_right_wrist": "right_wrist"}


@pytest.fixture(scope="module")
def fixed():
    """A 2 s recording on ALOHA's one 50 Hz clock."""
    return make_recording(seed=5, duration_s=2.0, fixed_rate_hz=50.0)


@pytest.fixture(scope="module")
def clocked():
    """A 2 s recording whose streams tick on their own clocks (cameras ~30 Hz, joints 200 Hz)."""
    return make_recording(seed=6, duration_s=2.0, shared_arm_clock=True)


def _read(root, **options):
    source = TeleopHdf5Source.Config(root=str(root), **options).build()
    ledger = DropLedger()
    episodes = [episode for unit in source.plan() for episode in source.read(unit, ledger)]
    return episodes, ledger.take(), source.take_tables()["resampling"]


def _nearest(stamps, ticks):
    return np.abs(ticks[:, None] - np.asarray(stamps)[None, :]).argmin(axis=1)


def _joined(tracks, field="position"):
    return np.concatenate([getattr(tracks["left"], field), getattr(tracks["right"], field)], axis=1)


def test_a_fixed_rate_compressed_file_resamples_50_hz_rows_onto_30_hz_ticks(fixed, tmp_path):
    write_aloha_hdf5(tmp_path / "episode_0.hdf5", fixed, compress=True, channel_order="rgb")
    (episode,), drops, rows = _read(tmp_path, channel_order="rgb")
    assert drops == []
    rows_ns = np.rint(np.arange(100) * NS_PER_S / 50).astype(np.int64)  # row k at k / 50 s
    ticks = np.rint(np.arange(60) * NS_PER_S / 30).astype(np.int64)  # 0 .. 1.98 s: strictly before row 99
    assert len(episode) == 60
    chosen = _nearest(rows_ns, ticks)
    np.testing.assert_array_equal(episode.state, _joined(fixed.follower)[chosen].astype(np.float32))
    np.testing.assert_array_equal(episode.action, _joined(fixed.leader)[chosen].astype(np.float32))
    qvel = _joined(fixed.follower, "velocity")[chosen].astype(np.float32)
    np.testing.assert_array_equal(episode.extras["qvel"], qvel)
    for name, camera in CAMERAS.items():
        # The padding is cut by compress_len.
        assert list(episode.frames[camera]) == [fixed.cameras[name].jpeg[i] for i in chosen]
    assert episode.instructions == [fixed.instruction] and episode.state_names == DIMENSION_NAMES
    assert episode.lineage.source_version == "aloha-hdf5 (compress=True)" and episode.episode_id.endswith("-episode_0")
    assert {row["stream"] for row in rows} == {"/observations/qpos", "/action",
                                               *(f"/observations/images/{n}" for n in CAMERAS)}
    assert all(row["measured_hz"] == pytest.approx(50.0) and row["duplicated"] == 0 for row in rows)


def test_raw_frames_are_encoded_and_an_fps_attribute_sets_the_rate(fixed, tmp_path):
    path = write_aloha_hdf5(tmp_path / "episode_0.hdf5", fixed, compress=False)
    (episode,), _, _ = _read(tmp_path)
    pixels = simplejpeg.decode_jpeg(fixed.cameras["cam_high"].jpeg[0], colorspace="RGB")
    stored = simplejpeg.decode_jpeg(episode.frames["exterior_1"][0], colorspace="RGB")
    assert stored.shape == pixels.shape and np.abs(stored.astype(int) - pixels.astype(int)).mean() < 3
    with h5py.File(path, "r+") as handle:
        handle.attrs["fps"] = 25.0  # the same 100 rows now span 4 s
    (slower,), _, _ = _read(tmp_path)
    assert len(slower) == 119  # ticks strictly before row 99 at 3.96 s


def test_per_stream_timestamps_in_nanoseconds_or_seconds(clocked, tmp_path):
    path = write_aloha_hdf5(tmp_path / "episode_0.hdf5", clocked, timestamps=True, channel_order="rgb")
    (episode,), drops, _ = _read(tmp_path, channel_order="rgb")
    assert drops == []
    streams = [clocked.follower["left"].stamps, clocked.leader["left"].stamps,
               *(t.stamps for t in clocked.cameras.values())]
    start, stop = max(int(s[0]) for s in streams), min(int(s[-1]) for s in streams)
    ticks = start + np.rint(np.arange(90) * NS_PER_S / 30).astype(np.int64)
    ticks = ticks[ticks < stop]
    assert len(episode) == len(ticks)
    np.testing.assert_array_equal(
        episode.state, _joined(clocked.follower)[_nearest(clocked.follower["left"].stamps, ticks)].astype(np.float32))
    wrist = clocked.cameras["cam_left_wrist"]
    assert list(episode.frames["left_wrist"]) == [wrist.jpeg[i] for i in _nearest(wrist.stamps, ticks)]

    with h5py.File(path, "r+") as handle:  # the same clocks as float seconds
        for name in ("observations/qpos", "action", *(f"observations/images/{c}" for c in CAMERAS)):
            nanoseconds = handle[f"timestamps/{name}"][()]
            del handle[f"timestamps/{name}"]
            handle[f"timestamps/{name}"] = (nanoseconds - clocked.start_ns) / NS_PER_S
    (in_seconds,), _, _ = _read(tmp_path, channel_order="rgb")
    np.testing.assert_array_equal(in_seconds.state, episode.state)


def test_frames_without_compress_len_end_at_their_jpeg_end_marker(fixed, tmp_path):
    path = write_aloha_hdf5(tmp_path / "episode_0.hdf5", fixed, compress=True, channel_order="rgb")
    with h5py.File(path, "r+") as handle:
        del handle["compress_len"]
    (episode,), _, _ = _read(tmp_path, channel_order="rgb")
    assert episode.frames["right_wrist"][0] == fixed.cameras["cam_right_wrist"].jpeg[0]


def test_compress_len_rows_follow_the_configured_camera_order(fixed, tmp_path):
    path = write_aloha_hdf5(tmp_path / "episode_0.hdf5", fixed, compress=True, channel_order="rgb")
    with h5py.File(path, "r+") as handle:  # a recorder that listed the wrists first
        table = handle["compress_len"][()]
        handle["compress_len"][...] = table[[1, 2, 0]]
    order = ("cam_left_wrist", "cam_right_wrist", "cam_high")
    (episode,), _, _ = _read(tmp_path, compress_len_cameras=order, channel_order="rgb")
    assert episode.frames["exterior_1"][0] == fixed.cameras["cam_high"].jpeg[0]
    _, (drop,), _ = _read(tmp_path)  # read in ALOHA's order, the lengths cut the JPEGs short
    assert drop.reason.value == "bad_image" and "/observations/images/" in drop.message


def _good_and(fixed, tmp_path):
    write_aloha_hdf5(tmp_path / "episode_0.hdf5", fixed)
    return write_aloha_hdf5(tmp_path / "episode_1.hdf5", fixed)


def test_arrays_that_disagree_in_length_are_quarantined_and_the_rest_read(fixed, tmp_path):
    bad = _good_and(fixed, tmp_path)
    with h5py.File(bad, "r+") as handle:
        action = handle["action"][()]
        del handle["action"]
        handle.create_dataset("action", data=action[:-7])
    episodes, (drop,), _ = _read(tmp_path)
    assert [e.lineage.file for e in episodes] == ["episode_0.hdf5"]
    assert (drop.reason.value, drop.file) == ("inconsistent_lengths", "episode_1.hdf5")
    assert "/observations/qpos: 100, /action: 93" in drop.message


def test_a_missing_camera_an_unreadable_file_and_a_broken_frame_are_quarantined(fixed, tmp_path):
    write_aloha_hdf5(tmp_path / "episode_0.hdf5", fixed)
    write_aloha_hdf5(tmp_path / "episode_1.hdf5", fixed, skip_cameras=("cam_right_wrist",))
    (tmp_path / "episode_2.hdf5").write_bytes(b"not an HDF5 file" * 100)
    broken = write_aloha_hdf5(tmp_path / "episode_3.hdf5", fixed)
    with h5py.File(broken, "r+") as handle:
        handle["observations/images/cam_high"][30, :40] = 0  # the JPEG's start marker and header are gone
    episodes, drops, _ = _read(tmp_path)
    assert [e.lineage.file for e in episodes] == ["episode_0.hdf5"]
    by_file = {drop.file: drop for drop in drops}
    assert by_file["episode_1.hdf5"].reason.value == "missing_stream"
    assert "has no dataset /observations/images/cam_right_wrist" in by_file["episode_1.hdf5"].message
    fix = ("the file's /observations/images streams are cam_high, cam_left_wrist; to read them, pass --set "
           """'cameras={"cam_high": "exterior_1", "cam_left_wrist": "left_wrist"}'""")
    assert fix in by_file["episode_1.hdf5"].message
    assert by_file["episode_2.hdf5"].reason.value == "unreadable_file"
    assert by_file["episode_3.hdf5"].reason.value == "bad_image"
    assert "/observations/images/cam_high, measurement 30" in by_file["episode_3.hdf5"].message


def test_timestamps_for_only_some_streams_are_a_named_bad_record(clocked, tmp_path):
    path = write_aloha_hdf5(tmp_path / "episode_0.hdf5", clocked, timestamps=True)
    with h5py.File(path, "r+") as handle:
        del handle["timestamps/action"]
    _, (drop,), _ = _read(tmp_path)
    assert drop.reason.value == "bad_record" and "not for ['/action']" in drop.message


@pytest.mark.parametrize("compress", [True, False])
def test_frames_are_read_on_access_and_a_file_changed_meanwhile_is_a_named_error(fixed, tmp_path, compress):
    from vlaforge.datasets.teleop import FrameReadError
    from vlaforge.datasets.teleop_frames import LazyFrames

    path = write_aloha_hdf5(tmp_path / "episode_0.hdf5", fixed, compress=compress)
    (episode,), _, _ = _read(tmp_path)
    assert isinstance(episode.frames["exterior_1"], LazyFrames) and len(episode.frames["exterior_1"]) == 60
    with h5py.File(path, "r+") as handle:  # the source let go of the file: it opens for writing
        del handle["observations/images/cam_high"]
    assert len(list(episode.frames["left_wrist"])) == 60
    with pytest.raises(FrameReadError, match="episode_0.hdf5: /observations/images/cam_high, measurement 0 cannot be "
                                             "read again"):
        episode.frames["exterior_1"][0]


@pytest.mark.parametrize("compress", [True, False])
@pytest.mark.parametrize("layout", [{"chunks": None}, {"chunks": True, "compression": "gzip"}])
def test_images_stored_contiguous_or_compressed_give_the_same_frames(fixed, tmp_path, compress, layout):
    write_aloha_hdf5(tmp_path / "aloha" / "episode_0.hdf5", fixed, compress=compress)
    path = write_aloha_hdf5(tmp_path / "other" / "episode_0.hdf5", fixed, compress=compress)
    with h5py.File(path, "r+") as handle:  # one row per chunk (ALOHA's) -> contiguous, or gzip in h5py's chunks
        for name in CAMERAS:
            rows = handle[f"observations/images/{name}"][()]
            del handle[f"observations/images/{name}"]
            handle.create_dataset(f"observations/images/{name}", data=rows, **layout)
    (aloha,), _, _ = _read(tmp_path / "aloha")
    (other,), drops, _ = _read(tmp_path / "other")  # read after the source let go of the file
    assert drops == []
    expected = {camera: list(frames) for camera, frames in aloha.frames.items()}
    assert {camera: list(frames) for camera, frames in other.frames.items()} == expected
    assert _frames_while_held(tmp_path / "other") == [expected]  # read as an ingest reads them


def _frames_while_held(root):
    """Each episode's frames, read while the source holds its file (as the unit worker reads them)."""
    source = TeleopHdf5Source.Config(root=str(root)).build()
    return [{camera: list(frames) for camera, frames in episode.frames.items()}
            for unit in source.plan() for episode in source.read(unit, DropLedger())]


def _red_cube_recording():
    """A recording whose high camera looks at a red cube on a grey table (RGB arrays, as the camera driver gives
    them to ALOHA's recorder)."""
    recording = make_recording(seed=8, duration_s=0.5, fixed_rate_hz=50.0)
    pixels = np.full((96, 128, 3), 128, np.uint8)
    pixels[30:70, 40:90] = (220, 25, 20)
    track = recording.cameras["cam_high"]
    track.jpeg = [simplejpeg.encode_jpeg(pixels, quality=95, colorspace="RGB")] * len(track.jpeg)
    return recording


def _cube_colour(jpeg):
    """The mean colour of the cube's region under standard decoders (libjpeg-turbo through simplejpeg, and PIL)."""
    import io

    from PIL import Image

    decoded = [simplejpeg.decode_jpeg(jpeg, colorspace="RGB"), np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))]
    means = [frame[35:65, 45:85].reshape(-1, 3).mean(axis=0) for frame in decoded]
    np.testing.assert_allclose(means[0], means[1], atol=3)
    return means[0]


def test_a_red_cube_recorded_the_aloha_way_is_red_in_the_shard(tmp_path):
    recording = _red_cube_recording()
    path = write_aloha_hdf5(tmp_path / "in" / "episode_0.hdf5", recording)  # cv2.imencode's way: BGR pixels
    with h5py.File(path) as handle:
        raw = handle["observations/images/cam_high"][0][: int(handle["compress_len"][0, 0])].tobytes()
    red, _, blue = _cube_colour(raw)
    assert blue > 180 and red < 60  # the trap: the file's bytes, under a standard decoder, show a blue cube

    (episode,), drops, _ = _read(tmp_path / "in")
    assert drops == []
    red, green, blue = _cube_colour(episode.frames["exterior_1"][0])
    assert red > 180 and green < 60 and blue < 60  # the default undoes the recorder's swap

    (as_stored,), _, _ = _read(tmp_path / "in", channel_order={"cam_high": "rgb"})
    assert as_stored.frames["exterior_1"][0] == raw  # told the frames are standard: passed through, blue


def test_the_cube_is_red_in_the_shards_an_ingest_writes(tmp_path, ingest_locally):
    write_aloha_hdf5(tmp_path / "in" / "episode_0.hdf5", _red_cube_recording())
    report = ingest_locally("teleop-hdf5", tmp_path / "in", tmp_path / "out", min_steps=2, trim_idle=False)
    assert report.steps_written > 0
    (shard,) = sorted((tmp_path / "out").rglob("*.tar"))
    with tarfile.open(shard) as tar:
        frames = [tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith("exterior_1.jpg")]
    assert len(frames) == report.steps_written
    for frame in frames:
        red, green, blue = _cube_colour(frame)
        assert red > 180 and green < 60 and blue < 60


def test_raw_frames_are_not_swapped(tmp_path):
    write_aloha_hdf5(tmp_path / "episode_0.hdf5", _red_cube_recording(), compress=False)
    (episode,), _, _ = _read(tmp_path)
    red, _, blue = _cube_colour(episode.frames["exterior_1"][0])
    assert red > 180 and blue < 60


def test_a_channel_order_that_is_not_one_is_refused_naming_the_field():
    with pytest.raises(ValueError, match=r"channel_order must be one of \['bgr', 'rgb'\]"):
        TeleopHdf5Source.Config(root="x", channel_order="rbg")
    with pytest.raises(ValueError, match=r"channel_order names cameras \['cam_top'\]"):
        TeleopHdf5Source.Config(root="x", channel_order={"cam_top": "rgb"})
