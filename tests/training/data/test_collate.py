"""Collation of robot and VL examples, the mixing policies, and exact resume through the batcher's records."""

from __future__ import annotations

import dataclasses
import json
import pickle

import numpy as np
import pytest
import simplejpeg
import torch
import webdataset as wds

from vlaforge.pipelines.vl_samples import assistant, user
from vlaforge.training.data.collate import (
    Batcher,
    CorpusBatch,
    Kind,
    MixPolicy,
    collate_robot,
    collate_vl,
    make_collate,
)
from vlaforge.training.data.robot_transform import RobotSampleTransform
from vlaforge.training.data.vl_transform import IGNORE_INDEX, VlSampleTransform


@pytest.fixture(scope="module")
def robot_examples(droid_shards):
    output, _ = droid_shards
    urls = sorted(str(p) for p in (output / "train").glob("*.tar"))
    stats = json.loads((output / "stats.json").read_text())
    transform = RobotSampleTransform.Config(cameras=("exterior_1", "wrist", "left_wrist"), image_size=(64, 64),
                                            chunk_len=8).build({"droid": stats})
    samples = list(wds.WebDataset(urls, shardshuffle=False, empty_check=False))[:4]
    return [transform(dict(s, component="droid")) for s in samples]


@pytest.fixture(scope="module")
def vl_transform(processor):
    return VlSampleTransform(VlSampleTransform.Config(processor="in-memory"), processor)


def vl_sample(key, question, answer, images):
    sample = {"__key__": key, "__url__": "mem://vl.tar", "meta.json": b'{"task": "vqa"}',
              "conversation.json": json.dumps([user(*[None] * len(images), question), assistant(answer)]).encode()}
    sample.update({f"{i}.jpg": simplejpeg.encode_jpeg(image) for i, image in enumerate(images)})
    return sample


def test_robot_batch_stacks_examples_and_tokenizes_frames_with_instruction(robot_examples, processor, build_model):
    batch = collate_robot(robot_examples, processor)
    assert batch.images.shape == (4, 3, 64, 64, 3) and batch.images.dtype == torch.uint8
    assert batch.image_mask.tolist() == [[True, True, False]] * 4
    assert batch.state.shape == (4, 32) and batch.actions.shape == (4, 8, 32)
    assert torch.equal(batch.actions[1], torch.from_numpy(robot_examples[1].actions))
    assert batch.valid_len.tolist() == [e.valid_len for e in robot_examples]
    inputs = batch.vlm_inputs
    assert inputs["image_grid_thw"].shape[0] == 8  # two present frames per sample
    text = processor.tokenizer.decode(inputs["input_ids"][0][inputs["attention_mask"][0].bool()])
    assert text.count("<|vision_start|>") == 2 and robot_examples[0].instruction in text
    # The model trains on it as is.
    model = build_model()
    torch.manual_seed(0)
    losses = model.flow_matching_loss(batch)
    assert all(torch.isfinite(value).all() for value in losses.values())


def test_robot_batch_without_processor_has_no_vlm_inputs_and_the_model_says_so(robot_examples, build_model):
    batch = collate_robot(robot_examples[:2])
    assert batch.vlm_inputs is None and len(batch) == 2 and batch.images.shape[0] == 2
    with pytest.raises(ValueError, match="collated without a processor; set CorpusLoader.Config.processor"):
        build_model().flow_matching_loss(batch)


def test_vl_batch_is_right_padded_with_labels_ignored_on_padding(vl_transform, camera, processor, build_model):
    long_q = "Describe everything on the table, from left to right, and say which objects are closest to the robot."
    examples = [
        vl_transform(vl_sample("a", "What is it?", "A cat.", [camera("chelsea")])),
        vl_transform(vl_sample("b", long_q, "A mug and a towel.", [camera("coffee"), camera("rocket")])),
        vl_transform(vl_sample("c", "Say hi.", "Hi.", [])),
    ]
    batch = collate_vl(examples, vl_transform.pad_token_id)
    ids, mask = batch.inputs["input_ids"], batch.inputs["attention_mask"]
    lengths = [len(e.input_ids) for e in examples]
    assert ids.shape == (3, max(lengths)) and mask.sum(dim=1).tolist() == lengths
    for row, example in enumerate(examples):
        assert torch.equal(ids[row, :lengths[row]], example.input_ids)
        assert (batch.labels[row, lengths[row]:] == IGNORE_INDEX).all()
        assert (ids[row, lengths[row]:] == vl_transform.pad_token_id).all()
    assert batch.inputs["image_grid_thw"].shape == (3, 3)  # 1 + 2 + 0 images, in sample order
    assert batch.inputs["pixel_values"].shape[0] == int(batch.inputs["image_grid_thw"].prod(dim=1).sum())
    loss = build_model().vlm.next_token_loss(batch.inputs, batch.labels)
    assert torch.isfinite(loss)


class ListStream:
    """A deterministic in-memory stream with the corpus stream's state API (position = samples yielded)."""

    def __init__(self, items):
        self.items = items
        self.position = 0

    def __iter__(self):
        while self.position < len(self.items):
            self.position += 1
            yield self.items[self.position - 1]

    def state_dict(self):
        return {"position": self.position}

    def load_state_dict(self, state):
        self.position = state["position"]


def run_batcher(items, policy, batch_size, resume=None, stop_after=None, bad=()):
    """Drive a Batcher the way a loader worker does; returns [(kinds and keys of each batch, resume record)]."""
    stream = ListStream(items)
    collate = lambda robot, vl: CorpusBatch(robot=robot or None, vl=vl or None)  # noqa: E731
    batcher = Batcher(Batcher.Config(batch_size=batch_size, policy=policy), collate, stream.state_dict)
    if resume is not None:
        stream.load_state_dict(batcher.load(resume))
    out = []
    iterator = iter(stream)
    while stop_after is None or len(out) < stop_after:
        batcher.before_draw()
        item = next(iterator, None)
        if item is None:
            out.extend(batcher.finish())
            break
        kind, key = item
        index = batcher.draw(kind)
        if index is None or key in bad:
            continue
        out.extend(batcher.add(index, kind, key))
    return [((batch.robot or [], batch.vl or []), record) for batch, record in out]


def corpus(n=400, seed=0):
    """Kinds drawn 6:1 robot:VL, keys in draw order."""
    kinds = np.random.default_rng(seed).choice([Kind.ROBOT.value, Kind.VL.value], size=n, p=[6 / 7, 1 / 7])
    return [(Kind(kind), f"{i:04d}-{kind}") for i, kind in enumerate(kinds)]


def test_mixed_batches_are_consecutive_stream_samples_of_both_kinds():
    items = corpus()
    batches = run_batcher(items, MixPolicy.MIXED, 14)
    flat = [key for (robot, vl), _ in batches for key in sorted(robot + vl)]
    assert flat == [key for _, key in items]  # every sample once, in stream order (keys sort by draw index)
    assert all(len(robot) + len(vl) == 14 for (robot, vl), _ in batches[:-1])
    assert sum(1 for (robot, vl), _ in batches if robot and vl) > len(batches) // 2


def test_by_kind_batches_hold_one_kind_and_alternate_in_the_stream_ratio():
    items = corpus(1400)
    batches = run_batcher(items, MixPolicy.BY_KIND, 8)
    assert all(bool(robot) != bool(vl) for (robot, vl), _ in batches)
    robot_batches = sum(1 for (robot, _), _ in batches if robot)
    assert 5 <= robot_batches / (len(batches) - robot_batches) <= 7.5
    for kind_index in (0, 1):
        keys = [k for parts, _ in batches for k in parts[kind_index]]
        assert keys == sorted(keys) and len(keys) == sum(1 for kind, _ in items if kind is list(Kind)[kind_index])


@pytest.mark.parametrize("policy", list(MixPolicy))
def test_resuming_from_any_batch_record_gives_exactly_the_rest_of_the_uninterrupted_run(policy):
    items = corpus(300, seed=3)
    bad = {items[i][1] for i in (5, 40, 41, 150)}  # bad samples are consumed, never replayed into a batch
    full = run_batcher(items, policy, 6, bad=bad)
    for cut in range(1, len(full) - 1):
        record = full[cut - 1][1]
        rest = run_batcher(items, policy, 6, resume=json.loads(json.dumps(record)), bad=bad)
        assert [parts for parts, _ in rest] == [parts for parts, _ in full[cut:]], f"resume after batch {cut}"
    # A resume of a resume (its records hold the skips still owed) is exact too.
    first = run_batcher(items, policy, 6, resume=full[3][1], stop_after=2, bad=bad)
    second = run_batcher(items, policy, 6, resume=first[-1][1], bad=bad)
    assert [parts for parts, _ in second] == [parts for parts, _ in full[6:]]


def test_make_collate_builds_both_parts(robot_examples, vl_transform, camera):
    vl = [vl_transform(vl_sample("v", "What?", "A cat.", [camera("chelsea")]))]
    batch = make_collate(None, vl_transform.pad_token_id)(robot_examples[:3], vl)
    assert len(batch) == 4 and batch.keys == [e.key for e in robot_examples[:3]] + ["v"]
    assert batch.robot.vlm_inputs is None and batch.vl.labels.shape[0] == 1
    assert make_collate(None, 0)([], vl).robot is None


def test_batcher_config_names_the_bad_field():
    with pytest.raises(ValueError, match="batch_size"):
        Batcher.Config(batch_size=0)
    with pytest.raises(ValueError):
        Batcher.Config(policy="sometimes")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="page-locked memory needs a CUDA device")
def test_pin_memory_pins_every_tensor_of_both_parts(robot_examples, vl_transform, camera):
    vl = [vl_transform(vl_sample("v", "What?", "A cat.", [camera("chelsea")]))]
    pinned = make_collate(None, vl_transform.pad_token_id)(robot_examples[:2], vl).pin_memory()
    assert pinned.robot.actions.is_pinned() and pinned.robot.images.is_pinned()
    assert all(tensor.is_pinned() for tensor in pinned.vl.inputs.values()) and pinned.vl.labels.is_pinned()
    assert pinned.robot.keys == [e.key for e in robot_examples[:2]]


def test_a_batch_crosses_a_process_boundary_as_bytes_in_the_pickle_and_arrives_equal(robot_examples, processor):
    """A worker's batch travels inside its pickle (one pipe write), not as one shared-memory file per tensor, and
    comes back with the same tensors, dtypes and lineage."""
    from multiprocessing.reduction import ForkingPickler

    robot = collate_robot(robot_examples, processor)
    batch = CorpusBatch(robot=robot, vl=None)
    payload = bytes(ForkingPickler.dumps(batch))
    assert len(payload) > robot.images.numel()  # the frames' bytes are in the pickle itself
    back = pickle.loads(payload)
    assert back.vl is None and back.robot.keys == robot.keys and back.robot.instructions == robot.instructions
    for name in ("images", "image_mask", "state", "state_mask", "actions", "action_mask", "valid_len"):
        sent, received = getattr(robot, name), getattr(back.robot, name)
        assert isinstance(received, torch.Tensor) and received.dtype == sent.dtype and torch.equal(received, sent)
    assert set(back.robot.vlm_inputs) == set(robot.vlm_inputs)
    assert all(torch.equal(back.robot.vlm_inputs[k], v) for k, v in robot.vlm_inputs.items())
    odd = CorpusBatch(robot=dataclasses.replace(robot, state=robot.state.bfloat16()), vl=None)  # numpy has no bf16
    assert pickle.loads(ForkingPickler.dumps(odd)).robot.state.dtype == torch.bfloat16
