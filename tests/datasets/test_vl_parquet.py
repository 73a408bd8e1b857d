"""General VL datasets (LLaVA JSON, hub Parquet in HF-messages and ShareGPT layouts) into VL shards: normalised
conversations, images as JPEG, dedup by image hash, per-dataset limit, named rejects, reruns."""

import io
import json
import tarfile

import numpy as np
import pyarrow.parquet as pq
import pytest
import simplejpeg

from vlaforge.datasets.drops import DropLedger, DropReason
from vlaforge.datasets.source import SourceError
from vlaforge.datasets.synth.llava import write_llava_json, write_vl_parquet
from vlaforge.datasets.vl_parquet import VlParquetSource
from vlaforge.datasets.vl_rows import RowReject, VlRow
from vlaforge.pipelines.runners import LocalRunner
from vlaforge.pipelines.shards.manifest import read_manifest
from vlaforge.pipelines.shards.writer import ShardConfig
from vlaforge.pipelines.vl_ingest import new_job, run_vl_ingest
from vlaforge.pipelines.vl_row_samples import VlRowSamples


def _ingest(source, output, **options):
    job = new_job(str(source), str(output), source_options={"rows_per_unit": 7},
                  shards=ShardConfig(max_samples=5, max_bytes=None), **options)
    return run_vl_ingest(job, LocalRunner())


def _samples(output):
    samples = {}
    for record in read_manifest(output / "manifest.parquet"):
        with tarfile.open(output / record.url) as tar:
            for member in tar:
                key, extension = member.name.split(".", 1)
                samples.setdefault(key, {})[extension] = tar.extractfile(member).read()
    return samples


@pytest.fixture(scope="module")
def llava(tmp_path_factory):
    root = tmp_path_factory.mktemp("llava")
    source = write_llava_json(root / "raw")
    output = root / "shards"
    return source, output, _ingest(source, output)


def test_llava_json_rows_become_samples_and_bad_rows_are_named(llava):
    source, output, summary = llava
    assert summary["kind"] == "vl" and summary["task"] == "general" and summary["dataset"] == "llava_instruct"
    assert summary["rows"] == {"total": 20, "keep": 17, "duplicate": 1, "near_duplicate": 0, "over_limit": 0,
                               "rejected": 2, "near_duplicate_images": 2}  # rows 11 and 19: pans over rows 7 and 15
    assert summary["samples"] == 17
    assert summary["drops_by_reason"] == {"duplicate_sample": 1, "missing_image": 1, "no_assistant_turn": 1}
    quarantine = {r["episode"]: r for r in pq.read_table(output / "quarantine.parquet").to_pylist()}
    assert quarantine["000000000003"]["reason"] == "missing_image"
    assert "llava_instruct.json row 3" in quarantine["000000000003"]["message"]
    assert "images/coco_000003.jpg" in quarantine["000000000003"]["message"]
    assert quarantine["000000000008"]["reason"] == "no_assistant_turn"


def test_conversations_and_images_are_normalised(llava):
    source, output, _ = llava
    samples = _samples(output)
    rows = json.loads(source.read_text())
    first = samples["llava_instruct_00000000"]
    conversation = json.loads(first["conversation.json"])
    question = rows[0]["conversations"][0]["value"].removeprefix("<image>\n")
    assert conversation[0] == {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
    assert [m["role"] for m in conversation] == ["user", "assistant", "user", "assistant"]  # row 0 is multi-turn
    assert first["0.jpg"] == (source.parent / rows[0]["image"]).read_bytes()  # a JPEG passes through untouched
    png = samples["llava_instruct_00000001"]["0.jpg"]  # row 1's image is a PNG: re-encoded as JPEG
    assert simplejpeg.decode_jpeg(png).shape == (96, 128, 3)
    text_only = samples["llava_instruct_00000018"]
    assert "0.jpg" not in text_only and json.loads(text_only["conversation.json"])[0]["content"][0]["type"] == "text"
    meta = json.loads(first["meta.json"])
    assert meta["source_key"] == "000000000000" and meta["provenance"][0]["model"] == "dataset:llava_instruct"
    assert meta["extra"]["row"] == 0 and len(meta["extra"]["image_sha256"]) == 64


@pytest.mark.parametrize("layout", ["messages", "sharegpt"])
def test_hub_parquet_layouts(tmp_path, layout):
    source = write_vl_parquet(tmp_path / "raw" / "train-00000-of-00001.parquet", layout=layout)
    summary = _ingest(source, tmp_path / "shards", dataset="hub-vl")
    assert summary["samples"] == 17 and summary["rows"]["duplicate"] == 1
    assert summary["drops_by_reason"] == {"duplicate_sample": 1, "missing_image": 1, "no_assistant_turn": 1}
    sample = _samples(tmp_path / "shards")["train-00000-of-00001_00000000"]
    conversation = json.loads(sample["conversation.json"])
    assert conversation[0]["content"][0] == {"type": "image"} and conversation[1]["role"] == "assistant"


def test_synthetic_parquet_is_what_hf_datasets_reads_as_images(tmp_path):
    datasets = pytest.importorskip("datasets")
    source = write_vl_parquet(tmp_path / "data.parquet", n_rows=3, bad_rows=False)
    loaded = datasets.load_dataset("parquet", data_files=str(source), split="train")
    assert type(loaded.features["images"].feature).__name__ == "Image"
    assert loaded[0]["images"][0].size == (128, 96)
    assert loaded[0]["messages"][0]["content"][0]["type"] == "image"


def test_limit_keeps_the_first_rows_after_dedup_and_reruns_change_nothing(tmp_path):
    source = write_llava_json(tmp_path / "raw")
    output = tmp_path / "shards"
    summary = _ingest(source, output, limit=5)
    assert summary["samples"] == 5 and summary["rows"]["over_limit"] == 12
    assert sorted(_samples(output)) == [f"llava_instruct_{row:08d}" for row in (0, 1, 2, 4, 5)]
    manifest = (output / "manifest.parquet").read_bytes()
    again = _ingest(source, output, limit=5)
    assert again["samples"] == 5 and (output / "manifest.parquet").read_bytes() == manifest
    with pytest.raises(ValueError, match="(?s)vl_ingest.limit: 5 \\(recorded\\) -> 6 \\(this run\\).*new --output"):
        _ingest(source, output, limit=6)


def test_rows_that_escape_the_image_root_or_lack_images_are_refused(tmp_path):
    (tmp_path / "secret.jpg").write_bytes(b"\xff\xd8 not for shards \xff\xd9")
    root = tmp_path / "dataset"
    root.mkdir()
    source = VlParquetSource.Config(root=str(root)).build()
    escape = {"id": "x", "image": "../secret.jpg", "conversations": [{"from": "human", "value": "<image>\nq"},
                                                                     {"from": "gpt", "value": "a"}]}
    with pytest.raises(RowReject, match="leaves the image root") as error:
        source.row("d.json", 0, escape)
    assert error.value.reason == DropReason.BAD_RECORD
    two_tokens = {"id": "y", "conversations": [{"from": "human", "value": "<image>\n<image>\nq"},
                                               {"from": "gpt", "value": "a"}]}
    with pytest.raises(RowReject, match="shows 2 <image> but the row has 0 images") as error:
        source.row("d.json", 1, two_tokens)
    assert error.value.reason == DropReason.MISSING_IMAGE
    robot = {"id": "z", "conversations": [{"from": "robot", "value": "q"}]}
    with pytest.raises(RowReject, match="turn 0 is not") as error:
        source.row("d.json", 2, robot)
    assert error.value.reason == DropReason.BAD_CONVERSATION


def test_unreadable_dataset_files_stop_before_any_work(tmp_path):
    (tmp_path / "broken.json").write_text('[{"id": 1,')
    with pytest.raises(SourceError, match="broken.json: not valid JSON at line 1"):
        VlParquetSource.Config(root=str(tmp_path / "broken.json")).build().plan()
    with pytest.raises(SourceError, match="does not exist"):
        VlParquetSource.Config(root=str(tmp_path / "nowhere")).build().plan()


def test_read_quarantines_and_goes_on(tmp_path):
    source_path = write_llava_json(tmp_path / "raw", n_rows=10)
    source = VlParquetSource.Config(root=str(source_path), rows_per_unit=100).build()
    ledger = DropLedger()
    [unit] = source.plan()
    rows = list(source.read(unit, ledger))
    assert [r.row for r in rows] == [0, 1, 2, 4, 5, 6, 7, 9]
    assert [(d.reason, d.quarantined) for d in ledger.take()] == [
        (DropReason.MISSING_IMAGE, True), (DropReason.NO_ASSISTANT_TURN, True)]
    assert io.BytesIO(rows[0].images[0]).read(2) == b"\xff\xd8"


def test_images_become_colour_jpegs():
    gray = simplejpeg.encode_jpeg(np.full((40, 60, 1), 90, np.uint8), colorspace="GRAY")
    colour = simplejpeg.encode_jpeg(np.full((40, 60, 3), 90, np.uint8))
    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "image"}, {"type": "text", "text": "q"}]},
                    {"role": "assistant", "content": [{"type": "text", "text": "a"}]}]
    row = VlRow(file="f.parquet", row=0, row_id="r", images=(gray, colour), conversation=conversation,
                layout="messages")
    [sample] = VlRowSamples.Config(dataset="d").build()([row])
    assert sample.members["1.jpg"] == colour  # a colour JPEG passes through untouched
    assert simplejpeg.decode_jpeg_header(sample.members["0.jpg"])[2] == "YCbCr"
    broken = VlRow(file="f.parquet", row=1, row_id="s", images=(b"\x89PNG garbage",), conversation=[
        {"role": "user", "content": [{"type": "image"}]}, {"role": "assistant", "content": [{"type": "text",
                                                                                             "text": "a"}]}],
        layout="messages")
    stage = VlRowSamples.Config(dataset="d").build()
    assert stage([broken]) == []
    [drop] = stage.ledger.take()
    assert drop.reason == DropReason.BAD_IMAGE and "f.parquet row 1 (id 's')" in drop.message
