"""Normalization by embodiment statistics and padding to the model's 32 dimensions."""

import json

import numpy as np
import pytest

from vlaforge.training.policy import normalization
from vlaforge.training.policy.normalization import EmbodimentStats


def test_normalize_is_mean_std_with_epsilon_and_inverts():
    x = np.array([[3.0, -1.0]], dtype=np.float32)
    mean, std = np.array([1.0, 1.0], np.float32), np.array([2.0, 0.0], np.float32)
    y = normalization.normalize(x, mean, std)
    np.testing.assert_allclose(y, [[(3 - 1) / (2 + 1e-6), (-1 - 1) / 1e-6]], rtol=1e-6)
    np.testing.assert_allclose(normalization.unnormalize(y, mean, std), x, rtol=1e-5)


def test_padding_to_32_with_an_action_mask():
    padded, mask = normalization.pad_last(np.ones((5, 7), np.float32))
    assert padded.shape == (5, 32) and padded[:, 7:].sum() == 0 and padded[:, :7].sum() == 35
    assert mask.tolist() == [True] * 7 + [False] * 25
    with pytest.raises(ValueError, match="33 dimensions do not fit the model's 32"):
        normalization.pad_last(np.ones(33, np.float32))


def test_reads_the_statistics_document_the_pipelines_write(tmp_path):
    document = {"lineage": {"manifest": "m.parquet"}, "embodiments": {"franka": {
        "count": 10,
        "state": {"names": ["j0", "j1"], "mean": [0.0, 1.0], "std": [1.0, 2.0], "q01": [0, 0], "q99": [1, 1]},
        "action": {"names": ["x"], "mean": [0.5], "std": [0.1]},
    }}}
    path = tmp_path / "stats.json"
    path.write_text(json.dumps(document))
    stats = normalization.load_stats(path)
    assert stats["franka"].state_dim == 2 and stats["franka"].action_dim == 1
    normalization.save_stats(stats, tmp_path / "again.json")
    again = normalization.load_stats(tmp_path / "again.json")
    np.testing.assert_array_equal(again["franka"].state_std, [1.0, 2.0])


def test_mismatched_statistics_are_refused_with_the_field_named():
    with pytest.raises(ValueError, match="action mean has 2 dims but std 3"):
        EmbodimentStats(state_mean=[0.0], state_std=[1.0], action_mean=[0.0, 0.0], action_std=[1.0, 1.0, 1.0])
