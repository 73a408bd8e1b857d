"""Failures of the environment, as a data engineer meets them: a read-only output, a full disk (real filesystems:
tmpfs mounts in a private mount namespace) and Prefect's temporary server not starting in time. Each ends in one
error line naming the path or service and the fix, printed once, with no temporary file left behind."""

import errno
import os
import pathlib
import shlex
import subprocess
import sys

import pytest

from vlaforge.flows.failures import explain

VLAFORGE = pathlib.Path(sys.executable).with_name("vlaforge")


def _unshare_works() -> bool:
    probe = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "true"], capture_output=True)
    return probe.returncode == 0


needs_mounts = pytest.mark.skipif(not _unshare_works(), reason="unshare --user --mount is not permitted here, so "
                                  "no private tmpfs can be mounted; these failures are then untested")


@pytest.fixture(scope="module")
def droid(tmp_path_factory):
    from vlaforge.datasets.synth.droid import write_droid_dataset

    return write_droid_dataset(tmp_path_factory.mktemp("raw"), n_episodes=4, n_shards=2, seed=5)


def _ingest_on_tmpfs(mount, options, dataset):
    """`vlaforge ingest` into a fresh tmpfs (mounted with `options`) in a private mount namespace; returns the
    process and every file left on the tmpfs afterwards."""
    mount.mkdir()
    command = [str(VLAFORGE), "ingest", "droid", "--input", str(dataset), "--output", str(mount / "out"),
               "--runner", "local", "--no-progress", "--shard-samples", "20"]
    script = (f"mount -t tmpfs -o {options} tmpfs {shlex.quote(str(mount))} && {shlex.join(command)}; code=$?; "
              f"echo '--- files'; find {shlex.quote(str(mount))} -type f; exit $code")
    done = subprocess.run(["unshare", "--user", "--map-root-user", "--mount", "sh", "-c", script],
                          capture_output=True, text=True, timeout=600)
    files = done.stdout.split("--- files\n", 1)[1].split()
    return done, files


@needs_mounts
def test_a_full_disk_ends_in_one_line_naming_the_path_and_leaves_no_temporary(tmp_path, droid):
    done, files = _ingest_on_tmpfs(tmp_path / "small", "size=256k", droid)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"error: no space left on the device that holds {tmp_path / 'small' / 'out'}")
    assert "MiB free" in lines[0] and "free space there" in lines[0]
    assert not [f for f in files if ".tmp-" in f], files


@needs_mounts
def test_a_read_only_output_ends_in_one_line_naming_it(tmp_path, droid):
    done, files = _ingest_on_tmpfs(tmp_path / "ro", "size=256k,ro", droid)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"error: cannot write {tmp_path / 'ro' / 'out'}: the filesystem is read-only. Fix: choose a writable "
        "--output (or remount it read-write)"]
    assert files == []


def test_prefects_server_not_starting_in_time_names_the_setting_and_the_fix(tmp_path, droid):
    """A real timeout: Prefect's temporary server gets 1 s to start, less than it ever needs."""
    environment = {**os.environ, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "1", "PREFECT_HOME": str(tmp_path)}
    environment.pop("PREFECT_API_URL", None)
    done = subprocess.run([str(VLAFORGE), "ingest", "droid", "--input", str(droid), "--output", str(tmp_path / "out"),
                           "--runner", "local", "--no-progress"], capture_output=True, text=True, timeout=600,
                          env=environment)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: Prefect's temporary API server did not start within 1 s")
    assert "PREFECT_API_URL" in lines[0] and "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS=120" in lines[0]
    assert not (tmp_path / "out").exists()  # no work began


class _FullDisk:
    """A worker whose every item meets a full disk."""

    def setup(self):
        pass

    def __call__(self, item):
        raise OSError(errno.ENOSPC, "No space left on device", "/data/out/train/.x.tar.tmp-1")


def test_a_full_disk_inside_a_ray_worker_reaches_the_driver_as_itself(ray_local):
    """Ray Data hands the driver only the text of a worker's exception; the runner carries an OSError over whole, so
    it is explained (and a transient one retried) as in-process."""
    from vlaforge.pipelines.runners import RayRunner

    with pytest.raises(OSError) as raised:
        list(RayRunner(num_workers=1).map(_FullDisk, [{"unit": 0}]))
    assert raised.value.errno == errno.ENOSPC and raised.value.filename == "/data/out/train/.x.tar.tmp-1"
    assert explain(raised.value, "/data/out").startswith("no space left on the device that holds /data/out (")
