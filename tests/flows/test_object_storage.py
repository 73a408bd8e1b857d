"""Object storage end to end, against moto's S3 server started as its own process (`moto_server`), as a user would
start a local S3-compatible server: an ingest, an annotate, a corpus build, a training run with a checkpoint and a
resume, and an offline evaluation, each with `s3://` inputs and outputs; reruns start from an empty local cache (a new
machine)."""

import json
import os

import pyarrow.parquet as pq
import pytest

from vlaforge.flows.cli import main
from vlaforge.pipelines.object_mirror import ObjectMirror, commit_tier

pytestmark = pytest.mark.slow
BUCKET = "lake"


@pytest.fixture
def s3(s3_endpoint, tmp_path, monkeypatch):
    """The environment a user sets for S3 (endpoint and credentials), a fresh bucket, and a local cache under
    tmp_path; returns an s3fs file system on the server."""
    import s3fs

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret-never-logged")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("VLAFORGE_OBJECT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("VLAFORGE_MIRRORS", raising=False)
    fs = s3fs.S3FileSystem(endpoint_url=s3_endpoint)
    if fs.exists(BUCKET):
        fs.rm(BUCKET, recursive=True)
    fs.mkdir(BUCKET)
    return fs


def _new_machine(tmp_path, monkeypatch, name: str) -> None:
    """An empty local cache: what a rerun on another machine starts from."""
    monkeypatch.setenv("VLAFORGE_OBJECT_CACHE", str(tmp_path / name))
    monkeypatch.delenv("VLAFORGE_MIRRORS", raising=False)


def _etags(fs, prefix: str) -> dict[str, str]:
    fs.invalidate_cache()
    return {path: info["ETag"] for path, info in fs.find(prefix, detail=True).items()}


def test_uploads_go_in_commit_order(tmp_path, s3):
    local = tmp_path / "cache" / BUCKET / "d"
    for key in ("manifest.parquet", "summary.json", "_units/00000.json", "_tables/gates/00000.parquet",
                "_commits/train__d-00000.tar.json", "train/d-00000.tar", "checkpoints/latest",
                "checkpoints/step2/mp_rank_00_model_states.pt", "_lock/owner.json", ".d-00001.tar.tmp-1"):
        (local / key).parent.mkdir(parents=True, exist_ok=True)
        (local / key).write_text(key)
    mirror = ObjectMirror.of(f"s3://{BUCKET}/d")
    order = mirror.push()
    assert [commit_tier(k) for k in order] == sorted(commit_tier(k) for k in order)
    assert order[0] in ("train/d-00000.tar", "checkpoints/step2/mp_rank_00_model_states.pt")
    assert order[-1] == "manifest.parquet" and order.index("checkpoints/latest") > order.index(
        "checkpoints/step2/mp_rank_00_model_states.pt")
    assert not any(k.startswith("_lock") or k.startswith(".") for k in order)  # a run's lock and temporaries stay
    assert mirror.push() == []  # nothing changed: nothing uploaded
    (local / "summary.json").write_text("changed")
    assert mirror.push() == ["summary.json"]


def test_ingest_to_s3_is_the_local_ingest_and_a_rerun_elsewhere_resumes(droid_dataset, tmp_path, s3, monkeypatch,
                                                                        ingest_locally, capsys):
    url = f"s3://{BUCKET}/shards/droid"
    argv = ["ingest", "droid", "--input", str(droid_dataset), "--output", url, "--runner", "local", "--no-progress",
            "--shard-samples", "100", "--validation-fraction", "0.3"]
    assert main(argv) == 0
    assert "testing-secret-never-logged" not in capsys.readouterr().out
    local = ingest_locally("droid", droid_dataset, tmp_path / "local", shard_max_samples=100,
                           validation_fraction=0.3)
    with s3.open(f"{BUCKET}/shards/droid/manifest.parquet", "rb") as handle:
        remote_rows = pq.read_table(handle).to_pylist()
    local_rows = pq.read_table(tmp_path / "local" / "manifest.parquet").to_pylist()
    assert [(r["url"], r["sha256"]) for r in remote_rows] == [(r["url"], r["sha256"]) for r in local_rows]
    assert sum(r["samples"] for r in remote_rows) == local.steps_written
    for row in remote_rows:  # every shard the manifest lists is there, byte for byte
        assert s3.info(f"{BUCKET}/shards/droid/{row['url']}")["size"] == row["bytes"]
    assert not s3.exists(f"{BUCKET}/shards/droid/_lock")
    before = _etags(s3, f"{BUCKET}/shards/droid")

    _new_machine(tmp_path, monkeypatch, "cache2")
    assert main(argv) == 0
    summary = json.loads(s3.cat_file(f"{BUCKET}/shards/droid/summary.json"))
    assert summary["units_resumed"] == summary["units"]  # every unit found done in the bucket: nothing redone
    after = _etags(s3, f"{BUCKET}/shards/droid")
    shards = [k for k in before if k.endswith(".tar")]
    assert shards and all(after[k] == before[k] for k in shards)  # no shard written twice
    assert not (tmp_path / "cache2" / BUCKET / "shards" / "droid" / remote_rows[0]["url"]).exists()  # bulk left

    assert main([*argv[:-5], "--shard-samples", "50"]) == 2  # other options into the same output: refused
    assert "--overwrite" in capsys.readouterr().err


def test_annotate_reads_and_writes_s3(droid_shards, tmp_path, s3):
    from vlaforge.flows.sample_data.tiny_detectors import write_tiny_detector, write_tiny_sam

    robot, _ = droid_shards
    s3.put(str(robot) + "/", f"{BUCKET}/shards/droid/", recursive=True)
    gdino = write_tiny_detector(tmp_path / "models" / "gdino")
    llmdet = write_tiny_detector(tmp_path / "models" / "llmdet", architecture="mm_grounding_dino", seed=1)
    sam = write_tiny_sam(tmp_path / "models" / "sam")
    argv = ["annotate", "--shards", f"s3://{BUCKET}/shards/droid", "--output", f"s3://{BUCKET}/grounding",
            "--gdino", str(gdino), "--llmdet", str(llmdet), "--sam", str(sam), "--without", "hosted",
            "--device", "cpu", "--frames", "first", "--cameras", "wrist", "--class", "table", "--split", "all",
            "--runner", "local", "--no-progress", "--set", "consensus.keep_images=all"]
    assert main(argv) == 0
    keys = {k.removeprefix(f"{BUCKET}/grounding/") for k in s3.find(f"{BUCKET}/grounding")}
    assert {"droid/manifest.parquet", "droid/summary.json", "droid/audit.parquet", "droid/annotate_recipe.json",
            "report/index.html"} <= keys
    with s3.open(f"{BUCKET}/grounding/droid/manifest.parquet", "rb") as handle:
        rows = pq.read_table(handle).to_pylist()
    assert all(f"droid/{r['url']}" in keys for r in rows)


def test_corpus_build_and_training_from_s3_checkpoint_and_resume_elsewhere(small_corpus, tmp_path, s3, monkeypatch):
    from vlaforge.training.model import presets
    from vlaforge.training.model.vlm import VLMBackbone

    vlm = tmp_path / "vlm"
    VLMBackbone.from_config(presets.qwen3_vl_tiny(), num_kv_layers=2).save_pretrained(vlm)
    presets.tiny_processor().save_pretrained(vlm)
    datasets = sorted(p for p in small_corpus.parent.iterdir() if p.is_dir())
    for dataset in datasets:
        s3.put(str(dataset) + "/", f"{BUCKET}/datasets/{dataset.name}/", recursive=True)
    components = []
    for dataset in datasets:
        summary = dataset / "summary.json"
        kind = "--vl" if summary.exists() and json.loads(summary.read_text()).get("kind") == "vl" else "--robot"
        components += [kind, f"s3://{BUCKET}/datasets/{dataset.name}"]
    corpus = f"s3://{BUCKET}/corpora/mix.json"
    assert main(["corpus", "build", *components, "--output", corpus]) == 0
    document = json.loads(s3.cat_file(f"{BUCKET}/corpora/mix.json"))
    assert all(shard["url"].startswith("../datasets/") for c in document["components"] for shard in c["shards"])

    run = f"s3://{BUCKET}/runs/a"
    settings = ["--set", "chunk_len=4", "--set", 'loader.robot.cameras=["exterior_1"]', "--set",
                "loader.robot.image_size=[32,32]", "--set", "micro_batch_size=2", "--set", "save_every=2",
                "--set", "tensorboard=false", "--set", "loader.num_workers=1"]
    base = ["train", "--recipe", "step2_dit_tiny", "--corpus", corpus, "--vlm", str(vlm), "--output", run, *settings]
    assert main([*base, "--set", "max_steps=2"]) == 0
    keys = {k.removeprefix(f"{BUCKET}/runs/a/") for k in s3.find(f"{BUCKET}/runs/a")}
    assert {"trainer_config.json", "train_log.jsonl", "checkpoints/latest", "policy/policy.json"} <= keys
    assert any(k.startswith("checkpoints/step") and "model_states" in k for k in keys)
    first = [json.loads(line) for line in s3.cat_file(f"{BUCKET}/runs/a/train_log.jsonl").decode().splitlines()]

    _new_machine(tmp_path, monkeypatch, "cache2")
    assert main([*base, "--set", "max_steps=3"]) == 0
    log = [json.loads(line) for line in s3.cat_file(f"{BUCKET}/runs/a/train_log.jsonl").decode().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]  # resumed at the bucket's step-2 checkpoint, not started over
    assert log[:2] == first
    assert s3.cat_file(f"{BUCKET}/runs/a/checkpoints/latest").decode().strip().endswith("3")
    assert "AWS_SECRET_ACCESS_KEY" not in os.environ.get("VLAFORGE_MIRRORS", "")


def test_offline_evaluation_reads_a_policy_and_a_corpus_from_s3_and_writes_its_results_there(droid_shards, tmp_path,
                                                                                          s3):
    from vlaforge.flows.sample_data.tiny_policy import TinyPolicySpec, write_tiny_policy

    robot, _ = droid_shards
    s3.put(str(robot) + "/", f"{BUCKET}/shards/droid/", recursive=True)
    corpus = f"s3://{BUCKET}/corpora/droid.json"
    assert main(["corpus", "build", "--robot", f"droid=s3://{BUCKET}/shards/droid", "--output", corpus]) == 0
    statistics = json.loads((robot / "stats.json").read_text())
    policy = write_tiny_policy(tmp_path / "policy", TinyPolicySpec(statistics=statistics))
    s3.put(str(policy) + "/", f"{BUCKET}/policies/tiny/", recursive=True)
    assert main(["eval", "offline", "--policy", f"s3://{BUCKET}/policies/tiny", "--corpus", corpus,
                 "--max-samples", "2", "--image-size", "32x32", "--output", f"s3://{BUCKET}/evals/offline"]) == 0
    results = json.loads(s3.cat_file(f"{BUCKET}/evals/offline/offline_results.json"))
    assert results["embodiments"]["franka_droid"]["samples"] == 2


def test_the_annotate_and_corpus_flows_take_s3_paths_as_deployments_pass_them(droid_shards, tmp_path, s3):
    # A deployment hands its parameters to the flow as they are: no command line mirrors them first.
    from vlaforge.flows.annotate import annotate
    from vlaforge.flows.corpus import corpus
    from vlaforge.flows.sample_data.tiny_detectors import write_tiny_detector, write_tiny_sam

    robot, _ = droid_shards
    s3.put(str(robot) + "/", f"{BUCKET}/shards/droid/", recursive=True)
    models = {"gdino": write_tiny_detector(tmp_path / "models" / "gdino"),
              "sam": write_tiny_sam(tmp_path / "models" / "sam")}
    recipe = {"detectors": [{"kind": "grounding_dino", "model": str(models["gdino"]), "device": "cpu"}],
              "sam": {"model": str(models["sam"]), "device": "cpu"},
              "frames": {"policies": ["first"], "cameras": ["wrist"]}, "phrases": {"ontology": ["table"]},
              "consensus": {"min_votes": 1}}
    result = annotate(shards=[f"s3://{BUCKET}/shards/droid"], output=f"s3://{BUCKET}/grounding-flow", recipe=recipe,
                      runner="local", report=False)
    assert result["datasets"]["droid"]["units"] > 0
    keys = {k.removeprefix(f"{BUCKET}/grounding-flow/") for k in s3.find(f"{BUCKET}/grounding-flow")}
    assert {"droid/manifest.parquet", "droid/audit.parquet", "droid/annotate_recipe.json"} <= keys

    counts = corpus(output=f"s3://{BUCKET}/corpora/flow.json", robot={"droid": f"s3://{BUCKET}/shards/droid"})
    assert counts["components"] == 1
    document = json.loads(s3.cat_file(f"{BUCKET}/corpora/flow.json"))
    assert document["components"][0]["shards"][0]["url"].startswith("../shards/droid/")
