"""`vlaforge annotate` and `vlaforge report` from the command line: bad input answered up front, a whole run."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
from prefect.logging.handlers import APILogWorker
from prefect.settings import PREFECT_API_URL, temporary_settings

from vlaforge.annotators.grounding_frame import GroundingFrame, RunStatus
from vlaforge.annotators.hosted_detector import HostedDetector
from vlaforge.annotators.scripted_detection_server import ScriptedDetectionServer
from vlaforge.datasets.frames import FrameConfig, encode_jpeg
from vlaforge.flows.annotate import check_resumable, record_recipe
from vlaforge.flows.annotate_cli import recipe_from_args
from vlaforge.flows.cli import build_parser, main
from vlaforge.flows.sample_data.tiny_detectors import write_tiny_detector, write_tiny_sam

TOKEN = "cli-token-5b2d"


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared machine: far faster on one intra-op thread
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("argv, message", [
    (["--shards", "https://example.com/robot"], "read from a local directory"),
    (["--shards", "/nonexistent/robot"], "no manifest.parquet there"),
    (["--without", "yolo"], "--without ['yolo']"),
    (["--set", "detectors.model=x"], "'detectors' is not a recipe section with options"),
    (["--set", "consensus.min_vote=3"], "unknown option 'min_vote'; did you mean 'min_votes'?"),
    (["--frames", "random"], "policies must be a non-empty subset"),
])
def test_bad_input_is_answered_before_anything_runs(droid_shards, tmp_path, capsys, argv, message):
    robot, _ = droid_shards
    args = ["annotate", "--shards", str(robot), "--output", str(tmp_path), *argv]
    assert main(args) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_resuming_an_output_with_other_decision_rules_is_refused(droid_shards, tmp_path, capsys):
    robot, _ = droid_shards
    base = ["annotate", "--shards", str(robot), "--output", str(tmp_path), "--without", "hosted"]
    record_recipe(tmp_path / robot.name, recipe_from_args(build_parser().parse_args(base)), robot)
    assert main([*base, "--min-votes", "3"]) == 2
    assert "was annotated with another recipe" in capsys.readouterr().err
    faster = build_parser().parse_args([*base, "--device", "cuda", "--batch-size", "16"])
    check_resumable(tmp_path / robot.name, recipe_from_args(faster))  # runtime options may change on a resume


def test_annotate_then_report_from_the_command_line(prefect_server, droid_shards, tmp_path, capsys, monkeypatch):
    robot, _ = droid_shards
    gdino = write_tiny_detector(tmp_path / "models" / "gdino")
    llmdet = write_tiny_detector(tmp_path / "models" / "llmdet", architecture="mm_grounding_dino", seed=1)
    sam = write_tiny_sam(tmp_path / "models" / "sam")

    def responder(pixels, phrases):
        height, width = pixels.shape[:2]
        return [{"bbox": [0, 0, width / 2, height / 2], "score": 0.9, "category": phrases[0]}]

    monkeypatch.setenv("DDS_API_TOKEN", TOKEN)
    output = tmp_path / "out"
    with ScriptedDetectionServer(responder, token=TOKEN) as server, temporary_settings(
            updates={PREFECT_API_URL: prefect_server}):
        code = main(["annotate", "--shards", str(robot), "--output", str(output), "--gdino", str(gdino),
                     "--llmdet", str(llmdet), "--sam", str(sam), "--hosted-url", server.url, "--hosted-poll-interval", "0.01",
                     "--hosted-rate", "100", "--device", "cpu",
                     "--frames", "first", "--cameras", "wrist", "--class", "table", "--negative", "elephant",
                     "--split", "all", "--runner", "local", "--no-progress", "--set", "consensus.keep_images=all",
                     "--set", "shards.max_samples=10"])
        APILogWorker.drain_all(timeout=10)  # the flow's last logs reach the server before the session stops it
    assert code == 0
    out = capsys.readouterr().out
    assert robot.name in out and "report:" in out and TOKEN not in out
    dataset = output / robot.name
    recorded = json.loads((dataset / "annotate_recipe.json").read_text())
    assert [d["kind"] for d in recorded["recipe"]["detectors"]] == ["grounding_dino", "llmdet", "hosted"]
    assert recorded["recipe"]["consensus"]["keep_images"] == "all" and TOKEN not in json.dumps(recorded)
    assert {"manifest.parquet", "summary.json", "audit.parquet", "audit_frames.parquet"} <= {
        p.name for p in dataset.iterdir()}
    prompts = [r["body"]["prompt"]["text"].split(".") for r in server.received if r["method"] == "POST"]
    assert prompts and all("table" in p and p[-1] == "elephant" for p in prompts)  # the ontology, then negatives
    assert (output / "report" / "index.html").exists()
    assert main(["report", "build", str(output), "--output", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "index.html").exists()


def test_hosted_token_from_a_prefect_secret_block(prefect_server):
    from prefect.blocks.system import Secret

    pixels = np.zeros((32, 48, 3), np.uint8)
    frame = GroundingFrame(dataset="d", episode_id="e", source_file="f", step=0, camera="wrist",
                           jpeg=encode_jpeg(pixels, FrameConfig()), pixels=pixels, selected_by="first",
                           instructions=[], phrases=["cup"])
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        Secret(value=TOKEN).save("dds-token-test", overwrite=True)
        with ScriptedDetectionServer(lambda pixels, phrases: [], token=TOKEN) as server:
            stage = HostedDetector.Config(base_url=server.url, api_token_block="dds-token-test",
                                          poll_interval_s=0.01).build()
            stage.setup()
            stage([frame])
        missing = HostedDetector.Config(base_url=server.url, api_token_block="no-such-block").build()
        with pytest.raises(ValueError, match="Prefect Secret block 'no-such-block' could not be loaded"):
            missing.setup()
    assert frame.runs[0].status == RunStatus.OK and TOKEN not in repr(stage.config)


def test_without_sam_the_cli_asks_for_box_only_consensus(droid_shards, tmp_path, capsys):
    base = ["annotate", "--shards", "x", "--output", "y"]
    boxes_only = recipe_from_args(build_parser().parse_args([*base, "--without", "sam,hosted"]))
    assert boxes_only["sam"] is None and boxes_only["consensus"]["mask_iou"] is None
    with_sam = recipe_from_args(build_parser().parse_args([*base, "--without", "hosted"]))
    assert with_sam["consensus"]["mask_iou"] == 0.6
    scored = recipe_from_args(build_parser().parse_args([*base, "--score-threshold", "owlv2=0.1"]))
    assert scored["consensus"]["detector_scores"] == [{"detector": "owlv2", "threshold": 0.1}]
    robot, _ = droid_shards
    assert main(["annotate", "--shards", str(robot), "--output", str(tmp_path), "--without", "sam",
                 "--mask-iou", "0.5"]) == 2
    assert "--without sam runs no SAM" in capsys.readouterr().err


def test_a_whole_run_without_sam_accepts_boxes_and_says_masks_were_not_judged(prefect_server, droid_shards, tmp_path,
                                                                                capsys, monkeypatch):
    """`--without sam` end to end: before box-only consensus, the CLI's mask rule sent every box to
    needs_review / missing_mask. One scripted hosted detector and --min-votes 1 (no model to load)."""
    robot, _ = droid_shards

    def responder(pixels, phrases):
        height, width = pixels.shape[:2]
        return [{"bbox": [0, 0, width / 2, height / 2], "score": 0.9, "category": phrases[0]}]

    monkeypatch.setenv("DDS_API_TOKEN", TOKEN)
    output = tmp_path / "out"
    with ScriptedDetectionServer(responder, token=TOKEN) as server, temporary_settings(
            updates={PREFECT_API_URL: prefect_server}):
        code = main(["annotate", "--shards", str(robot), "--output", str(output), "--without", "sam,gdino,llmdet",
                     "--hosted-url", server.url, "--hosted-poll-interval", "0.01", "--hosted-rate", "100",
                     "--min-votes", "1", "--frames", "first", "--cameras", "wrist", "--class", "table",
                     "--split", "all", "--runner", "local", "--no-progress", "--set", "shards.max_samples=10"])
        APILogWorker.drain_all(timeout=10)
    assert code == 0, capsys.readouterr().err
    audit = pq.read_table(output / robot.name / "audit.parquet").to_pylist()
    assert audit and all(r["decision"] == "accepted" and r["reason"] != "missing_mask" for r in audit)
    assert all(r["detail"].startswith("1 of 1 detectors boxes it (gdino_1_5), and min_votes 1 takes a single")
               and "masks not judged" in r["detail"] for r in audit), audit[0]["detail"]
    summary = json.loads((output / robot.name / "summary.json").read_text())
    assert summary["samples"] >= 1


def test_an_original_sam_checkpoint_goes_to_meta_s_package():
    args = build_parser().parse_args(["annotate", "--shards", "x", "--output", "y", "--sam", "/m/sam_vit_b_01ec64.pth"])
    assert recipe_from_args(args)["sam"]["backend"] == "segment_anything"
    args = build_parser().parse_args(["annotate", "--shards", "x", "--output", "y", "--sam", "facebook/sam-vit-base"])
    assert "backend" not in recipe_from_args(args)["sam"]
