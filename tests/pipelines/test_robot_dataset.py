"""The job runner with teleop sources whose frames are read on access: the same shards as an eager read, samples written
as their frames are read, and a bad frame late in an episode leaving none of that episode in any shard."""

import copy
import dataclasses
import io
import json
import tarfile
from collections.abc import Sequence

import pyarrow.parquet as pq
import pytest

from vlaforge.datasets.synth.teleop import make_recording
from vlaforge.datasets.synth.teleop_hdf5 import write_aloha_dataset, write_aloha_hdf5
from vlaforge.datasets.synth.teleop_mcap import write_teleop_mcap
from vlaforge.datasets.teleop_frames import LazyFrames
from vlaforge.datasets.teleop_hdf5 import TeleopHdf5Source
from vlaforge.datasets.teleop_mcap import TeleopMcapSource
from vlaforge.datasets.timeline import NS_PER_S
from vlaforge.pipelines import robot_dataset

SOURCES = {"teleop-mcap": TeleopMcapSource, "teleop-hdf5": TeleopHdf5Source}


def _holed(seed, duration_s, holes):
    """A recording whose left wrist camera is silent during each (from_s, to_s) of `holes`."""
    recording = make_recording(seed=seed, duration_s=duration_s)
    track = recording.cameras["cam_left_wrist"]
    t = (track.stamps - recording.start_ns) / NS_PER_S
    keep = ~sum(((t > a) & (t < b) for a, b in holes), start=t < -1)
    track.stamps, track.log = track.stamps[keep], track.log[keep]
    track.jpeg = [jpeg for jpeg, k in zip(track.jpeg, keep) if k]
    return recording


def _shards(output):
    return {p.relative_to(output).as_posix(): p.read_bytes() for p in sorted(output.rglob("*.tar"))}


def _eagerly(read):
    """`Source.read` as before frames were lazy: every frame of an episode in a list when the episode is handed on."""

    def read_eagerly(self, unit, ledger):
        for episode in read(self, unit, ledger):
            frames = {camera: list(frames) for camera, frames in episode.frames.items()}
            yield dataclasses.replace(episode, frames=frames)

    return read_eagerly


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    write_teleop_mcap(root / "mcap" / "a.mcap", _holed(31, 3.0, [(1.0, 1.3)]))
    write_teleop_mcap(root / "mcap" / "b.mcap", make_recording(seed=32, duration_s=2.0))
    write_aloha_dataset(root / "hdf5", n_episodes=2, duration_s=1.5, seed=33, compress=False)
    return root


@pytest.mark.parametrize(("source", "folder", "options"), [
    ("teleop-mcap", "mcap", {"source_options": {"on_gap": "split"}, "frame_size": (48, 64)}),
    ("teleop-mcap", "mcap", {"shard_max_samples": 25, "validation_fraction": 0.5}),
    ("teleop-hdf5", "hdf5", {"shard_max_samples": 25}),
])
def test_frames_read_on_access_write_the_shards_an_eager_read_writes(inputs, tmp_path, monkeypatch, ingest_locally,
                                                                     source, folder, options):
    lazy = ingest_locally(source, inputs / folder, tmp_path / "lazy", **copy.deepcopy(options))
    cls = SOURCES[source]
    monkeypatch.setattr(cls, "read", _eagerly(cls.read))
    eager = ingest_locally(source, inputs / folder, tmp_path / "eager", **copy.deepcopy(options))
    assert _shards(tmp_path / "lazy") == _shards(tmp_path / "eager") != {}
    assert lazy.steps_written == eager.steps_written > 0 and lazy.episodes_written == eager.episodes_written


class _Counted(Sequence):
    """Frames that log every read into `log`."""

    def __init__(self, frames, log):
        self.frames, self.log = frames, log

    def __len__(self):
        return len(self.frames)

    def __getitem__(self, item):
        if isinstance(item, slice):
            return _Counted(self.frames[item], self.log)
        self.log.append(item)
        return self.frames[item]


def test_each_sample_is_written_before_the_next_steps_frames_are_read(inputs, tmp_path, monkeypatch, ingest_locally):
    reads, reads_at_write = [], []
    original_read, original_add = TeleopMcapSource.read, robot_dataset.ShardSink.add

    def counted_read(self, unit, ledger):
        for episode in original_read(self, unit, ledger):
            assert all(isinstance(frames, LazyFrames) for frames in episode.frames.values())
            yield dataclasses.replace(episode, frames={c: _Counted(f, reads) for c, f in episode.frames.items()})

    def add(self, sample):
        reads_at_write.append(len(reads))
        original_add(self, sample)

    monkeypatch.setattr(TeleopMcapSource, "read", counted_read)
    monkeypatch.setattr(robot_dataset.ShardSink, "add", add)
    report = ingest_locally("teleop-mcap", inputs / "mcap", tmp_path / "out")
    cameras = 3
    assert len(reads_at_write) == report.steps_written > 100
    # Sample k is written after its own 3 frames were read and before any later step's: never a whole episode.
    assert reads_at_write == [cameras * (k + 1) for k in range(report.steps_written)]


def _bad_late_frames(recording, camera):
    """`recording` with three consecutive frames at 80 % of the take cut mid-scan (their header and end marker
    intact): only decoding them finds them bad."""
    bad = copy.deepcopy(recording)
    jpegs = bad.cameras[camera].jpeg
    late = int(len(jpegs) * 0.8)
    for i in range(late, late + 3):
        jpegs[i] = jpegs[i][: len(jpegs[i]) // 2] + b"\xff\xd9"
    return bad


@pytest.mark.parametrize("source", ["teleop-mcap", "teleop-hdf5"])
def test_a_bad_frame_late_in_an_episode_leaves_none_of_that_episode_in_a_shard(tmp_path, ingest_locally, source):
    root = tmp_path / "in"
    if source == "teleop-mcap":
        good, bad = make_recording(seed=41, duration_s=2.0), make_recording(seed=42, duration_s=2.0)
        write_teleop_mcap(root / "a_good.mcap", good)
        write_teleop_mcap(root / "b_bad.mcap", _bad_late_frames(bad, "cam_right_wrist"))
        bad_file = "b_bad.mcap"
    else:
        good, bad = (make_recording(seed=s, duration_s=2.0, fixed_rate_hz=50.0) for s in (43, 44))
        write_aloha_hdf5(root / "a_good.hdf5", good)
        write_aloha_hdf5(root / "b_bad.hdf5", _bad_late_frames(bad, "cam_right_wrist"))
        bad_file = "b_bad.hdf5"
    # Resized frames are decoded, so the cut ones cannot be stored; 10-sample shards would commit most of the bad
    # episode before its 80 % mark if its frames were only checked as its samples are written.
    report = ingest_locally(source, root, tmp_path / "out", frame_size=(48, 64), shard_max_samples=10,
                            validation_fraction=0.0)
    (row,) = pq.read_table(tmp_path / "out" / "quarantine.parquet").to_pylist()
    assert (row["file"], row["reason"]) == (bad_file, "bad_image") and "does not decode" in row["message"]
    assert report.episodes_written == 1 and report.steps_written > 40
    episodes = set()
    for shard in (tmp_path / "out").rglob("*.tar"):
        with tarfile.open(shard) as tar:
            for member in tar:
                if member.name.endswith(".json"):
                    episodes.add(json.load(io.BytesIO(tar.extractfile(member).read()))["episode_id"])
    assert episodes == {f"in-{bad_file.replace('b_bad', 'a_good').rsplit('.', 1)[0]}"}
    manifest = pq.read_table(tmp_path / "out" / "manifest.parquet").to_pylist()
    assert sum(row["samples"] for row in manifest) == report.steps_written
