import os

import pytest

# Tests never report analytics and never touch the user's Prefect home.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="session")
def ray_local():
    """A small local Ray cluster shared by the tests that need one."""
    import ray

    # Logical CPUs, not cores: a job with model stages holds one actor per pool (a CPU each) beside its unit tasks,
    # as on a cluster; four pools and two workers must fit.
    ray.init(num_cpus=8, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def _ingest_locally(source: str, input_path, output, **options):
    """Run an ingest in this process, without Prefect or Ray."""
    from vlaforge.pipelines.ingest_recipe import IngestOptions, build_ingest_job
    from vlaforge.pipelines.job import run_job
    from vlaforge.pipelines.robot_dataset import IngestReport
    from vlaforge.pipelines.runners import LocalRunner

    source_options = options.pop("source_options", None)
    job = build_ingest_job(source, str(input_path), str(output), IngestOptions(**options), source_options)
    return IngestReport(**run_job(job, LocalRunner()))


@pytest.fixture(scope="session")
def ingest_locally():
    """`ingest_locally(source, input, output, **options)` runs a whole ingest in-process and returns its report."""
    return _ingest_locally


def _registry_keys(module, name: str) -> list[str]:
    """The keys of the dict literal `name = {...}` in `module`'s source, as written (Python keeps only the last of
    two equal keys, so the built dict cannot show a repeat)."""
    import ast
    import inspect

    for node in ast.walk(ast.parse(inspect.getsource(module))):
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(node.value, ast.Dict):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return [ast.unparse(key) for key in node.value.keys]
    raise LookupError(f"{module.__name__} has no dict literal {name}")


@pytest.fixture(scope="session")
def registry_keys():
    """`registry_keys(module, "NAME")`: the keys of a registry's dict literal as written, to check none repeats."""
    return _registry_keys


@pytest.fixture(scope="session")
def droid_dataset(tmp_path_factory):
    from vlaforge.datasets.synth.droid import write_droid_dataset

    return write_droid_dataset(tmp_path_factory.mktemp("raw"), n_episodes=6, n_shards=3, seed=7)


@pytest.fixture(scope="session")
def droid_shards(droid_dataset, ingest_locally, tmp_path_factory):
    """Shards of the sample DROID dataset, ingested in-process; returns (output dir, report)."""
    output = tmp_path_factory.mktemp("droid-shards")
    report = ingest_locally("droid", droid_dataset, output, shard_max_samples=100, validation_fraction=0.3)
    return output, report


@pytest.fixture(scope="session")
def write_robot_dataset():
    """`write_robot_dataset(output, name=, episodes=, steps=, shard_samples=)`: a small ingest-shaped robot dataset."""
    from vlaforge.flows.sample_data.small_corpus import write_robot_dataset

    return write_robot_dataset


@pytest.fixture(scope="session")
def small_corpus(tmp_path_factory):
    """A corpus of two robot datasets (150 and 100 train samples) and one VL dataset (64), written beside its
    manifest `corpus.json` as `vlaforge corpus build` lays it out; returns the corpus file's path."""
    from vlaforge.flows.sample_data.small_corpus import write_small_corpus

    return write_small_corpus(tmp_path_factory.mktemp("corpus"))


# The recipe's corpus at full scale, as metadata only: about 200M robot steps and 80M VL samples in ~256 MiB shards.
SCALE_ROBOT = {"droid": 27_000_000, "molmoact": 2_000_000, "teleop_lego": 338 * 3600 * 30,
               "teleop_towel": 400 * 3600 * 30, "open_mix": 91_296_000}
SCALE_VL = {"grounding": 20_000_000, "vqa": 20_000_000, "caption": 15_000_000, "embodied": 10_000_000,
            "general": 15_000_000}


@pytest.fixture(scope="session")
def scale_corpus(tmp_path_factory):
    """`corpus.json` over dataset manifests that list 200M robot steps (3,700 a shard) and 80M VL samples (2,000 a
    shard) with no shard written: a test of the metadata at the scale of the real run."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from vlaforge.pipelines.corpus_manifest import (
        ComponentKind,
        CorpusConfig,
        CorpusInput,
        build_corpus,
        write_corpus,
    )
    from vlaforge.pipelines.shards.manifest import MANIFEST_SCHEMA, code_version

    root = tmp_path_factory.mktemp("scale")
    version = code_version()
    inputs = []
    for kind, datasets, per_shard in ((ComponentKind.ROBOT, SCALE_ROBOT, 3700), (ComponentKind.VL, SCALE_VL, 2000)):
        for name, samples in datasets.items():
            counts = [per_shard] * (samples // per_shard) + ([samples % per_shard] if samples % per_shard else [])
            n = len(counts)
            columns = {"url": [f"train/{name}-{i:06d}.tar" for i in range(n)], "split": ["train"] * n,
                       "samples": counts, "bytes": [c * 72_000 for c in counts],
                       "sha256": [f"{i:064x}" for i in range(n)], "episodes": [[]] * n, "source_files": [[]] * n,
                       "dataset": [name] * n, "unit": [i // 100 for i in range(n)], "code_version": [version] * n}
            (root / name).mkdir()
            pq.write_table(pa.Table.from_pydict(columns, schema=MANIFEST_SCHEMA), root / name / "manifest.parquet")
            if kind is ComponentKind.ROBOT:
                (root / name / "stats.json").write_text(json.dumps({"embodiments": {}, "lineage": {}}))
            else:
                (root / name / "summary.json").write_text(json.dumps({"kind": "vl", "task": name}))
            inputs.append(CorpusInput(path=root / name, kind=kind))
    corpus = root / "corpus.json"
    write_corpus(build_corpus(inputs, corpus, CorpusConfig()), corpus)
    return corpus


ALOHA_MAP = {"embodiment": "bimanual_2x6dof", "cameras": {"images/top": "exterior_1"}, "state": "state",
             "prompt": "prompt", "default_prompt": "transfer the cube", "image_size": [64, 64]}
"""The observation map of gym-aloha's observations (`evaluation/sim_envs.py`), with the tiny policy's frame size."""


@pytest.fixture(scope="session")
def tiny_policy_dir(tmp_path_factory):
    """A tiny random-weight exported policy for the bimanual 14-D robot (chunks of 8, Λ mask), with an
    `observation_map.json` for gym-aloha's observations, written through `Policy.save_pretrained`."""
    from vlaforge.flows.sample_data.tiny_policy import TinyPolicySpec, write_tiny_policy

    return write_tiny_policy(tmp_path_factory.mktemp("tiny-policy") / "policy",
                             TinyPolicySpec(observation_map=ALOHA_MAP))


@pytest.fixture(scope="session")
def mujoco_renders():
    """Skip (saying why) where MuJoCo cannot render offscreen with EGL: gym-aloha renders its cameras every step."""
    import importlib.util

    from vlaforge.evaluation.sim_evaluation import offscreen_rendering_problem

    if importlib.util.find_spec("gym_aloha") is None:
        pytest.skip("gym-aloha is not installed (pip install -e '.[eval]')")
    problem = offscreen_rendering_problem("egl")
    if problem is not None:
        pytest.skip(problem)


@pytest.fixture(scope="session")
def s3_endpoint():
    """moto's S3 server (`moto_server`, an S3-compatible server) on 127.0.0.1 in its own process, as a user starts a
    local stand-in for S3; yields its endpoint URL."""
    import socket
    import subprocess
    import sys
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline or server.poll() is not None:
                server.kill()
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.2)
    yield f"http://127.0.0.1:{port}"
    server.terminate()
    server.wait(timeout=30)
