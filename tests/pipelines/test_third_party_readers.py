"""Readers nobody here wrote see our shards and the documented keys."""

import io
import json

import numpy as np
import pyarrow.parquet as pq
import webdataset as wds

MEMBERS = {"exterior_1.jpg", "exterior_2.jpg", "wrist.jpg", "state.npy", "action.npy", "cartesian_position.npy",
           "meta.json"}


def _train_shards(output):
    rows = pq.read_table(output / "manifest.parquet").to_pylist()
    return [str(output / r["url"]) for r in rows if r["split"] == "train"], sum(
        r["samples"] for r in rows if r["split"] == "train"
    )


def test_webdataset_reads_every_sample_with_our_members(droid_shards):
    output, _ = droid_shards
    urls, count = _train_shards(output)
    samples = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))
    assert len(samples) == count
    first = samples[0]
    assert set(first) - {"__key__", "__url__", "__local_path__"} == MEMBERS
    assert np.load(io.BytesIO(first["action.npy"]), allow_pickle=False).shape == (32, 8)
    assert json.loads(first["meta.json"])["episode_id"] in first["__key__"]


def test_ray_data_reads_the_shards(droid_shards, ray_local):
    output, _ = droid_shards
    urls, count = _train_shards(output)
    dataset = ray_local.data.read_webdataset(urls)
    assert dataset.count() == count
    row = dataset.take(1)[0]
    assert {"exterior_1.jpg", "state.npy", "action.npy", "meta.json"} <= set(row)


def test_hugging_face_datasets_reads_the_shards(droid_shards):
    from datasets import load_dataset

    output, _ = droid_shards
    urls, count = _train_shards(output)
    dataset = load_dataset("webdataset", data_files={"train": urls}, split="train")
    assert len(dataset) == count
    assert MEMBERS <= set(dataset.column_names)
    row = dataset[0]
    assert row["exterior_1.jpg"].size == (320, 180)  # PIL: (width, height)
    assert np.asarray(row["state.npy"]).shape == (8,)
    assert row["meta.json"]["embodiment"] == "franka_droid"
