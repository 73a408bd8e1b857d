"""The local transformers backend on a tiny random-weight Qwen3-VL loaded through from_pretrained, with the real
offline Qwen3 tokenizer: batching, per-request budgets, greedy determinism, provenance identity, bad input."""

import pytest

from vlaforge.annotators.vlm_backends import backend_config
from vlaforge.annotators.vlm_client import FinishReason, VlmConfigError, VlmRequest
from vlaforge.annotators.vlm_local import LocalVlm, weights_digest
from vlaforge.datasets.frames import FrameConfig, encode_jpeg
from vlaforge.datasets.synth.scenes import camera_frames
from vlaforge.flows.sample_data.tiny_vlm import write_tiny_qwen3_vl
from vlaforge.pipelines.vl_samples import system, user

FRAMES = [encode_jpeg(frame, FrameConfig()) for frame in camera_frames(0, 3, 48, 64)]


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return write_tiny_qwen3_vl(tmp_path_factory.mktemp("tiny-qwen3-vl"))


@pytest.fixture(scope="module")
def client(tiny_dir):
    client = backend_config(f"local:{tiny_dir}", batch_size=2, device="cpu", dtype="float32").build()
    client.setup()
    return client


def _requests():
    return [
        VlmRequest(messages=[system("Be brief."), user(None, "Describe the scene.")], images=(FRAMES[0],),
                   max_new_tokens=4, request_id="a"),
        VlmRequest(messages=[user(None, None, "What changed between these frames?")], images=tuple(FRAMES[1:]),
                   max_new_tokens=6, request_id="b"),
        VlmRequest(messages=[user("No image: say hello.")], max_new_tokens=3, request_id="c"),
    ]


def test_batched_answers_follow_each_request_budget(client):
    answers = client.generate(_requests())
    assert len(answers) == 3
    for answer, budget in zip(answers, (4, 6, 3)):
        assert answer.ok and answer.backend == "local"
        assert 0 < answer.usage["completion_tokens"] <= budget
        if answer.finish_reason == FinishReason.LENGTH:
            assert answer.usage["completion_tokens"] == budget
    # Image tokens count as prompt tokens: two images and a question cost more than a short text-only prompt.
    assert answers[1].usage["prompt_tokens"] > answers[2].usage["prompt_tokens"] > 0


def test_greedy_decoding_is_deterministic_and_independent_of_batch_order(client):
    first = [a.text for a in client.generate(_requests())]
    again = [a.text for a in client.generate(_requests()[::-1])][::-1]
    alone = [client.generate([r])[0].text for r in _requests()]
    assert first == again == alone


def test_identity_comes_from_the_checkpoint(client, tiny_dir):
    answer = client.generate(_requests()[:1])[0]
    assert answer.model_id == tiny_dir.name
    assert answer.revision == weights_digest(tiny_dir) and answer.revision.startswith("sha256:")
    named = LocalVlm.Config(path=str(tiny_dir), model_id="Qwen/Qwen3-VL-4B-Instruct", revision="abc123").build()
    named.setup()
    assert (named.model_id, named.revision) == ("Qwen/Qwen3-VL-4B-Instruct", "abc123")


def test_a_broken_image_is_an_error_answer_not_a_crash(client):
    broken = VlmRequest(messages=[user(None, "Describe.")], images=(FRAMES[0][:200],), request_id="broken")
    bad, good = client.generate([broken, _requests()[0]])
    assert not bad.ok and "does not decode" in bad.error and bad.finish_reason == FinishReason.ERROR
    assert good.ok


def test_missing_checkpoint_is_named(tmp_path):
    client = LocalVlm.Config(path=str(tmp_path / "nowhere")).build()
    with pytest.raises(VlmConfigError, match="nowhere is not a checkpoint directory"):
        client.setup()
    with pytest.raises(ValueError, match="dtype must be one of"):
        LocalVlm.Config(path="x", dtype="int8")
