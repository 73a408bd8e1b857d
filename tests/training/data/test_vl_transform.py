"""VL samples through the real Qwen3 tokenizer and a Qwen3-VL processor loaded with AutoProcessor.from_pretrained."""

from __future__ import annotations

import json

import numpy as np
import pytest
import simplejpeg
import torch
import webdataset as wds

from vlaforge.datasets.drops import DropReason
from vlaforge.datasets.synth.scenes import CAPTIONS
from vlaforge.flows.sample_data.vl_dataset import write_vl_dataset
from vlaforge.pipelines.vl_samples import assistant, system, user
from vlaforge.training.data.bad_samples import BadSampleError
from vlaforge.training.data.corpus_stream import CorpusStream
from vlaforge.training.data.vl_transform import IGNORE_INDEX, VlSampleTransform


@pytest.fixture(scope="module")
def processor_dir(tmp_path_factory, processor):
    """The tiny Qwen3-VL processor (real Qwen3 tokenizer) saved like a checkpoint's, loaded back by the transform."""
    directory = tmp_path_factory.mktemp("vl-processor")
    processor.save_pretrained(directory)
    return directory


@pytest.fixture(scope="module")
def transform(processor_dir):
    transform = VlSampleTransform.Config(processor=str(processor_dir)).build()
    transform.setup()
    return transform


@pytest.fixture(scope="module")
def vl_samples(tmp_path_factory):
    """Samples of a synthetic two-image caption dataset, as webdataset reads them with no decoder."""
    output = write_vl_dataset(tmp_path_factory.mktemp("vl"), n_samples=6, images_per_sample=2, image_size=(240, 320),
                              validation_fraction=0.0)
    urls = sorted(str(p) for p in output.rglob("*.tar"))
    return [dict(s, component="captions") for s in wds.WebDataset(urls, shardshuffle=False, empty_check=False)]


def hand_sample(conversation, images, key="hand_000001"):
    """A VL sample dict as a shard holds it: JPEG bytes and JSON bytes."""
    sample = {"__key__": key, "__url__": "mem://hand.tar", "conversation.json": json.dumps(conversation).encode(),
              "meta.json": json.dumps({"task": "vqa"}).encode()}
    for i, image in enumerate(images):
        sample[f"{i}.jpg"] = simplejpeg.encode_jpeg(image, quality=90)
    return sample


def supervised_runs(example):
    """Contiguous runs of labelled positions, as token lists."""
    positions = torch.nonzero(example.labels != IGNORE_INDEX).flatten().tolist()
    runs, current = [], []
    for position in positions:
        if current and position != current[-1] + 1:
            runs.append(current)
            current = []
        current.append(position)
    return [[int(example.labels[p]) for p in run] for run in runs + [current] if run]


def test_labels_are_exactly_the_assistant_answer_and_its_end_token(transform, vl_samples):
    tokenizer = transform.processor.tokenizer
    for sample in vl_samples:
        example = transform(sample)
        answer = json.loads(sample["conversation.json"])[1]["content"][0]["text"]
        assert answer in CAPTIONS.values()
        runs = supervised_runs(example)
        assert [tokenizer.decode(run) for run in runs] == [answer + "<|im_end|>"]
        supervised = example.labels != IGNORE_INDEX
        assert torch.equal(example.labels[supervised], example.input_ids[supervised])


def test_every_assistant_turn_of_a_multi_turn_conversation_is_labelled_and_nothing_else(transform, camera):
    conversation = [
        system("You are a robot's eyes."),
        user(None, "What animal is this?"),
        assistant("A cat."),
        user("Which color are its eyes?"),
        assistant("Green, looking to the side."),
        user(None, "And this one?"),
        assistant("\nA rocket on its pad."),
    ]
    example = transform(hand_sample(conversation, [camera("chelsea"), camera("rocket")]))
    decoded = [transform.processor.tokenizer.decode(run) for run in supervised_runs(example)]
    # A leading newline merges into the header's newline token, so it is not supervised (module docstring).
    assert decoded == ["A cat.<|im_end|>", "Green, looking to the side.<|im_end|>", "A rocket on its pad.<|im_end|>"]


def test_image_tokens_match_image_grid_thw_and_the_patches(transform, vl_samples):
    merge = transform.processor.image_processor.merge_size
    for sample in vl_samples:
        example = transform(sample)
        grid = example.image_grid_thw
        assert grid.shape == (2, 3)  # two images per sample
        image_pad = transform.processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
        n_image_tokens = int((example.input_ids == image_pad).sum())
        assert n_image_tokens == int(grid.prod(dim=1).sum()) // merge**2
        assert int(example.mm_token_type_ids.sum()) == n_image_tokens
        assert torch.equal(example.mm_token_type_ids.bool(), example.input_ids == image_pad)
        assert example.pixel_values.shape[0] == int(grid.prod(dim=1).sum())


def test_reduced_scale_decode_keeps_the_tokens_of_a_full_decode(processor_dir, transform, vl_samples, processor):
    full = VlSampleTransform.Config(processor=str(processor_dir), reduced_decode=False).build()
    full.setup()
    for sample in vl_samples[:3]:
        fast, slow = transform(sample), full(sample)
        assert torch.equal(fast.input_ids, slow.input_ids) and torch.equal(fast.labels, slow.labels)
        assert torch.equal(fast.image_grid_thw, slow.image_grid_thw)
        assert (fast.pixel_values - slow.pixel_values).abs().mean() < 0.05  # pixels in [-1, 1] after the processor
    # And the ids are the processor's own for this conversation and these images.
    sample = vl_samples[0]
    images = [simplejpeg.decode_jpeg(sample[f"{i}.jpg"]) for i in range(2)]
    text = processor.apply_chat_template(json.loads(sample["conversation.json"]), tokenize=False)
    expected = processor(text=[text], images=images, return_tensors="pt")["input_ids"][0]
    assert torch.equal(full(sample).input_ids, expected)


def test_bad_samples_are_explained(processor_dir, transform, camera):
    image = camera("coffee")
    missing_image = hand_sample([user(None, None, "Compare."), assistant("Same.")], [image])
    with pytest.raises(BadSampleError, match="shows 2 images but the sample has 1") as caught:
        transform(missing_image)
    assert caught.value.reason is DropReason.BAD_RECORD and "hand_000001" in str(caught.value)
    broken = hand_sample([user(None, "What?"), assistant("Coffee.")], [image])
    broken["0.jpg"] = b"\xff\xd8\xff garbage"
    with pytest.raises(BadSampleError, match="0.jpg does not decode") as caught:
        transform(broken)
    assert caught.value.reason is DropReason.BAD_IMAGE
    short = VlSampleTransform.Config(processor=str(processor_dir), max_length=16).build()
    short.setup()
    with pytest.raises(BadSampleError, match="exceed max_length 16") as caught:
        short(hand_sample([user(None, "What is on the table today?"), assistant("Coffee.")], [image]))
    assert caught.value.reason is DropReason.TOO_MANY_TOKENS


def test_config_names_the_bad_field():
    with pytest.raises(ValueError, match="trained_roles"):
        VlSampleTransform.Config(processor="x", trained_roles=("robot",))
    with pytest.raises(ValueError, match="max_length"):
        VlSampleTransform.Config(processor="x", max_length=0)
    with pytest.raises(RuntimeError, match="setup"):
        VlSampleTransform.Config(processor="x").build()({})


def test_text_only_samples_have_no_pixels(transform):
    example = transform(hand_sample([user("Say hi."), assistant("Hi.")], []))
    assert example.image_grid_thw.shape == (0, 3) and not example.mm_token_type_ids.any()
    assert np.array_equal(example.labels[example.labels != IGNORE_INDEX].numpy(),
                          transform.processor.tokenizer.encode("Hi.<|im_end|>", add_special_tokens=False))


def test_samples_from_a_corpus_stream_keep_their_component_epoch_and_shard(small_corpus, transform):
    stream = CorpusStream(str(small_corpus), config=CorpusStream.Config(block=16))
    samples = [s for s in (next(stream) for _ in range(520)) if s["kind"] == "vl"]
    picked = [next(s for s in samples if s["epoch"] == epoch) for epoch in (0, 1)]  # 64 samples: epoch 1 by now
    assert [(e.key, e.component, e.epoch) for e in map(transform, picked)] == [
        (s["__key__"], "synth-vl-caption", s["epoch"]) for s in picked]
    broken = dict(picked[1], **{"conversation.json": b"["})
    with pytest.raises(BadSampleError, match="conversation.json is not JSON") as caught:
        transform(broken)
    assert caught.value.url == picked[1]["__url__"] and "/vl/" in caught.value.url
