"""The general VL datasets the recipe cites, each from a fixture in its published layout, through the VL ingest:
img2dataset WebDataset tars (CC3M / CC12M), caption Parquet, The Cauldron / FineVision, RefCOCO grounding rows, and
LLaVA's own 0-1 grounding boxes; deduplication by images and conversation."""

import json
import tarfile

import pyarrow.parquet as pq
import pytest

from vlaforge.datasets.qwen_coordinates import to_qwen_box
from vlaforge.datasets.source import SourceError
from vlaforge.datasets.synth.cauldron import write_cauldron_parquet
from vlaforge.datasets.synth.img2dataset import write_caption_parquet, write_img2dataset_webdataset
from vlaforge.datasets.synth.llava import MIX_OBJECTS, write_llava_mix_json
from vlaforge.datasets.synth.refcoco import OBJECTS, write_refcoco_parquet
from vlaforge.datasets.synth.scenes import CAPTIONS
from vlaforge.datasets.vl_rows import CAPTION_PROMPTS
from vlaforge.pipelines.runners import LocalRunner
from vlaforge.pipelines.shards.manifest import read_manifest
from vlaforge.pipelines.shards.writer import ShardConfig
from vlaforge.pipelines.vl_ingest import new_job, run_vl_ingest


def ingest(source, output, input_format, **options):
    job = new_job(str(source), str(output), input_format=input_format, shards=ShardConfig(max_samples=50,
                                                                                           max_bytes=None), **options)
    return run_vl_ingest(job, LocalRunner())


def samples(output):
    found = {}
    for record in read_manifest(output / "manifest.parquet"):
        with tarfile.open(output / record.url) as tar:
            for member in tar:
                key, extension = member.name.split(".", 1)
                found.setdefault(key, {})[extension] = tar.extractfile(member).read()
    return found


def texts(sample):
    return [(m["role"], " ".join(p["text"] for p in m["content"] if p["type"] == "text"))
            for m in json.loads(sample["conversation.json"])]


def quarantined(output):
    path = output / "quarantine.parquet"
    return sorted((r["reason"], r["episode"]) for r in pq.read_table(path).to_pylist()) if path.exists() else []


def test_img2dataset_webdataset_shards_become_caption_samples(tmp_path):
    raw = write_img2dataset_webdataset(tmp_path / "cc3m")
    summary = ingest(raw, tmp_path / "out", "vl-webdataset")
    assert summary["task"] == "caption" and summary["dataset"] == "cc3m"
    # shard 0: 8 inputs, 2 failed to download (not in the tar), 1 cut-short JPEG, 1 empty caption; shard 1: 8 good
    assert summary["rows"]["total"] == 14 and summary["samples"] == 12
    assert quarantined(tmp_path / "out") == [("bad_image", "000000002"), ("no_assistant_turn", "000000004")]
    produced = samples(tmp_path / "out")
    first = produced["00000_00000000"]
    (question, caption) = texts(first)
    assert question[0] == "user" and question[1] in CAPTION_PROMPTS and caption == ("assistant", CAPTIONS["astronaut"])
    assert json.loads(first["meta.json"])["source_key"] == "000000000"
    with tarfile.open(raw / "00000.tar") as tar:
        assert first["0.jpg"] == tar.extractfile("000000000.jpg").read()  # JPEGs pass through untouched


def test_a_tar_member_that_climbs_out_refuses_the_shard(tmp_path):
    import io

    with tarfile.open(tmp_path / "00000.tar", "w") as tar:
        info = tarfile.TarInfo("../000000000.jpg")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"abc"))
    with pytest.raises(SourceError, match="climbs out of the archive"):
        new_job(str(tmp_path), str(tmp_path / "out"), input_format="vl-webdataset").source.build().plan()


def test_caption_parquet_rows_become_caption_samples(tmp_path):
    raw = write_caption_parquet(tmp_path / "coco-captions" / "train-00000-of-00001.parquet")
    summary = ingest(raw.parent, tmp_path / "out", "caption-parquet")
    assert summary["task"] == "caption" and summary["samples"] == 4  # rows 0, 1, 3, 5
    assert quarantined(tmp_path / "out") == [("bad_image", "000000002"), ("missing_image", "000000006"),
                                             ("missing_image", "000000007"), ("no_assistant_turn", "000000004")]


def test_a_caption_parquet_of_urls_is_refused_with_the_fix(tmp_path):
    import pyarrow as pa

    pq.write_table(pa.table({"image_url": ["https://x/1.jpg"], "caption": ["a cat"]}), tmp_path / "cc3m.parquet")
    with pytest.raises(SourceError, match="only image URLs .*img2dataset"):
        ingest(tmp_path / "cc3m.parquet", tmp_path / "out", "caption-parquet")


@pytest.mark.parametrize("finevision", [False, True])
def test_cauldron_and_finevision_rows(tmp_path, finevision):
    raw = write_cauldron_parquet(tmp_path / "vqav2" / "train-00000-of-00001.parquet", finevision=finevision)
    options = {"source_options": {"min_rating": 3}} if finevision else {}
    summary = ingest(raw, tmp_path / "out", "cauldron", **options)
    assert summary["task"] == "general" and summary["samples"] == 7
    assert quarantined(tmp_path / "out") == [("missing_image", "3")]
    produced = samples(tmp_path / "out")
    first = json.loads(produced["train-00000-of-00001_00000000"]["conversation.json"])
    assert first[0]["content"][0] == {"type": "image"} and [m["role"] for m in first] == ["user", "assistant"] * 2
    emptied = texts(produced["train-00000-of-00001_00000005"])  # its last turn has no answer: left out
    assert len(emptied) == 2


def test_refcoco_rows_become_grounding_samples_in_the_qwen_convention(tmp_path):
    raw = write_refcoco_parquet(tmp_path / "refcoco" / "val-00000-of-00001.parquet")
    summary = ingest(raw, tmp_path / "out", "refcoco")
    assert summary["task"] == "grounding" and summary["samples"] == 7
    assert quarantined(tmp_path / "out") == [("bad_record", "4"), ("no_assistant_turn", "7")]
    turns = texts(samples(tmp_path / "out")["val-00000-of-00001_00000000"])
    expressions, (x, y, w, h) = OBJECTS[0]
    assert expressions[0] in turns[0][1] and len(turns) == 2 * len(expressions)  # one question per expression
    boxes = json.loads(turns[1][1].removeprefix("```json\n").removesuffix("\n```"))
    assert boxes == [{"bbox_2d": to_qwen_box([x, y, x + w, y + h], 96, 128), "label": expressions[0]}]


def test_llava_mix_rows_sharing_an_image_are_kept_and_their_boxes_converted(tmp_path):
    raw = write_llava_mix_json(tmp_path / "llava")
    summary = ingest(raw, tmp_path / "out", "vl-parquet")
    # Five rows show one COCO image: four ask different things (all kept), the fifth repeats the VQA row exactly.
    assert summary["rows"]["keep"] == 4 and summary["rows"]["duplicate"] == 1 and summary["samples"] == 4
    assert summary["drops_by_reason"] == {"duplicate_sample": 1}
    produced = samples(tmp_path / "out")
    grounding = texts(produced["llava_v1_5_mix665k_00000002"])
    for (expression, box), (_, reply) in zip(MIX_OBJECTS.items(), grounding[1::2]):
        (found,) = json.loads(reply.removeprefix("```json\n").removesuffix("\n```"))
        assert found["label"] == expression
        expected = to_qwen_box(box, 96, 128)
        assert all(abs(a - b) <= 6 for a, b in zip(found["bbox_2d"], expected)), (found, expected)  # 2 decimals
    region = texts(produced["llava_v1_5_mix665k_00000003"])[0][1]
    assert "0." not in region and "[" in region  # the question's box is now 0-1000 integers


def test_without_box_conversion_llava_boxes_stay_as_written(tmp_path):
    raw = write_llava_mix_json(tmp_path / "llava")
    ingest(raw, tmp_path / "out", "vl-parquet", source_options={"box_frame": None})
    reply = texts(samples(tmp_path / "out")["llava_v1_5_mix665k_00000002"])[1][1]
    assert reply.startswith("[0.") and reply.endswith("]")
