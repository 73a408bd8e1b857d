"""`relabel --generator trajectory` without a calibration file: DROID ingested with its published calibration, the
trajectory generator reads it from the shards and gives the same points a calibration file with those cameras
gives."""

import json
import tarfile

from vlaforge.annotators.relabel_recipe import relabel_job
from vlaforge.datasets.calibration import CALIBRATION_FORMAT
from vlaforge.datasets.drops import DropLedger
from vlaforge.datasets.synth.droid import episode_paths, write_droid_dataset
from vlaforge.datasets.synth.droid_calibration import write_droid_calibration
from vlaforge.pipelines.job import run_job
from vlaforge.pipelines.runners import LocalRunner
from vlaforge.pipelines.shards.manifest import read_manifest
from vlaforge.pipelines.shards.robot_source import RobotShardSource


def _answers(output):
    answers = {}
    for record in read_manifest(output / "manifest.parquet"):
        with tarfile.open(output / record.url) as tar:
            for member in tar:
                if member.name.endswith("conversation.json"):
                    answers[member.name.split(".")[0]] = json.loads(tar.extractfile(member).read())[1]
    return answers


def test_trajectories_use_the_calibration_the_shards_carry(tmp_path, ingest_locally):
    raw = write_droid_dataset(tmp_path / "raw", n_episodes=3, n_shards=1, seed=5, failure_every=0)
    paths = [episode_paths(i, 5, False)[0].decode() for i in range(3)]
    calibration = write_droid_calibration(tmp_path / "droid-calibration", paths)
    shards = tmp_path / "shards"
    ingest_locally("droid", raw, shards, shard_max_samples=500, validation_fraction=0.0,
                   source_options={"calibration_dir": str(calibration)})
    options = {"min_visible": 0.5}
    summary = run_job(relabel_job(shards=str(shards), output=str(tmp_path / "from-shards"), generator="trajectory",
                                  vlm=None, options=options), LocalRunner())
    assert summary["samples"] > 0 and summary["drops_by_reason"]["no_calibration"] == 1  # the uncovered episode

    source = RobotShardSource.Config(root=str(shards), split=None).build()
    episodes = [e for unit in source.plan() for e in source.read(unit, DropLedger())]
    file = {"format": CALIBRATION_FORMAT, "episodes": {e.episode_id: e.calibration for e in episodes if e.calibration}}
    (tmp_path / "calibration.json").write_text(json.dumps(file))
    run_job(relabel_job(shards=str(shards), output=str(tmp_path / "from-file"), generator="trajectory", vlm=None,
                        options={**options, "calibration": str(tmp_path / "calibration.json")}), LocalRunner())
    assert _answers(tmp_path / "from-shards") == _answers(tmp_path / "from-file")
