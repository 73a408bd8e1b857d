"""Teleop ingest end to end: the flow on Ray Data, the CLI table, resampling.parquet, bad input, third-party readers."""

import copy
import io
import json

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from prefect.settings import PREFECT_API_URL, temporary_settings
from rich.console import Console

from vlaforge.datasets.synth.teleop import make_recording
from vlaforge.datasets.synth.teleop_hdf5 import write_aloha_dataset
from vlaforge.datasets.synth.teleop_mcap import camera_topic, write_teleop_mcap, write_teleop_mcap_dataset
from vlaforge.flows.cli import main
from vlaforge.flows.ingest import ingest
from vlaforge.flows.ingest_cli import print_report

MEMBERS = {"exterior_1.jpg", "left_wrist.jpg", "right_wrist.jpg", "state.npy", "action.npy", "qvel.npy", "meta.json"}
OPTIONS = {"shard_max_samples": 100, "validation_fraction": 0.3}


@pytest.fixture(scope="module")
def mcap_dataset(tmp_path_factory):
    return write_teleop_mcap_dataset(tmp_path_factory.mktemp("teleop") / "lego", n_episodes=3, duration_s=2.5, seed=11)


@pytest.fixture(scope="module")
def mcap_shards(mcap_dataset, tmp_path_factory, ingest_locally):
    output = tmp_path_factory.mktemp("teleop-shards")
    return output, ingest_locally("teleop-mcap", mcap_dataset, output, source_options={"files_per_unit": 2}, **OPTIONS)


def _shard_bytes(output):
    return {p.relative_to(output).as_posix(): p.read_bytes() for p in sorted(output.rglob("*.tar"))}


def test_the_flow_on_ray_writes_what_an_in_process_run_writes(prefect_server, ray_local, mcap_dataset, mcap_shards,
                                                              tmp_path):
    local_output, local_report = mcap_shards
    with temporary_settings(updates={PREFECT_API_URL: prefect_server}):
        report = ingest(source="teleop-mcap", input_path=str(mcap_dataset), output=str(tmp_path), options=OPTIONS,
                        source_options={"files_per_unit": 2}, runner="ray", workers=2)
    assert _shard_bytes(tmp_path) == _shard_bytes(local_output) != {}
    assert pq.read_table(tmp_path / "resampling.parquet").equals(pq.read_table(local_output / "resampling.parquet"))
    assert {k: v for k, v in report.items() if k != "output"} == {
        k: v for k, v in local_report.as_dict().items() if k != "output"}


def test_resampling_table_and_summary_describe_every_stream(mcap_shards):
    output, report = mcap_shards
    rows = pq.read_table(output / "resampling.parquet").to_pylist()
    assert len(rows) == 3 * 7  # 3 episodes x (3 cameras + 4 joint topics)
    assert {row["role"] for row in rows} == {"camera.exterior_1", "camera.left_wrist", "camera.right_wrist",
                                             "state.left", "state.right", "action.left", "action.right"}
    ticks = {row["episode_id"]: row["ticks"] for row in rows}
    assert sum(ticks.values()) == report.resampling["ticks"]
    summary = json.loads((output / "summary.json").read_text())["resampling"]
    assert summary["episodes"] == 3 and summary["outcomes"] == {"kept": 3}
    assert summary["ticks"] == sum(ticks.values())
    cameras = [row for row in rows if row["role"].startswith("camera")]
    assert max(row["max_offset_ms"] for row in cameras) == pytest.approx(
        max(summary["roles"][role]["max_offset_ms"] for role in summary["roles"] if role.startswith("camera")),
        abs=1e-3)
    # Every tick becomes a step (bar idle trimming at the ends): the summary's ticks bound what was written.
    assert report.steps_written <= summary["ticks"]


def test_a_rerun_skips_finished_units_and_keeps_their_reports(mcap_dataset, mcap_shards, ingest_locally):
    output, report = mcap_shards
    again = ingest_locally("teleop-mcap", mcap_dataset, output, source_options={"files_per_unit": 2}, **OPTIONS)
    assert again.units_resumed == again.units == 2
    assert again.resampling == report.resampling
    assert len(pq.read_table(output / "resampling.parquet")) == 3 * 7


def test_webdataset_ray_data_and_hugging_face_read_the_shards(mcap_shards, ray_local):
    from datasets import load_dataset

    output, _ = mcap_shards
    rows = pq.read_table(output / "manifest.parquet").to_pylist()
    urls = [str(output / row["url"]) for row in rows]
    count = sum(row["samples"] for row in rows)
    samples = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))
    assert len(samples) == count
    first = samples[0]
    assert set(first) - {"__key__", "__url__", "__local_path__"} == MEMBERS
    assert np.load(io.BytesIO(first["state.npy"]), allow_pickle=False).shape == (14,)
    assert np.load(io.BytesIO(first["action.npy"]), allow_pickle=False).shape == (32, 14)
    meta = json.loads(first["meta.json"])
    assert meta["embodiment"] == "bimanual_2x6dof" and meta["state_names"][0] == "left_waist"
    assert meta["source"] == "teleop-mcap" and meta["control_rate_hz"] == 30.0
    assert meta["flags"]["timeline"]["rate_hz"] == 30.0 and meta["flags"]["timeline"]["gaps"] == []

    assert ray_local.data.read_webdataset(urls).count() == count
    hf = load_dataset("webdataset", data_files={"train": urls}, split="train")
    assert len(hf) == count and MEMBERS <= set(hf.column_names)
    assert hf[0]["left_wrist.jpg"].size == (128, 96)  # PIL: (width, height)


def test_bad_input_in_both_formats_is_quarantined_and_the_rest_lands(tmp_path, ingest_locally):
    recording = make_recording(seed=21, duration_s=2.0)
    mcap = tmp_path / "mcap"
    write_teleop_mcap(mcap / "good.mcap", recording)
    backwards = copy.deepcopy(recording)
    stamps = backwards.follower["right"].stamps
    stamps[100], stamps[101] = stamps[101], stamps[100]
    write_teleop_mcap(mcap / "backwards.mcap", backwards)
    write_teleop_mcap(mcap / "no_wrist.mcap", recording, skip_topics=(camera_topic("cam_left_wrist"),))
    broken = copy.deepcopy(recording)
    broken.cameras["cam_high"].jpeg[5] = b"\xff\xd8 not a jpeg"
    write_teleop_mcap(mcap / "broken_jpeg.mcap", broken)
    data = write_teleop_mcap(mcap / "truncated.mcap", recording).read_bytes()
    (mcap / "truncated.mcap").write_bytes(data[: len(data) * 3 // 4])

    report = ingest_locally("teleop-mcap", mcap, tmp_path / "out")
    console = Console(file=io.StringIO(), width=200)
    print_report(report.as_dict(), console)
    table = console.file.getvalue()
    quarantine = {row["file"]: row for row in pq.read_table(tmp_path / "out" / "quarantine.parquet").to_pylist()}
    assert {file: row["reason"] for file, row in quarantine.items()} == {
        "backwards.mcap": "nonmonotonic_timestamps", "no_wrist.mcap": "missing_stream",
        "broken_jpeg.mcap": "bad_image", "truncated.mcap": "truncated_file"}
    assert "/follower_right/joint_states: timestamps go backwards at measurement 101" in \
        quarantine["backwards.mcap"]["message"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["episodes_written"] == 1 and summary["quarantined"] == 4
    for label in ("resampled episodes", "timeline ticks", "gaps > 100 ms", "camera.exterior_1: |tick-sample| max/mean, dup, skip",
                  "dropped: nonmonotonic_timestamps", "dropped: truncated_file"):
        assert label in table

    hdf5 = write_aloha_dataset(tmp_path / "aloha", n_episodes=2, duration_s=1.5, seed=3)
    with h5py.File(hdf5 / "episode_1.hdf5", "r+") as handle:
        qvel = handle["observations/qvel"][()]
        del handle["observations/qvel"]
        handle["observations/qvel"] = qvel[:-3]
    ingest_locally("teleop-hdf5", hdf5, tmp_path / "out-h5")
    (row,) = pq.read_table(tmp_path / "out-h5" / "quarantine.parquet").to_pylist()
    assert (row["file"], row["reason"]) == ("episode_1.hdf5", "inconsistent_lengths")
    assert "/observations/qvel has 72 rows" in row["message"]
    assert json.loads((tmp_path / "out-h5" / "summary.json").read_text())["episodes_written"] == 1


def test_bad_timestamps_under_the_raise_policy_stop_the_cli_with_a_named_error(tmp_path, capsys):
    recording = make_recording(seed=22, duration_s=1.0)
    recording.cameras["cam_high"].stamps[7] = recording.cameras["cam_high"].stamps[6]
    write_teleop_mcap(tmp_path / "in" / "dup.mcap", recording)
    code = main(["ingest", "teleop-mcap", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                 "--runner", "local", "--no-progress", "--set", "on_bad_timestamps=raise"])
    assert code == 2
    error = capsys.readouterr().err
    assert "dup.mcap: /cam_high/image_raw/compressed: measurement 7 repeats the timestamp of measurement 6" in error
    assert not (tmp_path / "out" / "manifest.parquet").exists()


def test_every_segment_of_a_split_recording_lands_in_the_recordings_split(tmp_path, ingest_locally):
    from vlaforge.datasets.timeline import NS_PER_S
    from vlaforge.pipelines.split import split_of

    for seed, name in ((31, "holed"), (32, "wipe")):  # each recording's segments hash, by their own ids, to both
        recording = make_recording(seed=seed, duration_s=3.0)
        track = recording.cameras["cam_left_wrist"]
        t = (track.stamps - recording.start_ns) / NS_PER_S
        keep = ~(((t > 0.8) & (t < 1.1)) | ((t > 1.9) & (t < 2.2)))
        track.stamps, track.log = track.stamps[keep], track.log[keep]
        track.jpeg = [jpeg for jpeg, k in zip(track.jpeg, keep) if k]
        write_teleop_mcap(tmp_path / "in" / f"{name}.mcap", recording)
    ingest_locally("teleop-mcap", tmp_path / "in", tmp_path / "out", validation_fraction=0.5,
                   source_options={"on_gap": "split", "dataset_name": "teleop"})
    splits = {}
    for row in pq.read_table(tmp_path / "out" / "manifest.parquet").to_pylist():
        for episode in row["episodes"]:
            splits.setdefault(episode, set()).add(row["split"])
    for name in ("holed", "wipe"):
        segments = [episode for episode in splits if episode.startswith(f"teleop-{name}-seg")]
        assert len(segments) >= 3  # cut at the two holes (and at any longer dropout the synthetic camera has)
        assert len({split_of(episode, 0.5) for episode in segments}) == 2  # hashed per segment, they would straddle
        assert set().union(*(splits[episode] for episode in segments)) == {split_of(f"teleop-{name}", 0.5).value}
    assert {split for found in splits.values() for split in found} == {"train", "validation"}
