"""VL samples: validation with errors that name the sample, and datasets written like robot shards."""

import json
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds

from vlaforge.datasets.frames import FrameConfig, encode_jpeg
from vlaforge.datasets.schema import VlTask
from vlaforge.flows.sample_data.vl_dataset import write_vl_dataset
from vlaforge.pipelines.vl_samples import VlSampleError, assistant, build_vl_sample, user

JPEG = encode_jpeg(np.full((48, 64, 3), 120, np.uint8), FrameConfig())


def _sample(conversation, images=(JPEG,), key="s_000001"):
    return build_vl_sample(
        key=key, task=VlTask.VQA, dataset="t", images=list(images), conversation=conversation,
        source_key="ep_000001", source_group="ep", provenance=[{"model": "m", "revision": "r"}],
    )


def test_sample_members_and_meta():
    sample = _sample([user(None, "What is it?"), assistant("A mug.")])
    assert sorted(sample.members) == ["0.jpg", "conversation.json", "meta.json"]
    meta = json.loads(sample.members["meta.json"])
    assert meta["task"] == "vqa" and meta["image_sizes"] == [[48, 64]] and meta["source_key"] == "ep_000001"
    conversation = json.loads(sample.members["conversation.json"])
    assert conversation[0]["content"] == [{"type": "image"}, {"type": "text", "text": "What is it?"}]


@pytest.mark.parametrize(
    ("conversation", "images", "message"),
    [
        ([user(None, "q?")], (JPEG,), "no assistant turn"),
        ([user(None, "q?"), assistant("  ")], (JPEG,), "no assistant turn"),
        ([user(None, None, "q?"), assistant("a")], (JPEG,), "shows 2 images but the sample has 1"),
        ([user("q?"), assistant("a")], (JPEG,), "shows 0 images but the sample has 1"),
        ([{"role": "robot", "content": [{"type": "text", "text": "x"}]}], (), "role 'robot'"),
        ([user(None, "q?"), assistant("a")], (JPEG[:100],), "image 0 is not usable"),
    ],
)
def test_bad_samples_are_named(conversation, images, message):
    with pytest.raises(VlSampleError, match=message) as error:
        _sample(conversation, images)
    assert "s_000001" in str(error.value)


def test_key_with_a_dot_is_refused():
    with pytest.raises(VlSampleError, match="safe_key_part"):
        _sample([user(None, "q?"), assistant("a")], key="a.b")


def test_synth_dataset_reads_back_with_webdataset(tmp_path):
    output = write_vl_dataset(tmp_path / "vl", n_samples=20, task=VlTask.VQA, images_per_sample=2, shard_samples=8)
    manifest = pq.read_table(output / "manifest.parquet").to_pylist()
    assert sum(row["samples"] for row in manifest) == 20
    summary = json.loads((output / "summary.json").read_text())
    assert summary["kind"] == "vl" and summary["task"] == "vqa" and summary["samples"] == 20
    urls = [str(output / row["url"]) for row in manifest]
    samples = list(wds.WebDataset(urls, shardshuffle=False).decode("rgb8", only=["0.jpg", "1.jpg", "conversation.json"]))
    assert len(samples) == 20
    first = samples[0]
    assert first["0.jpg"].shape == (224, 224, 3) and "1.jpg" in first
    assert first["conversation.json"][-1]["role"] == "assistant"


def test_rewrite_is_byte_identical(tmp_path):
    a = write_vl_dataset(tmp_path / "a", n_samples=12, shard_samples=5)
    b = write_vl_dataset(tmp_path / "b", n_samples=12, shard_samples=5)
    rows_a = pq.read_table(a / "manifest.parquet").to_pylist()
    rows_b = pq.read_table(b / "manifest.parquet").to_pylist()
    assert [r["sha256"] for r in rows_a] == [r["sha256"] for r in rows_b]
    with tarfile.open(a / rows_a[0]["url"]) as tar:
        names = tar.getnames()
    assert names[:3] == ["synth-vl-caption_000000.0.jpg", "synth-vl-caption_000000.conversation.json",
                         "synth-vl-caption_000000.meta.json"]


def test_the_source_split_wins_over_the_hash():
    conversation = [user(None, "q?"), assistant("a")]
    hashed = build_vl_sample(key="k", task=VlTask.VQA, dataset="t", images=[JPEG], conversation=conversation,
                             source_key="s", source_group="ep", provenance=[], validation_fraction=0.0)
    kept = build_vl_sample(key="k", task=VlTask.VQA, dataset="t", images=[JPEG], conversation=conversation,
                           source_key="s", source_group="ep", provenance=[], validation_fraction=0.0,
                           split="validation")
    assert hashed.split.value == "train" and kept.split.value == "validation"
    assert json.loads(kept.members["meta.json"])["split"] == "validation"
