"""A multi-node Ray cluster on this machine, run in its own process by `test_ray_cluster.py` (a driver joins one Ray
cluster per process). Prints one JSON object: what ran where, and whether each output equals the local run's.

    python ray_cluster_scenario.py WORKDIR

Nodes (`ray.cluster_utils.Cluster`, real raylets): a head that runs no work (0 CPUs, the dashboard for Ray's task
records), a CPU node (1 CPU), and a "GPU" node (1 CPU, 1 GPU advertised: no CUDA here, so the tiny models run on its
CPU, but Ray places GPU actors only there).
"""

from __future__ import annotations

import json
import pathlib
import sys
import threading
import time

import ray
from ray.cluster_utils import Cluster

from vlaforge.annotators.annotate_recipe import annotate_job, default_recipe
from vlaforge.datasets.synth.droid import write_droid_dataset
from vlaforge.flows.sample_data.tiny_detectors import write_tiny_detector, write_tiny_sam
from vlaforge.pipelines.ingest_recipe import IngestOptions, build_ingest_job
from vlaforge.pipelines.job import run_job, unit_marker
from vlaforge.pipelines.runners import LocalRunner, RayRunner
from vlaforge.pipelines.stage_pools import StagePlacement


def dataset_bytes(output: pathlib.Path) -> dict[str, bytes]:
    """What a user reads: shards, manifest, statistics, summary, quarantine, side tables."""
    keep = ("manifest.parquet", "stats.json", "quarantine.parquet", "audit.parquet", "audit_frames.parquet")
    files = [p for p in output.rglob("*") if p.is_file() and (p.suffix == ".tar" or p.name in keep)]
    return {p.relative_to(output).as_posix(): p.read_bytes() for p in sorted(files)}


def summary_without_runtime(output: pathlib.Path) -> dict:
    summary = json.loads((output / "summary.json").read_text())
    return {k: v for k, v in summary.items() if k not in ("output", "units_resumed", "source")}


def ingest(raw: pathlib.Path, output: pathlib.Path, runner) -> dict:
    job = build_ingest_job("droid", str(raw), str(output), IngestOptions(), {"files_per_unit": 1})
    return run_job(job, runner)


def grounding_recipe(models: dict[str, str]) -> dict:
    local = {"device": "cpu", "box_threshold": 0.05, "text_threshold": 0.0}
    return {**default_recipe(),
            "detectors": [{"kind": "grounding_dino", "model": models["gdino"], **local},
                          {"kind": "llmdet", "model": models["llmdet"], **local}],
            "sam": {"model": models["sam"], "device": "cpu"},
            "frames": {"policies": ["first"], "cameras": ["exterior_1"]},
            "source": {"shards_per_unit": 1, "split": None}, "shards": {"max_samples": 20}}


def where(kind: str) -> dict[str, list[str]]:
    """Node id -> names of the tasks or actors Ray recorded there (its state API, served by the dashboard)."""
    from ray.util.state import list_actors, list_tasks

    records = list_tasks(limit=10_000) if kind == "tasks" else list_actors(limit=10_000)
    placed: dict[str, list[str]] = {}
    for record in records:
        name = record.name if kind == "tasks" else record.class_name
        if record.node_id:
            placed.setdefault(record.node_id, []).append(name)
    return placed


def main(work: pathlib.Path) -> dict:
    raw = write_droid_dataset(work / "raw", n_episodes=6, n_shards=3)
    ingest(raw, work / "local", LocalRunner())
    models = {"gdino": str(write_tiny_detector(work / "models" / "gdino")),
              "llmdet": str(write_tiny_detector(work / "models" / "llmdet", architecture="mm_grounding_dino", seed=1)),
              "sam": str(write_tiny_sam(work / "models" / "sam"))}
    recipe = grounding_recipe(models)
    run_job(annotate_job(recipe, str(work / "local"), str(work / "grounding-local")), LocalRunner())

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": True})
    try:
        return on_cluster(cluster, work, raw, recipe)
    finally:
        ray.shutdown()
        cluster.shutdown()


def on_cluster(cluster: Cluster, work: pathlib.Path, raw: pathlib.Path, recipe: dict) -> dict:
    cpu_node = cluster.add_node(num_cpus=1)
    gpu_node = cluster.add_node(num_cpus=1, num_gpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    nodes = {"cpu": cpu_node.node_id, "gpu": gpu_node.node_id}
    result: dict = {"nodes": nodes}

    ingest(raw, work / "cluster", RayRunner(num_workers=2, stage_pools=True))
    result["ingest_identical"] = dataset_bytes(work / "cluster") == dataset_bytes(work / "local")
    result["ingest_summary_identical"] = summary_without_runtime(work / "cluster") == summary_without_runtime(
        work / "local")
    result["ingest_actors"] = {node: sorted(set(names)) for node, names in where("actors").items()}

    small = StagePlacement(num_gpus=0.25, num_cpus=0.25)  # three pools on the GPU node, beside nothing else
    placements = {"grounding_dino": small, "llmdet": small, "sam": small}
    job = annotate_job(recipe, str(work / "local"), str(work / "grounding-cluster"))
    run_job(job, RayRunner(num_workers=2, placements=placements))
    result["annotate_identical"] = (dataset_bytes(work / "grounding-cluster")
                                    == dataset_bytes(work / "grounding-local"))
    result["annotate_actors"] = {node: sorted(set(names)) for node, names in where("actors").items()}
    result["annotate_tasks"] = {node: sorted({n for n in names if "MapBatches(_ray_task)" in n})
                                for node, names in where("tasks").items()}

    # A worker node lost mid-run: then a rerun on what is left must finish the same dataset.
    killed = work / "killed"
    failure: list[str] = []

    def run() -> None:
        try:
            ingest(raw, killed, RayRunner(num_workers=2))
        except Exception as error:  # noqa: BLE001 - the lost node may fail the run; the rerun below must finish it
            failure.append(type(error).__name__)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 120
    while not unit_marker(killed, 0).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    cluster.remove_node(cpu_node, allow_graceful=False)
    thread.join(timeout=600)
    result["killed_run"] = failure[0] if failure else "completed"
    ingest(raw, killed, RayRunner(num_workers=1))
    result["rerun_identical"] = dataset_bytes(killed) == dataset_bytes(work / "local")
    return result


if __name__ == "__main__":
    print(json.dumps(main(pathlib.Path(sys.argv[1]))))
