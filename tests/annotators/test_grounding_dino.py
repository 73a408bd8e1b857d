"""Grounding DINO and LLMDet stages on tiny random-weight checkpoints loaded through `from_pretrained`."""

import numpy as np
import pytest

from vlaforge.annotators.box_fusion import box_iou
from vlaforge.annotators.grounding_dino import GroundingDinoDetector, _prompt, _token_map, grounding_dino, llmdet
from vlaforge.annotators.grounding_frame import RunStatus

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LOOSE = {"box_threshold": 0.0, "text_threshold": 0.0, "device": "cpu"}


def _detect(config, frames):
    stage = config.build()
    stage.setup()
    return stage(frames), stage


def _summary(frames):
    return [[(d.phrase, tuple(np.round(d.box, 3)), round(d.score, 4)) for d in f.runs[-1].detections] for f in frames]


def test_detects_every_phrase_with_boxes_inside_the_image(tiny_gdino, frame_factory):
    frames, stage = _detect(grounding_dino(str(tiny_gdino), **LOOSE, max_per_phrase=3),
                            [frame_factory(0, negatives=("elephant",)), frame_factory(1, size=(40, 90))])
    for frame in frames:
        (run,) = frame.runs
        assert run.status == RunStatus.OK and run.detector == "grounding_dino" and run.model == str(tiny_gdino)
        assert run.revision == stage.revision and run.revision.startswith("sha256:")
        assert {d.phrase for d in run.detections} <= set(frame.queried)
        for d in run.detections:
            x1, y1, x2, y2 = d.box
            assert 0 <= x1 <= x2 <= frame.width and 0 <= y1 <= y2 <= frame.height and 0 <= d.score <= 1
        for phrase in frame.queried:
            assert 1 <= sum(d.phrase == phrase for d in run.detections) <= 3


def test_batched_prompts_of_different_lengths_give_the_same_boxes_as_one_at_a_time(tiny_gdino, frame_factory):
    def frames():
        return [frame_factory(0, phrases=("red mug",)), frame_factory(1, phrases=("red mug", "shelf", "blue block")),
                frame_factory(2, phrases=("cup",), size=(56, 56))]

    batched, _ = _detect(grounding_dino(str(tiny_gdino), **LOOSE, batch_size=3), frames())
    single, _ = _detect(grounding_dino(str(tiny_gdino), **LOOSE, batch_size=1), frames())
    assert _summary(batched) == _summary(single)


def test_thresholds_and_nms_are_applied(tiny_gdino, frame_factory):
    none, _ = _detect(grounding_dino(str(tiny_gdino), device="cpu", box_threshold=1.0), [frame_factory()])
    assert none[0].runs[0].detections == []
    frames, _ = _detect(grounding_dino(str(tiny_gdino), **{**LOOSE, "nms_iou": 0.1}, max_per_phrase=30),
                        [frame_factory()])
    for phrase in ("red mug", "shelf"):
        boxes = np.array([d.box for d in frames[0].runs[0].detections if d.phrase == phrase])
        overlaps = box_iou(boxes, boxes) - np.eye(len(boxes))
        assert overlaps.max() <= 0.1


def test_phrases_that_do_not_fit_one_prompt_are_split_over_several(tiny_gdino, frame_factory):
    many = tuple(f"{color} block" for color in ("red", "blue", "green", "yellow")) + (
        "red mug", "shelf", "laptop lid", "bottle", "plate", "cup", "towel", "basket", "bowl")
    stage = grounding_dino(str(tiny_gdino), **LOOSE).build()
    stage.setup()
    groups = stage._prompt_groups(list(many))
    assert len(groups) >= 2 and [p for g in groups for p in g] == list(many)
    (frame,) = stage([frame_factory(phrases=many)])
    found = {d.phrase for d in frame.runs[0].detections}
    assert all(found & set(group) for group in groups)  # every prompt ran and answered for its own phrases
    with pytest.raises(ValueError, match="shorten it"):
        stage._prompt_groups([" ".join(["red"] * 40)])


def test_llmdet_loads_mm_grounding_dino_weights(tiny_llmdet, frame_factory):
    frames, stage = _detect(llmdet(str(tiny_llmdet), **LOOSE), [frame_factory()])
    assert type(stage.model).__name__ == "MMGroundingDinoForObjectDetection"
    assert frames[0].runs[0].detector == "llmdet" and frames[0].runs[0].detections


def test_bfloat16_runs_on_the_cpu(tiny_gdino, frame_factory):
    frames, stage = _detect(grounding_dino(str(tiny_gdino), **{**LOOSE, "dtype": "bfloat16"}), [frame_factory()])
    assert str(next(stage.model.parameters()).dtype) == "torch.bfloat16" and frames[0].runs[0].detections


def test_token_map_assigns_each_phrase_its_tokens(tiny_gdino):
    from transformers import AutoProcessor

    text, spans = _prompt(["red mug", "shelf"])
    assert text == "red mug. shelf." and spans == [(0, 7), (9, 14)]
    tokens = AutoProcessor.from_pretrained(tiny_gdino).tokenizer(
        text, padding="max_length", max_length=12, return_offsets_mapping=True)
    token_map = _token_map(np.array(tokens["offset_mapping"]), spans)
    assert token_map.astype(int).tolist() == [[0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]]


def test_config_validation_names_the_field():
    with pytest.raises(ValueError, match=r"architecture must be one of"):
        GroundingDinoDetector.Config(architecture="yolo")
    with pytest.raises(ValueError, match=r"box_threshold must be in \[0, 1\], got 2"):
        grounding_dino(box_threshold=2)
    with pytest.raises(ValueError, match="dtype must be one of"):
        grounding_dino(dtype="int8")
