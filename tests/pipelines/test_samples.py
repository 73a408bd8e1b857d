import io
import json

import numpy as np

from vlaforge.datasets.synth.episodes import make_episode
from vlaforge.pipelines.samples import RobotSampleBuilder, action_chunks
from vlaforge.pipelines.split import Split, split_of


def _load(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def test_action_chunks_are_zero_padded_past_the_end():
    action = np.arange(10, dtype=np.float32).reshape(5, 2)
    chunks, valid = action_chunks(action, 4)
    assert chunks.shape == (5, 4, 2)
    np.testing.assert_array_equal(chunks[0], action[:4])
    np.testing.assert_array_equal(chunks[3], [[6, 7], [8, 9], [0, 0], [0, 0]])
    assert valid.tolist() == [4, 4, 3, 2, 1]


def test_one_sample_per_step_with_the_documented_members():
    episode = make_episode(n_steps=12)
    episode.first_step = 3
    samples = RobotSampleBuilder.Config(chunk_len=8, validation_fraction=0.0).build()([episode])
    assert len(samples) == 12
    first, last = samples[0], samples[-1]
    assert first.key == "synth-0001_000003" and "." not in first.key
    assert sorted(first.members) == [
        "action.npy", "cartesian_position.npy", "exterior_1.jpg", "meta.json", "state.npy", "wrist.jpg"
    ]
    assert first.members["wrist.jpg"] == episode.frames["wrist"][0]
    np.testing.assert_array_equal(_load(first.members["state.npy"]), episode.state[0])
    assert _load(first.members["action.npy"]).shape == (8, 8)
    np.testing.assert_array_equal(_load(last.members["action.npy"])[0], episode.action[-1])
    assert not _load(last.members["action.npy"])[1:].any()
    meta = json.loads(last.members["meta.json"])
    assert meta["valid_len"] == 1 and meta["step"] == 14 and meta["split"] == "train"
    assert meta["instruction"] == "put the red mug on the shelf"
    assert meta["state_names"][0] == "joint_0" and meta["flags"] == {"success": True}
    assert meta["lineage"] == {"file": "synth.tfrecord", "index": "record 0", "source_version": "0.0.1"}


def test_split_is_per_episode_deterministic_and_near_the_fraction():
    ids = [f"droid-{i:05d}" for i in range(4000)]
    splits = [split_of(i, 0.1) for i in ids]
    assert splits == [split_of(i, 0.1) for i in ids]
    assert abs(splits.count(Split.VALIDATION) / len(ids) - 0.1) < 0.015
    assert all(split_of(i, 0.0) is Split.TRAIN for i in ids[:100])
    episode = make_episode("held-out-candidate")
    builder = RobotSampleBuilder.Config(validation_fraction=0.5).build()
    assert len({s.split for s in builder([episode])}) == 1


def _lazily(episode, reads):
    """`episode` with each camera's frames read on access (as the teleop sources hand them over), logged in `reads`."""
    from vlaforge.datasets.teleop_frames import LazyFrames

    def reader(frames):
        def read(index):
            reads.append(index)
            return frames[index]
        return read

    episode.frames = {camera: LazyFrames(reader(frames), np.arange(len(frames))) for camera, frames in
                      episode.frames.items()}
    return episode


def test_iter_samples_builds_each_step_when_asked_and_matches_the_list():
    reads = []
    eager = make_episode(n_steps=20)
    lazy = _lazily(make_episode(n_steps=20), reads)
    builder = RobotSampleBuilder.Config(chunk_len=6, validation_fraction=0.0).build()
    samples = builder.iter_samples(lazy)
    assert reads == []
    first = next(samples)
    assert reads == [0, 0]  # step 0 of each camera, nothing more
    rest = list(samples)
    assert [(s.key, s.members) for s in [first, *rest]] == [(s.key, s.members) for s in builder([eager])]
    chunks, valid = action_chunks(eager.action, 6)
    assert [_load(s.members["action.npy"]).tolist() for s in rest] == chunks[1:].tolist()
    assert [json.loads(s.members["meta.json"])["valid_len"] for s in rest] == valid[1:].tolist()


def test_episodes_of_one_split_group_share_its_split():
    builder = RobotSampleBuilder.Config(validation_fraction=0.5).build()
    ids = [f"rec-seg{k:02d}" for k in range(8)]
    assert len({split_of(i, 0.5) for i in ids}) == 2  # on their own ids, they would straddle the splits
    segments = [make_episode(i, n_steps=3) for i in ids]
    for segment in segments:
        segment.split_group = "rec"
    assert {s.split for s in builder(segments)} == {split_of("rec", 0.5)}
    alone = make_episode("rec-seg01", n_steps=3)
    assert alone.split_key == "rec-seg01" and {s.split for s in builder([alone])} == {split_of("rec-seg01", 0.5)}


def test_long_episode_samples_match_a_plain_encoding_of_every_step():
    """Arrays are encoded a block of steps at a time: steps on both sides of a block boundary, and the last ones,
    carry exactly the bytes np.save and json.dumps give for that step alone."""
    from vlaforge.pipelines.samples import json_bytes, npy_bytes

    episode = make_episode(n_steps=600)
    episode.instructions = ['pour 50% of the "water"', "then stop"]  # '%' and quotes in the shared meta
    episode.timestamps = episode.timestamps + 1e-7  # timestamps that round to 6 places
    samples = RobotSampleBuilder.Config(chunk_len=8, validation_fraction=0.0).build()([episode])
    chunks, valid = action_chunks(episode.action.astype(np.float32), 8)
    for i in (0, 255, 256, 511, 512, 599):
        members = samples[i].members
        assert members["state.npy"] == npy_bytes(episode.state[i].astype(np.float32))
        assert members["action.npy"] == npy_bytes(chunks[i])
        assert members["cartesian_position.npy"] == npy_bytes(episode.extras["cartesian_position"][i])
        meta = json.loads(members["meta.json"])
        assert members["meta.json"] == json_bytes(meta)  # compact, key-sorted: the bytes json.dumps writes
        assert meta["step"] == i and meta["valid_len"] == valid[i]
        assert meta["timestamp"] == round(float(episode.timestamps[i]), 6)
        assert meta["instructions"] == episode.instructions
