"""The generators' plumbing on a tiny random-weight Qwen3-VL loaded through from_pretrained (real Qwen3 tokenizer):
batching, sample shapes, provenance, greedy determinism; and the default validation rejecting its gibberish."""

import json
import pathlib

import pytest

from vlaforge.annotators.answer_validation import AnswerValidation
from vlaforge.annotators.caption_generator import CaptionGenerator
from vlaforge.annotators.eqa_generator import EqaGenerator
from vlaforge.annotators.plan_generator import PlanGenerator
from vlaforge.annotators.vlm_local import LocalVlm, weights_digest
from vlaforge.annotators.vqa_generator import VqaGenerator
from vlaforge.datasets.drops import DropReason
from vlaforge.datasets.synth.pick_place import pick_place_episode
from vlaforge.flows.sample_data.tiny_vlm import write_tiny_qwen3_vl

# Gibberish passes only when every content check is off: these tests are about the plumbing.
ANYTHING = AnswerValidation.Config(language=None, reject_truncated=False, max_words=10_000, max_chars=100_000,
                                   echo_ngram=100)


@pytest.fixture(scope="module")
def vlm(tmp_path_factory):
    directory = write_tiny_qwen3_vl(tmp_path_factory.mktemp("tiny-qwen3-vl"))
    return LocalVlm.Config(path=str(directory), batch_size=2, device="cpu", dtype="float32")


def _run(config):
    stage = config.build()
    stage.setup()
    return stage, stage([pick_place_episode("ep-1", image_size=(48, 64))])


def test_caption_samples_from_the_local_model_are_deterministic(vlm):
    config = CaptionGenerator.Config(dataset="caps", vlm=vlm, frames_per_episode=3, max_new_tokens=6,
                                     validation=ANYTHING)
    _, first = _run(config)
    _, again = _run(config)
    assert len(first) == 3  # three frames, batched two by two
    assert [s.members for s in first] == [s.members for s in again]
    meta = json.loads(first[0].members["meta.json"])
    [provenance] = meta["provenance"]
    directory = pathlib.Path(vlm.path)
    assert provenance["model"] == directory.name
    assert provenance["revision"] == weights_digest(directory)
    assert provenance["settings"] == {"max_new_tokens": 6, "temperature": 0.0, "response_format": "text",
                                      "backend": "local"}
    answer = json.loads(first[0].members["conversation.json"])[1]["content"][0]["text"]
    assert answer.strip()


def test_default_validation_rejects_random_weight_gibberish_by_name(vlm):
    stage, samples = _run(CaptionGenerator.Config(dataset="caps", vlm=vlm, frames_per_episode=2, max_new_tokens=6))
    assert samples == []
    reasons = {d.reason for d in stage.ledger.take()}
    assert reasons <= {DropReason.ANSWER_TRUNCATED, DropReason.ANSWER_WRONG_LANGUAGE, DropReason.ANSWER_EMPTY}
    assert reasons


def test_json_generators_name_non_json_answers(vlm):
    for config in (VqaGenerator.Config(dataset="vqa", vlm=vlm, frames_per_episode=1, max_new_tokens=5,
                                       validation=ANYTHING),
                   EqaGenerator.Config(dataset="eqa", vlm=vlm, frames_per_episode=1, max_new_tokens=5,
                                       validation=ANYTHING)):
        stage, samples = _run(config)
        assert samples == []
        assert [d.reason for d in stage.ledger.take()] == [DropReason.ANSWER_NOT_JSON]


def test_plan_from_the_local_model_has_one_line_per_segment(vlm):
    _, [sample, *following] = _run(PlanGenerator.Config(dataset="plans", vlm=vlm, max_new_tokens=4,
                                                        validation=ANYTHING))
    plan = json.loads(sample.members["conversation.json"])[1]["content"][0]["text"]
    assert [line.split(".", 1)[0] for line in plan.splitlines()] == ["1", "2", "3", "4"]
    # Then the next sub-task from the frame where each starts, one per line of the plan.
    assert [json.loads(s.members["meta.json"])["extra"]["variant"] for s in following] == ["next"] * 4
