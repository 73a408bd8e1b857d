"""Accepted objects -> VL grounding samples (single, multi-object, referring), Qwen3-VL 0-1000 boxes."""

import json

import numpy as np
import pytest

from vlaforge.annotators.consensus import ConsensusStage, decide_frame
from vlaforge.annotators.grounding_frame import Detection, DetectorRun, RunStatus
from vlaforge.annotators.grounding_samples import GroundingSampleBuilder, grounded_objects, referring_expression
from vlaforge.datasets.qwen_coordinates import to_qwen_box
from vlaforge.datasets.schema import VlSampleKey

MUG_LEFT = (4.0, 10.0, 20.0, 30.0)
MUG_RIGHT = (40.0, 10.0, 56.0, 30.0)
SHELF = (10.0, 34.0, 60.0, 46.0)
BOX_ONLY = ConsensusStage.Config(mask_iou=None)


def _decided(frame, boxes, liar=None):
    detections = [Detection(phrase, box, 0.9) for phrase, box in boxes]
    frame.runs = [DetectorRun(name, f"{name}-model", "sha256:abc", RunStatus.OK, list(detections))
                  for name in ("grounding_dino", "llmdet")]
    if liar:
        frame.runs.append(DetectorRun("gdino_1_5", "GroundingDino-1.5-Pro", "api:x", RunStatus.OK,
                                      [Detection(p, b, 0.9) for p, b in liar]))
    frame.candidates = decide_frame(frame, BOX_ONLY)
    return frame


def _conversation(sample):
    return json.loads(sample.members[VlSampleKey.CONVERSATION.value])


def _meta(sample):
    return json.loads(sample.members[VlSampleKey.META.value])


def test_one_object_per_phrase_gives_single_multi_and_referring_samples(frame_factory):
    frame = _decided(frame_factory(negatives=("elephant",)), [("red mug", MUG_LEFT), ("shelf", SHELF),
                                                             ("elephant", MUG_RIGHT)])
    stage = GroundingSampleBuilder.Config(dataset="droid-grounding",
                                          detector_settings=(("llmdet", '{"box_threshold": 0.3}'),)).build()
    samples = stage([frame])
    assert [s.key for s in samples] == [f"{frame.image_key}_{v}" for v in ("single", "multi", "referring")]
    single = _conversation(samples[0])
    assert single[0]["content"][0] == {"type": "image"} and "red mug" in single[0]["content"][1]["text"]
    mug_box = to_qwen_box(MUG_LEFT, frame.height, frame.width)
    assert single[1]["content"][0]["text"] == f'```json\n[{{"bbox_2d": {json.dumps(mug_box)}, "label": "red mug"}}]\n```'
    assert len(single) == 4 and "shelf" in single[2]["content"][0]["text"]  # a second turn, no second image
    multi = _conversation(samples[1])
    assert "red mug, shelf" in multi[0]["content"][1]["text"] and "elephant" not in json.dumps(multi)
    referring = _conversation(samples[2])
    assert "the red mug above the shelf" in referring[0]["content"][1]["text"]
    meta = _meta(samples[0])
    assert meta["task"] == "grounding" and meta["dataset"] == "droid-grounding"
    assert meta["source_key"] == frame.source_key and meta["source_group"] == frame.episode_id
    assert meta["image_sizes"] == [[48, 64]] and samples[0].members["0.jpg"] == frame.jpeg
    assert [p["model"] for p in meta["provenance"]] == ["grounding_dino-model", "llmdet-model", "vlaforge-consensus"]
    assert meta["provenance"][1]["settings"] == {"detector": "llmdet", "box_threshold": 0.3}
    assert meta["consensus_id"] == frame.candidates[0].candidate_id
    assert meta["extra"]["objects"][0]["box_qwen"] == mug_box


def test_two_of_a_kind_are_told_apart_by_position_and_not_asked_singly(frame_factory):
    frame = _decided(frame_factory(), [("red mug", MUG_LEFT), ("red mug", MUG_RIGHT)])
    samples = GroundingSampleBuilder.Config().build()([frame])
    assert [s.key.rsplit("_", 1)[1] for s in samples] == ["multi", "referring"]
    texts = json.dumps(_conversation(samples[1]))
    assert "the leftmost red mug" in texts and "the rightmost red mug" in texts


def test_rejected_objects_never_become_samples_and_an_empty_frame_is_dropped(frame_factory):
    frame = frame_factory()
    frame.runs = [DetectorRun("a", "m", "r", RunStatus.OK, [Detection("red mug", MUG_LEFT, 0.9)]),
                  DetectorRun("b", "m", "r", RunStatus.OK, [Detection("red mug", MUG_RIGHT, 0.9)])]
    frame.candidates = decide_frame(frame, BOX_ONLY)
    stage = GroundingSampleBuilder.Config().build()
    assert grounded_objects(frame) == [] and stage([frame]) == []
    (drop,) = stage.ledger.take()
    assert drop.reason.value == "no_grounded_object" and "2 rejected" in drop.message


def test_referring_expression_geometry(frame_factory):
    frame = _decided(frame_factory(phrases=("red mug", "shelf", "cup")),
                     [("red mug", MUG_LEFT), ("shelf", SHELF), ("cup", (44.0, 2.0, 60.0, 8.0))])
    objects = {o.phrase: o for o in grounded_objects(frame)}
    assert referring_expression(objects["cup"], list(objects.values()), 64, 48) == "the cup above the shelf"
    alone = grounded_objects(_decided(frame_factory(), [("red mug", MUG_LEFT)]))
    assert referring_expression(alone[0], alone, 64, 48) is None


def test_samples_keep_their_episodes_split(frame_factory):
    frame = _decided(frame_factory(), [("red mug", MUG_LEFT)])
    frame.split = "validation"
    (sample,) = GroundingSampleBuilder.Config(variants=("single",), validation_fraction=0.0).build()([frame])
    assert sample.split.value == "validation" and _meta(sample)["split"] == "validation"


def test_variants_are_validated():
    with pytest.raises(ValueError, match="variants must be a non-empty subset"):
        GroundingSampleBuilder.Config(variants=("caption",))


def test_boxes_outside_the_image_are_clipped_before_conversion(frame_factory):
    frame = _decided(frame_factory(), [("red mug", (-10.0, -5.0, 70.0, 60.0))])
    (sample,) = GroundingSampleBuilder.Config(variants=("single",)).build()([frame])
    assert '"bbox_2d": [0, 0, 1000, 1000]' in _conversation(sample)[1]["content"][0]["text"]
    assert np.allclose(_meta(sample)["extra"]["objects"][0]["box_pixels"], [0, 0, 64, 48])
