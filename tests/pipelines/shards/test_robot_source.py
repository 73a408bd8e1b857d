"""Robot shards read back as episodes: the same steps, states, actions and frames that ingest wrote."""

import shutil

import numpy as np
import pytest

from vlaforge.datasets.droid_rlds import DroidRldsSource
from vlaforge.datasets.drops import DropLedger, DropReason
from vlaforge.datasets.source import SourceError
from vlaforge.pipelines.shards.manifest import read_manifest
from vlaforge.pipelines.shards.robot_source import RobotShardSource


def _episodes(root, **config):
    source = RobotShardSource.Config(root=str(root), **config).build()
    ledger = DropLedger()
    units = source.plan()
    return units, [e for unit in units for e in source.read(unit, ledger)], ledger


def test_episodes_match_what_was_ingested(droid_dataset, droid_shards):
    output, _ = droid_shards
    units, episodes, ledger = _episodes(output, split=None, shards_per_unit=1)
    assert len(ledger) == 0
    assert len({e.episode_id for e in episodes}) == len(episodes)  # no episode cut in two by a unit
    source = DroidRldsSource.Config(root=str(droid_dataset)).build()
    originals = {e.episode_id: e for unit in source.plan() for e in source.read(unit, DropLedger())}
    for episode in episodes:
        original = originals[episode.episode_id]
        n, start = len(episode), episode.first_step
        np.testing.assert_array_equal(episode.state, original.state[start : start + n].astype(np.float32))
        np.testing.assert_array_equal(episode.action, original.action[start : start + n].astype(np.float32))
        assert episode.frames.keys() == original.frames.keys()
        assert episode.frames["exterior_1"][0] == original.frames["exterior_1"][start]  # passed through untouched
        assert episode.instructions == original.instructions
        assert "cartesian_position" in episode.extras
    splits = {e: r.split for r in read_manifest(output / "manifest.parquet") for e in r.episodes}
    assert {e.episode_id: e.flags["split"] for e in episodes} == splits  # VL samples made from it keep it


@pytest.fixture(scope="module")
def small_shards(droid_dataset, ingest_locally, tmp_path_factory):
    """Shards small enough that episodes straddle them."""
    output = tmp_path_factory.mktemp("small-shards")
    ingest_locally("droid", droid_dataset, output, shard_max_samples=40, validation_fraction=0.0)
    return output


def test_units_never_split_an_episode(small_shards):
    output = small_shards
    records = [r for r in read_manifest(output / "manifest.parquet") if r.split == "train"]
    straddling = [a.url for a, b in zip(records, records[1:]) if a.episodes[-1] == b.episodes[0]]
    assert straddling, "the fixture should have an episode spread over two shards"
    units, _, _ = _episodes(output, shards_per_unit=1)
    for url in straddling:
        unit = next(u for u in units if url in u.files)
        assert unit.files.index(url) < len(unit.files) - 1  # the next shard is in the same unit


def test_truncated_shard_is_quarantined_and_the_rest_is_read(droid_shards, tmp_path):
    output, _ = droid_shards
    copy = tmp_path / "copy"
    shutil.copytree(output, copy)
    records = read_manifest(copy / "manifest.parquet")
    victim = copy / records[0].url
    victim.write_bytes(victim.read_bytes()[: victim.stat().st_size // 3])
    _, episodes, ledger = _episodes(copy, split=None)
    drops = ledger.take()
    assert [d.reason for d in drops] == [DropReason.UNREADABLE_FILE]
    assert records[0].url in drops[0].message
    assert len({e.episode_id for e in episodes}) >= len({ep for r in records[1:] for ep in r.episodes}) - 1


def test_missing_manifest_names_the_fix(tmp_path):
    with pytest.raises(SourceError, match="vlaforge ingest"):
        RobotShardSource.Config(root=str(tmp_path)).build().plan()
