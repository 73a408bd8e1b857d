"""An output remembers the options that shaped it: a rerun with the same ones resumes, one with others is refused
with each difference listed, and `overwrite` starts over so that old and new data never mix."""

import dataclasses
import json

import pyarrow.parquet as pq
import pytest

from vlaforge.pipelines.ingest_recipe import IngestOptions, build_ingest_job
from vlaforge.pipelines.job import run_job
from vlaforge.pipelines.output_claim import OptionsChangedError, job_options, read_options
from vlaforge.pipelines.runners import LocalRunner

BASE = IngestOptions(shard_max_samples=40, validation_fraction=0.3)


def _ingest(dataset, output, options=BASE, **kwargs):
    return run_job(build_ingest_job("droid", str(dataset), str(output), options), LocalRunner(), **kwargs)


def _shards(output):
    return {p.relative_to(output).as_posix(): p.read_bytes() for p in sorted(output.rglob("*.tar"))}


def test_a_rerun_with_other_options_is_refused_listing_each_difference(droid_dataset, tmp_path):
    output = tmp_path / "out"
    _ingest(droid_dataset, output)
    recorded = read_options(output)
    assert recorded["source.frames.quality"] == 90 and recorded["stages.RobotSampleBuilder.chunk_len"] == 32
    assert recorded["code_version"].startswith("vlaforge==") and recorded["source"] == "DroidRldsSource"
    before = _shards(output)

    assert _ingest(droid_dataset, output)["units_resumed"] > 0  # the same options: a rerun resumes
    changed = dataclasses.replace(BASE, jpeg_quality=80, chunk_len=16, trim_idle=False)
    with pytest.raises(OptionsChangedError) as refused:
        _ingest(droid_dataset, output, changed)
    message = str(refused.value)
    assert "source.frames.quality: 90 (recorded) -> 80 (this run)" in message
    assert "stages.RobotSampleBuilder.chunk_len: 32 (recorded) -> 16 (this run)" in message
    assert "stages.IdleTrimmer: \"IdleTrimmer\" (recorded) -> unset (this run)" in message
    assert "--overwrite" in message and "new --output" in message
    assert _shards(output) == before and read_options(output) == recorded  # nothing was touched


def test_overwrite_starts_over_with_nothing_of_the_old_run_left(droid_dataset, tmp_path):
    changed = dataclasses.replace(BASE, chunk_len=16, shard_max_samples=30)
    reference = tmp_path / "reference"
    _ingest(droid_dataset, reference, changed)
    output = tmp_path / "out"
    _ingest(droid_dataset, output)
    (output / "train" / ".stale.tar.tmp-1").write_bytes(b"left by a killed run")

    report = _ingest(droid_dataset, output, changed, overwrite=True)
    assert report["units_resumed"] == 0
    assert _shards(output) == _shards(reference)
    assert pq.read_table(output / "manifest.parquet").equals(pq.read_table(reference / "manifest.parquet"))
    assert (output / "stats.json").read_bytes() == (reference / "stats.json").read_bytes()
    assert read_options(output) == read_options(reference)
    assert [p.name for p in output.rglob("*") if ".tmp-" in p.name] == []


def test_overwrite_never_empties_a_directory_that_holds_no_dataset(droid_dataset, tmp_path):
    output = tmp_path / "home"
    output.mkdir()
    (output / "notes.txt").write_text("mine")
    with pytest.raises(OptionsChangedError, match="holds files vlaforge did not write \\(notes.txt\\)"):
        _ingest(droid_dataset, output, overwrite=True)
    assert (output / "notes.txt").read_text() == "mine"


def test_secrets_and_speed_only_options_are_not_recorded():
    from vlaforge.annotators.hosted_detector import HostedDetector

    detector = HostedDetector.Config(api_token="sk-secret-token", concurrency=3)
    options = job_options(_Source(root="/data"), (detector,), _Source(root="/data"))
    text = json.dumps(options)
    assert "sk-secret-token" not in text and "api_token" not in text
    assert "stages.HostedDetector.concurrency" not in options  # how fast, not what: a rerun may change it
    assert options["stages"] == ["HostedDetector"] and options["source.root"] == "/data"


@dataclasses.dataclass(frozen=True)
class _Source:
    root: str


def test_a_rerun_by_other_code_is_refused(droid_dataset, tmp_path, monkeypatch):
    # The code that shapes the bytes is an option too: after a `git pull`, a rerun into an old output must not
    # append shards of the new code to those of the old one.
    from vlaforge.pipelines.shards import manifest

    output = tmp_path / "out"
    _ingest(droid_dataset, output)
    assert read_options(output)["code_version"] == manifest.code_version()
    monkeypatch.setattr(manifest, "code_version", lambda: "vlaforge==0.1.0+g0123456789ab")
    monkeypatch.setattr("vlaforge.pipelines.output_claim.code_version", manifest.code_version)
    refused = r"code_version: .* \(recorded\) -> \"vlaforge==0.1.0\+g0123456789ab\""
    with pytest.raises(OptionsChangedError, match=refused):
        _ingest(droid_dataset, output)


def test_the_code_version_names_the_commit_in_a_checkout():
    import pathlib
    import subprocess

    from vlaforge.pipelines.shards.manifest import code_version

    root = pathlib.Path(__file__).resolve().parents[2]
    if not (root / ".git").exists():
        pytest.skip("not a git checkout: the code version is the package version alone")
    commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                            text=True, check=True).stdout.strip()
    assert code_version().endswith(f"+g{commit}")
