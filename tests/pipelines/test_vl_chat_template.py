"""VL samples as shards store them go through a Qwen3-VL processor (real offline Qwen3 tokenizer) with every image
at its place in the conversation and in the pixel values."""

import json
import tarfile

import numpy as np
import pytest
import simplejpeg
import torch

from vlaforge.datasets.frames import FrameConfig, encode_jpeg
from vlaforge.datasets.schema import VlTask
from vlaforge.datasets.synth.scenes import camera_frames
from vlaforge.pipelines.shards.manifest import read_manifest
from vlaforge.pipelines.vl_dataset import write_vl_summary, write_vl_unit
from vlaforge.pipelines.vl_samples import assistant, build_vl_sample, user
from vlaforge.training.model import presets


@pytest.fixture(scope="module")
def processor():
    return presets.tiny_processor(max_side=64)


@pytest.fixture(scope="module")
def stored_sample(tmp_path_factory):
    """A two-image, two-turn sample written to a shard and read back: (conversation, [H, W, 3] images)."""
    wide = encode_jpeg(camera_frames(0, 1, 32, 64)[0], FrameConfig())
    tall = encode_jpeg(camera_frames(2, 1, 64, 32)[0], FrameConfig())
    conversation = [user("Compare", None, "with", None, "."), assistant("The first is wider."),
                    user("Which is taller?"), assistant("The second.")]
    sample = build_vl_sample(key="pair_000001", task=VlTask.VQA, dataset="pairs", images=[wide, tall],
                             conversation=conversation, source_key="pair", source_group="pair", provenance=[])
    output = tmp_path_factory.mktemp("vl")
    write_vl_unit(output, "pairs", 0, [sample], source_files=["synthetic"])
    write_vl_summary(output, dataset="pairs", task=VlTask.VQA)
    [record] = read_manifest(output / "manifest.parquet")
    with tarfile.open(output / record.url) as tar:
        members = {m.name.split(".", 1)[1]: tar.extractfile(m).read() for m in tar}
    images = [simplejpeg.decode_jpeg(members[f"{i}.jpg"]) for i in range(2)]
    return json.loads(members["conversation.json"]), images


def test_images_sit_where_the_conversation_shows_them(processor, stored_sample):
    conversation, images = stored_sample
    text = processor.apply_chat_template(conversation, tokenize=False)
    block = "<|vision_start|><|image_pad|><|vision_end|>"
    assert text.startswith(f"<|im_start|>user\nCompare{block}with{block}.<|im_end|>\n<|im_start|>assistant\n"
                           "The first is wider.<|im_end|>")
    inputs = processor(text=[text], images=images, return_tensors="pt")
    ids = inputs["input_ids"][0].tolist()
    tokenizer = processor.tokenizer
    start, pad = tokenizer.convert_tokens_to_ids("<|vision_start|>"), tokenizer.convert_tokens_to_ids("<|image_pad|>")
    merge = processor.image_processor.merge_size ** 2
    expected = (inputs["image_grid_thw"].prod(dim=-1) // merge).tolist()
    # Each vision block is expanded to its own image's token count, in order: the wide image first, then the tall.
    starts = [i for i, token in enumerate(ids) if token == start]
    runs = [next(j for j in range(s + 1, len(ids)) if ids[j] != pad) - s - 1 for s in starts]
    assert runs == expected and expected[0] == expected[1]  # 32x64 and 64x32 hold the same number of patches
    assert inputs["image_grid_thw"][0].tolist()[1:] != inputs["image_grid_thw"][1].tolist()[1:]  # but differ in shape
    assert tokenizer.decode(ids[: starts[0]]).endswith("Compare")
    assert tokenizer.decode(ids[starts[0] + runs[0] + 2 : starts[1]]) == "with"
    assert sum(token == pad for token in ids) == sum(expected)
    assert (inputs["mm_token_type_ids"][0] == 1).sum().item() == sum(expected)


def test_pixel_values_follow_the_image_order(processor, stored_sample):
    conversation, images = stored_sample
    text = processor.apply_chat_template(conversation, tokenize=False)
    together = processor(text=[text], images=images, return_tensors="pt")
    one = [processor.image_processor(images=[image], return_tensors="pt")["pixel_values"] for image in images]
    torch.testing.assert_close(together["pixel_values"], torch.cat(one))
    swapped = processor(text=[text], images=images[::-1], return_tensors="pt")
    assert not torch.equal(swapped["pixel_values"], together["pixel_values"])
    assert np.array_equal(np.asarray(images[0].shape), [32, 64, 3])
