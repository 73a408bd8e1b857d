"""Statistics from the units' step tables: the same stats.json as reading every training shard back, and the
shards read instead for a unit whose table is missing or does not match its marker."""

import json
import shutil

import pyarrow.parquet as pq
import pytest

from vlaforge.pipelines.ingest_recipe import IngestOptions, build_ingest_job
from vlaforge.pipelines.job import finalize_job, plan_units
from vlaforge.pipelines.norm_stats import compute_stats
from vlaforge.pipelines.runners import LocalRunner
from vlaforge.pipelines.shards.manifest import load_commits
from vlaforge.pipelines.step_values import read_step_values, step_values_rows


@pytest.fixture
def ingested(droid_dataset, droid_shards, tmp_path):
    """A private copy of the session's DROID ingest (3 units, train and validation shards), and its job."""
    output = tmp_path / "out"
    shutil.copytree(droid_shards[0], output)
    options = IngestOptions(shard_max_samples=100, validation_fraction=0.3)
    job = build_ingest_job("droid", str(droid_dataset), str(output), options)
    return output, job


def _stats(output):
    return json.loads((output / "stats.json").read_text())["embodiments"]


def _from_train_shards(output):
    train = [output / r.url for r in load_commits(output) if r.split == "train"]
    return json.loads(json.dumps(compute_stats(train, LocalRunner())))


def test_each_unit_keeps_the_values_of_every_step_it_wrote(ingested):
    output, _ = ingested
    summaries = [json.loads(p.read_text()) for p in sorted((output / "_units").glob("*.json"))]
    tables = sorted((output / "_units").glob("*.steps.parquet"))
    assert len(tables) == len(summaries) == 3
    for summary, table in zip(summaries, tables):
        assert step_values_rows(table) == summary["samples_written"]
        splits = pq.read_table(table, columns=["split"])["split"].to_pylist()
        assert {s: splits.count(s) for s in set(splits)} == summary["samples_by_split"]
    index = next(i for i, summary in enumerate(summaries) if summary["samples_by_split"].get("train"))
    values = read_step_values(tables[index], ["train"])["franka_droid"]
    assert values["state"].shape[1] == len(values["names"]["state"]) == 8
    assert values["action"].shape == (summaries[index]["samples_by_split"]["train"], 8)


def test_statistics_from_step_tables_equal_those_from_reading_the_training_shards(ingested):
    output, _ = ingested
    assert {s for s in json.loads((output / "summary.json").read_text())["steps_by_split"]} == {"train", "validation"}
    assert _stats(output) == _from_train_shards(output)


@pytest.mark.parametrize("damage", ["delete", "truncate", "other_unit"])
def test_a_unit_without_a_matching_table_has_its_shards_read_instead(ingested, damage):
    output, job = ingested
    tables = sorted((output / "_units").glob("*.steps.parquet"))
    if damage == "delete":
        tables[1].unlink()
    elif damage == "truncate":
        tables[1].write_bytes(tables[1].read_bytes()[:100])
    else:  # a readable table of another size (a unit's table from another run)
        shutil.copyfile(tables[0], tables[1])
    before = (output / "stats.json").read_text()
    (output / "stats.json").unlink()
    finalize_job(job, plan_units(job), LocalRunner())
    assert (output / "stats.json").read_text() == before
