import os

import pytest

# Tests never report analytics and never touch the user's Prefect home.
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


@pytest.fixture(scope="session")
def ray_local():
    """A small local Ray cluster shared by the tests that need one."""
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().enable_progress_bars = False
    yield ray
    ray.shutdown()


def _ingest_locally(source: str, input_path, output, **options):
    """Run an ingest in this process, without Prefect or Ray."""
    from vlaforge.pipelines.ingest_recipe import IngestOptions, build_ingest_job
    from vlaforge.pipelines.ingest_run import run_ingest
    from vlaforge.pipelines.runners import LocalRunner

    source_options = options.pop("source_options", None)
    job = build_ingest_job(source, str(input_path), str(output), IngestOptions(**options), source_options)
    return run_ingest(job, LocalRunner())


@pytest.fixture(scope="session")
def ingest_locally():
    """`ingest_locally(source, input, output, **options)` runs a whole ingest in-process and returns its report."""
    return _ingest_locally


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
