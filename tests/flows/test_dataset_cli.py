"""`vlaforge dataset filter|split|merge` on real ingest outputs: the samples kept are the inputs' bytes, the new
dataset has its own manifest, statistics, options and per-episode lineage, and the same inputs give the same
bytes."""

import io
import json
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest

from vlaforge.flows.cli import main

RUN = ["--runner", "local", "--no-progress"]


@pytest.fixture(scope="module")
def ingested(tmp_path_factory, ingest_locally):
    """A DROID dataset with failed episodes kept, in small shards, so episodes straddle shards."""
    from vlaforge.datasets.synth.droid import write_droid_dataset

    root = tmp_path_factory.mktemp("edit")
    raw = write_droid_dataset(root / "raw", n_episodes=9, n_shards=3, seed=12, failure_every=3)
    ingest_locally("droid", raw, root / "droid", shard_max_samples=25, validation_fraction=0.3, keep_failed=True)
    return root / "droid"


def _samples(dataset):
    """{key: {member: bytes}} of every sample of a dataset's shards."""
    samples = {}
    for shard in sorted(dataset.rglob("*.tar")):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                key, extension = member.name.split(".", 1)
                samples.setdefault(key, {})[extension] = tar.extractfile(member).read()
    return samples


def _episodes(samples):
    by_episode = {}
    for key, members in samples.items():
        meta = json.loads(members["meta.json"])
        by_episode.setdefault(meta["episode_id"], []).append(key)
    return by_episode


def _meta(samples, episode_keys):
    return json.loads(samples[episode_keys[0]]["meta.json"])


def test_filter_keeps_the_selected_episodes_byte_for_byte(ingested, tmp_path, capsys):
    source = _samples(ingested)
    episodes = _episodes(source)
    successful = {e for e, keys in episodes.items() if _meta(source, keys)["flags"]["success"]}
    long_enough = {e for e in successful if len(episodes[e]) >= 40}
    assert 0 < len(long_enough) < len(episodes)
    assert main(["dataset", "filter", str(ingested), "--output", str(tmp_path / "kept"), "--success",
                 "--min-steps", "40", "--shard-samples", "30", *RUN]) == 0
    out = capsys.readouterr().out
    assert "episodes written" in out and "dropped: not_selected" in out

    kept = _samples(tmp_path / "kept")
    assert set(_episodes(kept)) == long_enough
    assert kept == {key: source[key] for e in long_enough for key in episodes[e]}  # every member, byte for byte
    summary = json.loads((tmp_path / "kept" / "summary.json").read_text())
    assert summary["episodes_written"] == len(long_enough)
    assert summary["drops_by_reason"] == {"not_selected": len(episodes) - len(long_enough)}
    stats = json.loads((tmp_path / "kept" / "stats.json").read_text())["embodiments"]["franka_droid"]
    train_states = [np.load(io.BytesIO(m["state.npy"])) for m in kept.values()
                    if json.loads(m["meta.json"])["split"] == "train"]
    np.testing.assert_allclose(stats["state"]["mean"], np.mean(train_states, axis=0), rtol=1e-5, atol=1e-6)
    lineage = pq.read_table(tmp_path / "kept" / "lineage.parquet").to_pylist()
    assert {row["episode_id"] for row in lineage} == long_enough
    assert all(row["input"] == str(ingested) and len(row["input_manifest_sha256"]) == 64 for row in lineage)
    options = json.loads((tmp_path / "kept" / "options.json").read_text())["options"]
    assert options["stages.EpisodeSelection.min_steps"] == 40 and options["stages.EpisodeSelection.success"] is True

    assert main(["dataset", "filter", str(ingested), "--output", str(tmp_path / "again"), "--name", "kept",
                 "--success", "--min-steps", "40", "--shard-samples", "30", *RUN]) == 0
    for name in ("manifest.parquet", "stats.json", "lineage.parquet"):
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "kept" / name).read_bytes(), name
    assert _samples(tmp_path / "again") == kept


def test_filter_by_instruction_text_and_by_id(ingested, tmp_path):
    source = _samples(ingested)
    episodes = _episodes(source)
    first = sorted(episodes)[0]
    word = _meta(source, episodes[first])["instruction"].split()[-1].upper()  # any case matches
    matching = {e for e, keys in episodes.items() if word.lower() in _meta(source, keys)["instruction"].lower()}
    assert main(["dataset", "filter", str(ingested), "--output", str(tmp_path / "text"), "--instruction", word,
                 *RUN]) == 0
    assert set(_episodes(_samples(tmp_path / "text"))) == matching
    assert main(["dataset", "filter", str(ingested), "--output", str(tmp_path / "one"), "--episode", first,
                 *RUN]) == 0
    assert set(_episodes(_samples(tmp_path / "one"))) == {first}


def test_split_reassigns_whole_episodes_and_changes_only_their_meta(ingested, tmp_path):
    from vlaforge.pipelines.split import split_of

    source = _samples(ingested)
    assert main(["dataset", "split", str(ingested), "--output", str(tmp_path / "resplit"),
                 "--validation-fraction", "0.5", *RUN]) == 0
    resplit = _samples(tmp_path / "resplit")
    assert set(resplit) == set(source)
    for episode, keys in _episodes(resplit).items():
        expected = split_of(episode, 0.5).value
        for key in keys:
            meta, before = json.loads(resplit[key]["meta.json"]), json.loads(source[key]["meta.json"])
            assert meta == {**before, "split": expected}
            assert {m: b for m, b in resplit[key].items() if m != "meta.json"} == \
                {m: b for m, b in source[key].items() if m != "meta.json"}
    manifest = pq.read_table(tmp_path / "resplit" / "manifest.parquet").to_pylist()
    for row in manifest:  # a shard holds one split, under its directory
        assert row["url"].startswith(f"{row['split']}/")


def test_merge_puts_two_datasets_of_one_embodiment_back_together(ingested, tmp_path):
    for flag, name in (("--success", "good"), ("--failed", "bad")):
        assert main(["dataset", "filter", str(ingested), "--output", str(tmp_path / name), flag, *RUN]) == 0
    assert main(["dataset", "merge", str(tmp_path / "good"), str(tmp_path / "bad"), "--output",
                 str(tmp_path / "all"), *RUN]) == 0
    assert _samples(tmp_path / "all") == _samples(ingested)
    lineage = pq.read_table(tmp_path / "all" / "lineage.parquet").to_pylist()
    assert {row["input"] for row in lineage} == {str(tmp_path / "good"), str(tmp_path / "bad")}


def test_merge_refuses_overlap_and_other_embodiments(ingested, tmp_path, capsys):
    assert main(["dataset", "merge", str(ingested), str(ingested), "--output", str(tmp_path / "twice"), *RUN]) == 2
    assert "more than once" in capsys.readouterr().err
    assert main(["dataset", "filter", str(ingested), "--output", str(tmp_path / "half"), "--success", *RUN]) == 0
    capsys.readouterr()
    assert main(["dataset", "merge", str(ingested), str(tmp_path / "half"), "--output", str(tmp_path / "o"),
                 *RUN]) == 2
    err = capsys.readouterr().err
    assert "is in both" in err and "filter it out of one of them first" in err
    stats = json.loads((tmp_path / "half" / "stats.json").read_text())
    stats["embodiments"] = {"aloha_bimanual": stats["embodiments"]["franka_droid"]}
    (tmp_path / "half" / "stats.json").write_text(json.dumps(stats))
    assert main(["dataset", "merge", str(ingested), str(tmp_path / "half"), "--output", str(tmp_path / "o"),
                 *RUN]) == 2
    assert "merge takes datasets of one embodiment" in capsys.readouterr().err


def test_an_edit_never_writes_into_its_input(ingested, capsys):
    assert main(["dataset", "filter", str(ingested), "--output", str(ingested), "--success", *RUN]) == 2
    assert "is an input" in capsys.readouterr().err
