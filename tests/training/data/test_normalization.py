"""`Normalize`: per-embodiment scaling of state and action, padding to the model's 32 dimensions, and the saved file
the exported policy reads back."""

import json
import pathlib

import numpy as np
import pytest

from vlaforge.training.data.normalization import Normalize, NormKind

ASSETS = pathlib.Path(__file__).resolve().parents[2] / "assets" / "training"


def normalize_of(kind=NormKind.MEAN_STD, **fields) -> Normalize:
    """One embodiment, "arm", with the given statistics per field (e.g. state={"mean": [...], "std": [...]})."""
    return Normalize.from_document({"embodiments": {"arm": fields}}, kind)


def test_mean_std_is_x_minus_mean_over_std_plus_epsilon_and_inverts():
    statistics = {"mean": [1.0, 1.0], "std": [2.0, 0.0]}
    normalize = normalize_of(state=statistics, action=statistics)
    x = np.array([[3.0, -1.0]], dtype=np.float32)
    y = normalize.normalize_actions("arm", x)
    assert y.dtype == np.float32
    np.testing.assert_allclose(y, [[(3 - 1) / (2 + 1e-6), (-1 - 1) / 1e-6]], rtol=1e-6)
    np.testing.assert_allclose(normalize.unnormalize_actions("arm", y), x, rtol=1e-5)
    np.testing.assert_array_equal(normalize.normalize_state("arm", x[0]), y[0])


def test_quantile_maps_q01_to_minus_one_and_q99_to_plus_one_and_inverts():
    statistics = {"q01": [-2.0, 0.0], "q99": [2.0, 10.0]}
    normalize = normalize_of(NormKind.QUANTILE, state=statistics, action=statistics)
    y = normalize.normalize_actions("arm", np.array([[-2.0, 0.0], [2.0, 10.0], [0.0, 5.0]], np.float32))
    np.testing.assert_allclose(y, [[-1, -1], [1, 1], [0, 0]], atol=1e-6)
    np.testing.assert_allclose(normalize.unnormalize_actions("arm", y)[2], [0.0, 5.0], atol=1e-5)


def test_padding_to_32_with_an_action_mask():
    padded, mask = Normalize.pad(np.ones((5, 7), np.float32))
    assert padded.shape == (5, 32) and padded[:, 7:].sum() == 0 and padded[:, :7].sum() == 35
    assert mask.tolist() == [True] * 7 + [False] * 25
    with pytest.raises(ValueError, match="33 dimensions do not fit the model's 32"):
        Normalize.pad(np.ones(33, np.float32))


def test_reads_the_statistics_document_the_pipelines_write(tmp_path):
    document = {"lineage": {"manifest": "m.parquet"}, "embodiments": {"franka": {
        "count": 10,
        "state": {"names": ["j0", "j1"], "mean": [0.0, 1.0], "std": [1.0, 2.0], "q01": [0, 0], "q99": [1, 1]},
        "action": {"names": ["x"], "mean": [0.5], "std": [0.1]},
    }}}
    path = tmp_path / "stats.json"
    path.write_text(json.dumps(document))
    normalize = Normalize.load(path)
    assert normalize.kind is NormKind.MEAN_STD and normalize.embodiments == ["franka"]
    assert (normalize.state_dim("franka"), normalize.action_dim("franka")) == (2, 1)
    normalize.save(tmp_path / "again.json")
    again = Normalize.load(tmp_path / "again.json")
    assert again == normalize
    np.testing.assert_array_equal(again.scaling("franka", "state").statistics["std"], [1.0, 2.0])


def test_a_file_exported_before_loads_and_saves_back_byte_for_byte(tmp_path):
    """`norm_stats.json` as policies were exported before `Normalize` (tests/assets: written by that code)."""
    normalize = Normalize.load(ASSETS / "norm_stats_v1.json")
    assert normalize.kind is NormKind.MEAN_STD and normalize.embodiments == ["aloha", "franka"]
    np.testing.assert_allclose(normalize.normalize_state("franka", np.full(8, 0.6)), 1.0, rtol=1e-4)
    normalize.save(tmp_path / "norm_stats.json")
    assert (tmp_path / "norm_stats.json").read_bytes() == (ASSETS / "norm_stats_v1.json").read_bytes()


def test_the_quantile_kind_is_saved_with_its_statistics_and_loads_back(tmp_path):
    statistics = {"q01": [-2.0, 0.0], "q99": [2.0, 10.0], "mean": [0.0, 0.0], "std": [1.0, 1.0]}
    normalize = normalize_of(NormKind.QUANTILE, state=statistics, action=statistics)
    normalize.save(tmp_path / "norm_stats.json")
    document = json.loads((tmp_path / "norm_stats.json").read_text())
    assert document["norm"] == "quantile" and set(document["embodiments"]["arm"]["action"]) == {"q01", "q99"}
    again = Normalize.load(tmp_path / "norm_stats.json")
    assert again.kind is NormKind.QUANTILE and again == normalize


def test_unknown_embodiments_and_bad_statistics_are_refused_naming_them():
    statistics = {"mean": [0.0], "std": [1.0]}
    with pytest.raises(KeyError, match=r"no normalization statistics for embodiment 'ur5'; known: \['arm'\]"):
        normalize_of(state=statistics, action=statistics).normalize_state("ur5", np.zeros(1))
    with pytest.raises(ValueError, match="embodiment 'arm' action: mean has 2 dims but std 3"):
        normalize_of(state=statistics, action={"mean": [0.0, 0.0], "std": [1.0, 1.0, 1.0]})
    with pytest.raises(ValueError, match=r"embodiment 'arm' state lacks \['q01', 'q99'\] needed for quantile"):
        normalize_of(NormKind.QUANTILE, state=statistics, action=statistics)
    with pytest.raises(ValueError, match="std has negative entries"):
        normalize_of(state={"mean": [0.0], "std": [-1.0]}, action=statistics)
