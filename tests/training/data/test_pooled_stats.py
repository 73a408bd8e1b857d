"""One robot, one normalization: statistics pooled over the components of one embodiment equal those of their data
together, and the loader normalizes with them (the exported policy saves the loader's `Normalize`:
tests/training/test_policy.py)."""

import numpy as np
import pytest

from vlaforge.pipelines.norm_stats import Moments
from vlaforge.training.data.pooled_stats import pool_by_embodiment
from vlaforge.training.data.robot_transform import RobotSampleTransform

NAMES = {"state": ["j0", "j1", "g"], "action": ["v0", "v1"]}


def _document(state: np.ndarray, action: np.ndarray, embodiment: str = "arm", names=NAMES) -> dict:
    """A stats.json document as pipelines/norm_stats.py writes it, from raw values."""
    entry = {"count": len(state)}
    for field, values in (("state", state), ("action", action)):
        moments = Moments.of(values)
        entry[field] = {"names": names[field], "mean": moments.mean.tolist(),
                        "std": np.sqrt(moments.m2 / moments.count).tolist(), "min": moments.low.tolist(),
                        "max": moments.high.tolist(), "q01": np.quantile(values, 0.01, axis=0).tolist(),
                        "q99": np.quantile(values, 0.99, axis=0).tolist()}
    return {"embodiments": {embodiment: entry}}


@pytest.fixture
def two_collections():
    """Two datasets of one robot with different ranges (300 and 1000 steps), and their values together."""
    rng = np.random.default_rng(3)
    a = rng.normal([0, 1, 0.5], [1, 2, 0.1], (300, 3)), rng.normal(0, 1, (300, 2))
    b = rng.normal([3, -1, 0.2], [0.5, 1, 0.3], (1000, 3)), rng.normal(1, 2, (1000, 2))
    together = np.concatenate([a[0], b[0]]), np.concatenate([a[1], b[1]])
    return {"teleop-2025": _document(*a), "teleop-2026": _document(*b)}, together


def test_pooled_moments_and_ranges_equal_those_of_the_data_together(two_collections):
    documents, (state, action) = two_collections
    pooled = pool_by_embodiment(documents)["embodiments"]["arm"]
    assert pooled["count"] == 1300 and pooled["state"]["names"] == NAMES["state"]
    for field, values in (("state", state), ("action", action)):
        np.testing.assert_allclose(pooled[field]["mean"], values.mean(axis=0), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(pooled[field]["std"], values.std(axis=0), rtol=1e-9)
        np.testing.assert_array_equal(pooled[field]["min"], values.min(axis=0))
        np.testing.assert_array_equal(pooled[field]["max"], values.max(axis=0))
        # Quantiles cannot be merged from summaries: the pooled ones bound the data's.
        assert (np.array(pooled[field]["q01"]) <= np.quantile(values, 0.01, axis=0) + 1e-12).all()
        assert (np.array(pooled[field]["q99"]) >= np.quantile(values, 0.99, axis=0) - 1e-12).all()


def test_an_embodiment_of_one_component_keeps_its_statistics_as_they_are(two_collections):
    documents, _ = two_collections
    other = _document(np.ones((5, 3)), np.zeros((5, 2)), embodiment="other")
    pooled = pool_by_embodiment({**documents, "solo": other})["embodiments"]
    assert pooled["other"] == other["embodiments"]["other"] and sorted(pooled) == ["arm", "other"]


def test_one_embodiment_name_with_different_dimensions_is_refused_naming_both():
    renamed = {"state": ["x", "y", "z"], "action": NAMES["action"]}
    documents = {"a": _document(np.zeros((4, 3)), np.zeros((4, 2))),
                 "b": _document(np.ones((4, 3)), np.ones((4, 2)), names=renamed)}
    with pytest.raises(ValueError, match=r"'arm': state dimensions of component 'b'.*'a'.*own embodiment name"):
        pool_by_embodiment(documents)


def test_the_loader_scales_both_collections_with_the_pooled_statistics(two_collections):
    documents, (state, action) = two_collections
    normalize = RobotSampleTransform.Config(image_size=(32, 32), chunk_len=4).build(documents).normalize
    scaling = normalize.scaling("arm", "state")
    np.testing.assert_allclose(scaling.offset, state.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(normalize.scaling("arm", "action").statistics["std"], action.std(axis=0), rtol=1e-5)
    np.testing.assert_allclose(normalize.normalize_state("arm", state).mean(axis=0), 0, atol=1e-4)
