"""`vlaforge ingest` as a data engineer meets it: a summary table, and errors that say what to fix."""

import json
import shutil

import pytest

from vlaforge.flows.cli import main


@pytest.fixture
def droid_copy(droid_dataset, tmp_path):
    return shutil.copytree(droid_dataset, tmp_path / "droid" / "1.0.1")


def test_ingest_prints_the_summary_table(droid_copy, tmp_path, capsys):
    code = main(["ingest", "droid", "--input", str(droid_copy), "--output", str(tmp_path / "out"),
                 "--runner", "local", "--no-progress", "--shard-samples", "100"])
    out = capsys.readouterr().out
    assert code == 0
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    for label in ("episodes read", "episodes written", "steps: train", "shards", "dropped: failed_episode", "quarantined episodes"):
        assert label in out
    assert str(summary["steps_by_split"]["train"]) in out


def test_a_feature_missing_from_features_json_is_a_named_error(droid_copy, tmp_path, capsys):
    features = json.loads((droid_copy / "features.json").read_text())
    observation = features["featuresDict"]["features"]["steps"]["sequence"]["feature"]["featuresDict"]["features"][
        "observation"]["featuresDict"]["features"]
    del observation["joint_position"]
    (droid_copy / "features.json").write_text(json.dumps(features))
    code = main(["ingest", "droid", "--input", str(droid_copy), "--output", str(tmp_path / "out"),
                 "--runner", "local", "--no-progress"])
    out = capsys.readouterr().err
    assert code == 2
    assert "features.json" in out and "steps/observation/joint_position" in out and "--set" in out
    assert not (tmp_path / "out" / "manifest.parquet").exists()


def test_a_misspelt_source_option_gets_a_did_you_mean(droid_copy, tmp_path, capsys):
    code = main(["ingest", "droid", "--input", str(droid_copy), "--output", str(tmp_path / "out"),
                 "--runner", "local", "--set", "files_per_unti=2"])
    assert code == 2
    assert "did you mean 'files_per_unit'" in capsys.readouterr().err
