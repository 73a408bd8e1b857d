"""The capacity plan: hours follow from work and rates, every rate says where it comes from, and a benchmark's JSON
or a hand-set value replaces a default where the plan uses it."""

import json

import pytest

from vlaforge.flows.cli import main
from vlaforge.pipelines.capacity_plan import (
    DEFAULT_RATES,
    Cluster,
    CorpusTarget,
    TrainingTarget,
    plan,
    resolve_rates,
    training_flops_per_sample,
)


def _row(result, stage):
    return next(row for row in result["rows"] if row["stage"] == stage)


def test_hours_are_work_over_rate_and_wall_time_divides_by_the_cluster():
    rates = resolve_rates({"ingest.droid.steps_per_core_s": 1000.0})
    corpus = CorpusTarget(robot_steps=36e6, robot_mix=(("droid", 1.0),))
    result = plan(rates, corpus, cluster=Cluster(cpu_cores=100, gpus=10, train_gpus=8))
    droid = _row(result, "ingest droid")
    assert droid["resource_hours"] == pytest.approx(10.0)  # 36e6 steps / 1000 steps/s / 3600
    assert droid["wall_hours"] == pytest.approx(0.1)
    images = 80e6 * 0.15 / 3
    assert _row(result, "annotate sam")["resource_hours"] == pytest.approx(images / 10 / 3600)
    assert _row(result, "annotate hosted API")["wall_hours"] == pytest.approx(images / 10 / 3600)  # a quota


def test_every_rate_says_where_it_comes_from_and_a_replaced_one_says_so():
    assert all(rate.source.split(":")[0] in {"measured", "assumed", "report", "release", "derived"} or "peak" in
               rate.source or "Qwen3-VL" in rate.source for rate in DEFAULT_RATES.values())
    rates = resolve_rates({"annotate.sam.images_per_gpu_s": 40}, source="file: bench.json")
    assert rates["annotate.sam.images_per_gpu_s"].source == "file: bench.json"
    faster = plan(rates)
    assert _row(faster, "annotate sam")["resource_hours"] == pytest.approx(
        _row(plan(resolve_rates()), "annotate sam")["resource_hours"] / 4)


def test_a_misspelt_or_bad_rate_is_refused_with_the_closest_name():
    with pytest.raises(ValueError, match="did you mean 'annotate.sam.images_per_gpu_s'"):
        resolve_rates({"annotate.sam.image_per_gpu_s": 4})
    with pytest.raises(ValueError, match="positive number"):
        resolve_rates({"train.mfu": 0})
    with pytest.raises(ValueError, match="sum to 1"):
        CorpusTarget(robot_mix=(("droid", 0.5),))


def test_training_cost_follows_what_each_phase_trains():
    rates = resolve_rates()
    step1, step2, post = (training_flops_per_sample(rates, p) for p in ("step1_choice", "step2_dit",
                                                                          "posttrain_async"))
    assert step2 < post < step1 * 1.5  # step 2 runs the frozen VLM forward only
    doubled = plan(resolve_rates({"train.mfu": 0.7}))
    assert _row(doubled, "train step2_dit")["resource_hours"] == pytest.approx(
        _row(plan(rates), "train step2_dit")["resource_hours"] / 2)
    samples = sum(steps * batch for _, steps, batch in TrainingTarget().phases)
    assert sum(row["work"] for row in plan(rates)["rows"] if row["stage"].startswith("train")) == samples


def test_storage_and_traffic_scale_with_the_corpus():
    result = plan(resolve_rates({"shard.robot.bytes_per_step": 50_000}), CorpusTarget(robot_steps=100e6))
    assert result["storage"]["robot_shards_tb"] == pytest.approx(5.0)
    assert result["traffic"]["pretrain_epochs_of_robot_data"] > 1


def test_the_command_prints_the_assumptions_and_writes_the_plan(tmp_path, capsys):
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"relabel.vlm.samples_per_gpu_s": 30}))
    code = main(["plan", "--rates", str(bench), "--set", "train.mfu=0.5", "--gpus", "8", "--json",
                 str(tmp_path / "plan.json")])
    out = capsys.readouterr().out
    assert code == 0 and "assumptions" in out and "relabel.vlm.samples_per_gpu_s" in out
    written = json.loads((tmp_path / "plan.json").read_text())
    assert written["rates"]["relabel.vlm.samples_per_gpu_s"] == {"value": 30.0, "unit": "samples/s/GPU",
                                                                  "source": f"file: {bench}"}
    assert written["rates"]["train.mfu"]["source"] == "--set" and written["cluster"]["gpus"] == 8
    assert main(["plan", "--set", "train.muf=0.5"]) == 2
    assert "did you mean 'train.mfu'" in capsys.readouterr().err


def test_a_benchmarks_json_output_gives_the_plan_its_measured_rates(tmp_path, capsys):
    # What benchmarks/ingest.py, teleop.py and soak.py write with --json: their rates beside the tables.
    bench = tmp_path / "ingest.json"
    bench.write_text(json.dumps({"rates": {"ingest.droid.steps_per_core_s": 2345.0,
                                           "ingest.lerobot.steps_per_core_s": 321.0},
                                 "measured_on": "host, 2 cores, 2026-12-06", "ingest": [{"steps": 10}]}))
    assert main(["plan", "--rates", str(bench), "--json", str(tmp_path / "plan.json")]) == 0
    rates = json.loads((tmp_path / "plan.json").read_text())["rates"]
    assert rates["ingest.droid.steps_per_core_s"] == {"value": 2345.0, "unit": "steps/s/core",
                                                      "source": f"file: {bench}"}
    assert rates["ingest.lerobot.steps_per_core_s"]["value"] == 321.0
    capsys.readouterr()
