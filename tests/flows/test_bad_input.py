"""Bad input in a real ingest: each bad episode becomes a quarantine row naming file, record and fix; the rest lands."""

import json
import shutil

import numpy as np
import pyarrow.parquet as pq

from vlaforge.datasets.synth.droid import make_droid_episode, write_droid_dataset, write_droid_shard

SHARDS = ["droid-train.tfrecord-0000{}-of-00003".format(i) for i in range(3)]


def test_nan_action_corrupt_jpeg_and_truncated_shard_are_quarantined(tmp_path, ingest_locally):
    dataset = write_droid_dataset(tmp_path / "raw", n_episodes=9, n_shards=3, min_steps=20, max_steps=20, seed=1,
                                  failure_every=0)
    episodes = [make_droid_episode(i, seed=1, n_steps=20) for i in range(3)]
    episodes[0]["steps/action_dict/joint_velocity"][5, 1] = np.nan
    frames = episodes[1]["steps/observation/wrist_image_left"]
    frames[4] = frames[4][:100]
    write_droid_shard(dataset / SHARDS[0], episodes)
    truncated = (dataset / SHARDS[2]).read_bytes()
    (dataset / SHARDS[2]).write_bytes(truncated[: len(truncated) * 2 // 3])

    report = ingest_locally("droid", dataset, tmp_path / "out", shard_max_samples=50)

    rows = pq.read_table(tmp_path / "out" / "quarantine.parquet").to_pylist()
    by_reason = {row["reason"]: row for row in rows}
    assert sorted(by_reason) == ["bad_image", "nonfinite", "truncated_file"]
    assert "action[5, 1]" in by_reason["nonfinite"]["message"] and by_reason["nonfinite"]["file"] == SHARDS[0]
    assert "step 4" in by_reason["bad_image"]["message"] and "wrist_image_left" in by_reason["bad_image"]["message"]
    assert SHARDS[2] in by_reason["truncated_file"]["file"] and "record 2" in by_reason["truncated_file"]["message"]
    # 9 episodes: 2 bad in shard 0, the last of shard 2 cut off; the other 6 land.
    assert report.episodes_written == 6 and report.quarantined == 3
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["drops_by_reason"] == {"bad_image": 1, "nonfinite": 1, "truncated_file": 1}


def _damaged_scan(jpeg: bytes) -> bytes:
    """32 bytes scrambled half-way through the entropy-coded data; markers and header intact."""
    from vlaforge.datasets.frames import header_length

    middle = (header_length(jpeg) + len(jpeg)) // 2
    return jpeg[:middle] + bytes(b ^ 0x5A for b in jpeg[middle : middle + 32]) + jpeg[middle + 32 :]


def test_a_frame_damaged_inside_its_scan_is_quarantined_by_default(tmp_path, ingest_locally):
    """What the header check let into the shards (and `corpus verify` passed, its sha256 being that of the damaged
    bytes) is caught by the default check, naming the episode's file, the camera and the step."""
    dataset = write_droid_dataset(tmp_path / "raw", n_episodes=6, n_shards=2, min_steps=20, max_steps=20, seed=2,
                                  failure_every=0)
    episodes = [make_droid_episode(i, seed=2, n_steps=20) for i in range(3)]
    frames = episodes[1]["steps/observation/exterior_image_1_left"]
    frames[7] = _damaged_scan(frames[7])
    write_droid_shard(dataset / "droid-train.tfrecord-00000-of-00002", episodes)

    report = ingest_locally("droid", dataset, tmp_path / "default", shard_max_samples=50)
    rows = pq.read_table(tmp_path / "default" / "quarantine.parquet").to_pylist()
    assert [row["reason"] for row in rows] == ["bad_image"] and report.episodes_written == 5
    assert "step 7" in rows[0]["message"] and "exterior_image_1_left" in rows[0]["message"]
    assert "Corrupt JPEG data" in rows[0]["message"]

    header_only = ingest_locally("droid", dataset, tmp_path / "header", shard_max_samples=50, verify_jpeg="header")
    assert header_only.episodes_written == 6 and header_only.quarantined == 0  # the damage lands in a shard
