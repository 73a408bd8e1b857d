"""A VL job over robot shards: VL shards + manifest + gathered tables, resumable, bad shards quarantined."""

import dataclasses
import json
import shutil

import pyarrow.parquet as pq
import pytest

from vlaforge.datasets.drops import DropReason
from vlaforge.datasets.schema import Camera, VlTask, sample_key
from vlaforge.pipelines.job import Job, UnitSummary, run_job
from vlaforge.pipelines.runners import LocalRunner, RayRunner
from vlaforge.pipelines.shards.manifest import read_manifest
from vlaforge.pipelines.shards.robot_source import RobotShardSource
from vlaforge.pipelines.shards.writer import ShardConfig
from vlaforge.pipelines.stage import Stage, StageConfig
from vlaforge.pipelines.vl_dataset import VlDatasetSink
from vlaforge.pipelines.vl_samples import assistant, build_vl_sample, user


class InstructionQuestion(Stage):
    """Episode -> "what is the robot asked to do?" on its first frame; one audit row per episode."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(StageConfig):
        camera: str = Camera.EXTERIOR_1.value

    def __init__(self, config):
        super().__init__(config)
        self.rows = []

    def __call__(self, batch):
        samples = []
        for episode in batch:
            key = sample_key(episode.episode_id, episode.first_step)
            self.rows.append({"source_key": key, "steps": len(episode)})
            if not episode.instruction:
                self.ledger.drop(file=episode.lineage.file, episode=episode.episode_id, reason=DropReason.TOO_SHORT)
                continue
            samples.append(build_vl_sample(
                key=f"iq_{key}", task=VlTask.VQA, dataset="iq", images=[episode.frames[self.config.camera][0]],
                conversation=[user(None, "What is the robot asked to do?"), assistant(episode.instruction)],
                source_key=key, source_group=episode.episode_id, provenance=[{"model": "instruction"}],
            ))
        return samples

    def take_tables(self):
        rows, self.rows = self.rows, []
        return {"audit": rows}


def _job(robot, output):
    return Job(source=RobotShardSource.Config(root=str(robot), split=None, shards_per_unit=1),
               stages=(InstructionQuestion.Config(),), output=str(output), items_per_batch=8,
               sink=VlDatasetSink.Config(dataset="iq", task=VlTask.VQA, shards=ShardConfig(max_samples=2)))


def _episodes(robot):
    return {e for r in read_manifest(robot / "manifest.parquet") for e in r.episodes}


def test_job_writes_shards_tables_and_summary(droid_shards, tmp_path):
    robot, _ = droid_shards
    summary = run_job(_job(robot, tmp_path / "vl"), LocalRunner())
    records = read_manifest(tmp_path / "vl" / "manifest.parquet")
    assert sum(r.samples for r in records) == len(_episodes(robot)) == summary["samples"]
    assert summary["kind"] == "vl" and summary["task"] == "vqa" and summary["tables"] == {"audit": summary["samples"]}
    audit = pq.read_table(tmp_path / "vl" / "audit.parquet").to_pylist()
    assert sorted(row["source_key"].rsplit("_", 1)[0] for row in audit) == sorted(_episodes(robot))
    assert pq.read_table(tmp_path / "vl" / "quarantine.parquet").num_rows == 0


def test_rerun_after_a_crash_is_byte_identical(droid_shards, tmp_path):
    robot, _ = droid_shards
    run_job(_job(robot, tmp_path / "full"), LocalRunner())
    crashed = tmp_path / "crashed"
    run_job(_job(robot, crashed), LocalRunner())
    # As if killed in unit 0 after its first shard was committed: its marker, table part and later shards are gone.
    (crashed / "_units" / "00000.json").unlink()
    (crashed / "_tables" / "audit" / "00000.parquet").unlink()
    (crashed / "manifest.parquet").unlink()
    later = sorted((crashed / "_commits").glob("*iq-00000-*"))[1:]
    for commit in later:
        (crashed / json.loads(commit.read_text())["url"]).unlink()
        commit.unlink()
    run_job(_job(robot, crashed), LocalRunner())
    assert read_manifest(crashed / "manifest.parquet") == read_manifest(tmp_path / "full" / "manifest.parquet")
    assert pq.read_table(crashed / "audit.parquet").equals(pq.read_table(tmp_path / "full" / "audit.parquet"))


def test_bad_robot_shard_is_quarantined_and_the_rest_completes(droid_shards, tmp_path):
    robot, _ = droid_shards
    copy = tmp_path / "robot"
    shutil.copytree(robot, copy)
    victim = read_manifest(copy / "manifest.parquet")[0]
    (copy / victim.url).write_bytes(b"not a tar at all" * 100)
    summary = run_job(_job(copy, tmp_path / "vl"), LocalRunner())
    quarantine = pq.read_table(tmp_path / "vl" / "quarantine.parquet").to_pylist()
    assert [row["file"] for row in quarantine] == [victim.url]
    assert summary["drops_by_reason"] == {"unreadable_file": 1}
    others = {e for r in read_manifest(copy / "manifest.parquet")[1:] for e in r.episodes} - set(victim.episodes)
    assert summary["samples"] >= len(others)


@pytest.mark.slow
def test_ray_runner_writes_the_same_dataset(droid_shards, tmp_path, ray_local):
    robot, _ = droid_shards
    run_job(_job(robot, tmp_path / "local"), LocalRunner())
    run_job(_job(robot, tmp_path / "ray"), RayRunner(num_workers=2))
    assert read_manifest(tmp_path / "ray" / "manifest.parquet") == read_manifest(tmp_path / "local" / "manifest.parquet")


def test_a_marker_this_version_cannot_read_reruns_its_unit_identically(droid_shards, tmp_path):
    """A unit finished under another marker format (an older version's) runs again: its committed shards are
    skipped, the rest rewritten byte-identically, and the summary counts it like the others."""
    robot, _ = droid_shards
    first = run_job(_job(robot, tmp_path / "vl"), LocalRunner())
    marker = tmp_path / "vl" / "_units" / "00000.json"
    old = json.loads(marker.read_text())
    marker.write_text(json.dumps({**old, "steps_written": old.pop("samples_written")}))
    manifest = (tmp_path / "vl" / "manifest.parquet").read_bytes()
    second = run_job(_job(robot, tmp_path / "vl"), LocalRunner())
    assert (tmp_path / "vl" / "manifest.parquet").read_bytes() == manifest
    assert UnitSummary.from_dict(json.loads(marker.read_text())).samples_written > 0
    assert {k: v for k, v in second.items()} == first


def test_job_runs_as_prefect_tasks(droid_shards, tmp_path):
    from prefect import flow

    from vlaforge.flows.job_tasks import run_job_tasks

    robot, _ = droid_shards

    @flow(name="job-test")
    def vl_flow(job):
        return run_job_tasks(job, runner="local")

    summary = vl_flow(_job(robot, tmp_path / "vl"))
    assert summary["samples"] == len(_episodes(robot))
    assert (tmp_path / "vl" / "audit.parquet").exists()
