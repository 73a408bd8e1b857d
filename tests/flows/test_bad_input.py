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
