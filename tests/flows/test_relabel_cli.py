"""`vlaforge relabel` and `vlaforge ingest vl-parquet` from the command line (in-process runner, Prefect's API)."""

import json

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from vlaforge.annotators.scripted_vlm_server import ScriptedVlmServer, request_text
from vlaforge.datasets.synth.llava import write_llava_json
from vlaforge.datasets.synth.pick_place import write_calibration
from vlaforge.datasets.synth.scenes import QUESTIONS
from vlaforge.flows.cli import main

KEY = "sk-cli-77e2b1"


@pytest.fixture()
def prefect_api(prefect_server):
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        yield


def test_relabel_plan_with_the_key_from_the_environment(prefect_api, droid_shards, tmp_path, monkeypatch, capsys):
    robot, _ = droid_shards
    monkeypatch.setenv("VLAFORGE_VLM_API_KEY", KEY)
    with ScriptedVlmServer(lambda body: "move the gripper to the object", api_key=KEY) as server:
        code = main(["relabel", "--shards", str(robot), "--output", str(tmp_path / "plans"), "--generator", "plan",
                     "--vlm", f"http:{server.url}", "--runner", "local", "--no-progress",
                     "--set", 'segmentation={"pause_speed": 0.001}'])
    out = capsys.readouterr().out
    assert code == 0 and "relabel plan" in out and "samples: train" in out
    summary = json.loads((tmp_path / "plans" / "summary.json").read_text())
    assert summary["task"] == "planning" and summary["samples"] >= 1
    assert all("which ends when" in request_text(body) for body in server.requests)
    assert KEY not in out


def test_trajectory_needs_no_vlm_and_misspelt_options_are_named(prefect_api, droid_shards, tmp_path, capsys):
    robot, _ = droid_shards
    calibration = write_calibration(tmp_path / "calibration.json")
    code = main(["relabel", "--shards", str(robot), "--output", str(tmp_path / "traces"), "--generator",
                 "trajectory", "--set", f"calibration={calibration}", "--set", "min_visible=0.5", "--runner", "local",
                 "--no-progress"])
    assert code == 0
    summary = json.loads((tmp_path / "traces" / "summary.json").read_text())
    assert summary["task"] == "trajectory" and summary["samples"] > 0
    code = main(["relabel", "--shards", str(robot), "--output", str(tmp_path / "x"), "--generator", "trajectory",
                 "--set", "horizon=2", "--runner", "local"])
    assert code == 2 and "unknown option 'horizon'; did you mean 'horizon_s'?" in capsys.readouterr().err


def test_a_misspelt_vl_parquet_option_gets_a_did_you_mean_and_writes_nothing(prefect_api, tmp_path, capsys):
    source = write_llava_json(tmp_path / "raw", n_rows=4)
    code = main(["ingest", "vl-parquet", "--input", str(source), "--output", str(tmp_path / "general"),
                 "--set", "rows_per_unt=2", "--runner", "local", "--no-progress"])
    assert code == 2 and "unknown option 'rows_per_unt'; did you mean 'rows_per_unit'?" in capsys.readouterr().err
    assert not (tmp_path / "general").exists()


def test_ingest_vl_parquet_then_relabel_its_answers(prefect_api, tmp_path, capsys):
    source = write_llava_json(tmp_path / "raw", n_rows=10)
    code = main(["ingest", "vl-parquet", "--input", str(source), "--output", str(tmp_path / "general"),
                 "--limit", "4", "--runner", "local", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "ingest vl-parquet" in out and "rows: over_limit" in out
    summary = json.loads((tmp_path / "general" / "summary.json").read_text())
    assert summary["samples"] == 4 and summary["rows"]["keep"] == 4

    def relabel(body):
        """Short questions get their reference answer reworded (the reference gate lets them through); the rest a
        new free answer."""
        asked = request_text(body)
        return next((f"Looking closely: {answer.lower()}" for question, answer in QUESTIONS.values()
                     if question in asked), "A better answer about the picture.")

    with ScriptedVlmServer(relabel) as server:
        code = main(["relabel", "--shards", str(tmp_path / "general"), "--output", str(tmp_path / "relabelled"),
                     "--generator", "vqa", "--vlm", f"http:{server.url}", "--runner", "local", "--no-progress"])
        assert code == 0
        code = main(["relabel", "--shards", str(tmp_path / "general"), "--output", str(tmp_path / "no"),
                     "--generator", "caption", "--vlm", f"http:{server.url}", "--runner", "local"])
    assert code == 2 and "only vqa relabels VL data" in capsys.readouterr().err
    relabelled = json.loads((tmp_path / "relabelled" / "summary.json").read_text())
    assert relabelled["samples"] == 4 and relabelled["task"] == "general"
    assert relabelled["gates"]["reference"]["checked"] > 0 and relabelled["gates"]["reference"]["dropped"] == 0


def test_ingest_refcoco_takes_the_formats_task(prefect_api, tmp_path, capsys):
    from vlaforge.datasets.synth.refcoco import write_refcoco_parquet

    source = write_refcoco_parquet(tmp_path / "refcoco" / "val-00000-of-00001.parquet")
    code = main(["ingest", "refcoco", "--input", str(source.parent), "--output", str(tmp_path / "grounding"),
                 "--runner", "local", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0 and "ingest refcoco" in out and "(grounding)" in out
    summary = json.loads((tmp_path / "grounding" / "summary.json").read_text())
    assert summary["task"] == "grounding" and summary["samples"] == 7
    # Rows referring to other objects of one photo share its bytes: the same image, never a near-duplicate.
    assert summary["rows"]["near_duplicate_images"] == 0 and summary["rows"]["duplicate"] == 0


def test_relabel_with_a_judge_reports_each_gates_drop_rate(prefect_api, droid_shards, tmp_path, capsys):
    robot, _ = droid_shards
    captions = iter(["I'm sorry, but I can't help with that.", "A golden retriever sleeps on a blue sofa.",
                     "A robot arm reaches over a table with objects on it."] * 100)

    def judge(body):
        return json.dumps({"score": 1 if "retriever" in request_text(body) else 9})

    with ScriptedVlmServer(lambda body: next(captions)) as captioner, ScriptedVlmServer(judge) as judge_server:
        code = main(["relabel", "--shards", str(robot), "--output", str(tmp_path / "captions"), "--generator",
                     "caption", "--vlm", f"http:{captioner.url}", "--judge", f"http:{judge_server.url}",
                     "--judge-threshold", "5", "--runner", "local", "--no-progress", "--set", "frames_per_episode=3"])
    out = capsys.readouterr().out
    assert code == 0 and "gate refusal" in out and "gate judge" in out
    summary = json.loads((tmp_path / "captions" / "summary.json").read_text())
    gates = summary["gates"]
    asked = gates["form"]["checked"]
    assert gates["refusal"]["dropped"] == summary["drops_by_reason"]["answer_refusal"] > 0
    assert gates["judge"]["dropped"] == summary["drops_by_reason"]["answer_judged_unsupported"] > 0
    assert gates["judge"]["checked"] == asked - gates["refusal"]["dropped"]
    assert summary["samples"] == asked - gates["refusal"]["dropped"] - gates["judge"]["dropped"]
    assert gates["refusal"]["drop_rate"] == round(gates["refusal"]["dropped"] / gates["refusal"]["checked"], 4)
