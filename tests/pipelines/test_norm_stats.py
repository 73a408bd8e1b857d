import hashlib
import json

import numpy as np

from vlaforge.pipelines import norm_stats
from vlaforge.pipelines.norm_stats import compute_stats
from vlaforge.pipelines.runners import LocalRunner
from vlaforge.pipelines.samples import json_bytes, npy_bytes
from vlaforge.pipelines.shards.writer import TarShardWriter


def _write_shard(path, states, actions, embodiment="arm"):
    writer = TarShardWriter(path)
    for i, (state, action) in enumerate(zip(states, actions)):
        meta = {"embodiment": embodiment, "state_names": ["a", "b", "c"], "action_names": ["x", "y"]}
        # A member that is not a JPEG at all: statistics must never read (let alone decode) images.
        writer.write(f"k{path.stem}_{i:06d}", {"state.npy": npy_bytes(state), "action.npy": npy_bytes(action),
                                                "meta.json": json_bytes(meta), "wrist.jpg": b"not a jpeg"})
    writer.finish()


def test_statistics_match_numpy_over_several_shards(tmp_path):
    rng = np.random.default_rng(0)
    states = rng.normal(2.0, 3.0, size=(3000, 3)).astype(np.float32)
    actions = rng.uniform(-1, 1, size=(3000, 4, 2)).astype(np.float32)
    paths = []
    for i, part in enumerate(np.array_split(np.arange(3000), 3)):
        paths.append(tmp_path / f"s{i}.tar")
        _write_shard(paths[-1], states[part], actions[part])
    stats = compute_stats(paths, LocalRunner())["arm"]
    assert stats["count"] == 3000
    np.testing.assert_allclose(stats["state"]["mean"], states.mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats["state"]["std"], states.std(0), rtol=1e-5)
    np.testing.assert_allclose(stats["state"]["min"], states.min(0))
    np.testing.assert_allclose(stats["action"]["max"], actions[:, 0].max(0))
    span = states.max(0) - states.min(0)
    np.testing.assert_allclose(stats["state"]["q01"], np.quantile(states, 0.01, axis=0, method="inverted_cdf"), atol=2 * span.max() / 2048)
    np.testing.assert_allclose(stats["action"]["q99"], np.quantile(actions[:, 0], 0.99, axis=0, method="inverted_cdf"), atol=2e-3)
    assert stats["state"]["names"] == ["a", "b", "c"]


def test_stats_file_carries_the_manifest_hash(tmp_path):
    manifest = tmp_path / "manifest.parquet"
    manifest.write_bytes(b"pretend parquet")
    path = norm_stats.write_stats(tmp_path, {"arm": {}}, manifest, "train")
    lineage = json.loads(path.read_text())["lineage"]
    assert lineage == {
        "manifest": "manifest.parquet", "manifest_sha256": hashlib.sha256(b"pretend parquet").hexdigest(), "split": "train"
    }
