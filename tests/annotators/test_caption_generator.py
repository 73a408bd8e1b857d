"""Caption generator against the scripted chat-completions server: content, provenance, named rejects."""

import json

import pytest

from vlaforge.annotators.caption_generator import CaptionGenerator
from vlaforge.annotators.scripted_vlm_server import ScriptedVlmServer, request_images, request_text
from vlaforge.annotators.vlm_client import VlmUnavailableError
from vlaforge.annotators.vlm_http import HttpVlm
from vlaforge.datasets.drops import DropReason
from vlaforge.datasets.schema import sample_key
from vlaforge.datasets.synth.pick_place import pick_place_episode

CAPTION = "A red mug stands on a wooden table next to the open robot gripper."


def _generator(server, concurrency=4, **options):
    vlm = HttpVlm.Config(base_url=server.url, model=server.model, backoff_s=0.01, max_retries=1,
                         concurrency=concurrency)
    stage = CaptionGenerator.Config(dataset="robot-captions", vlm=vlm, **options).build()
    stage.setup()
    return stage


def test_one_caption_sample_per_chosen_frame():
    episode = pick_place_episode("ep-1")
    with ScriptedVlmServer(lambda body: CAPTION) as server:
        samples = _generator(server, frames_per_episode=3)([episode])
    assert [s.key for s in samples] == [f"{sample_key('ep-1', step)}_exterior_1" for step in (0, 44, 89)]
    first = samples[0].members
    assert first["0.jpg"] == episode.frames["exterior_1"][0]
    conversation = json.loads(first["conversation.json"])
    assert conversation[0]["content"][0] == {"type": "image"}
    assert conversation[0]["content"][1]["text"].startswith(("Describe", "What do you see", "Give a detailed"))
    assert conversation[1] == {"role": "assistant", "content": [{"type": "text", "text": CAPTION}]}
    meta = json.loads(first["meta.json"])
    assert meta["task"] == "caption" and meta["source_key"] == sample_key("ep-1", 0) and meta["source_group"] == "ep-1"
    [provenance] = meta["provenance"]
    assert provenance["model"] == "scripted-vlm" and provenance["prompt_version"] == "caption@v1"
    assert provenance["settings"] == {"max_new_tokens": 256, "temperature": 0.0, "response_format": "text",
                                      "backend": "http"}
    asked = request_text(server.requests[0])
    assert 'task: "put the red mug on the shelf"' in asked and "exterior_1 camera" in asked
    assert len(request_images(server.requests[0])) == 1


def test_bad_answers_are_dropped_by_named_reason_and_the_rest_kept():
    answers = iter(["", "Una taza roja sobre una mesa de madera cerca de la pinza.", CAPTION])
    with ScriptedVlmServer(lambda body: next(answers)) as server:
        stage = _generator(server, concurrency=1, frames_per_episode=3)  # one at a time: answers in frame order
        samples = stage([pick_place_episode("ep-2")])
    assert [s.key for s in samples] == [f"{sample_key('ep-2', 89)}_exterior_1"]
    reasons = sorted(d.reason for d in stage.ledger.take())
    assert reasons == sorted([DropReason.ANSWER_EMPTY, DropReason.ANSWER_WRONG_LANGUAGE])


def test_missing_camera_is_dropped_and_other_episodes_go_on():
    with ScriptedVlmServer(lambda body: CAPTION) as server:
        stage = _generator(server, camera="wrist", frames_per_episode=1)
        no_wrist = pick_place_episode("ep-3", cameras=("exterior_1",))
        samples = stage([no_wrist, pick_place_episode("ep-4")])
    assert [s.key for s in samples] == [f"{sample_key('ep-4', 0)}_wrist"]
    [drop] = stage.ledger.take()
    assert drop.reason == DropReason.MISSING_CAMERA and "not 'wrist'" in drop.message


def test_an_unreachable_vlm_fails_the_batch_instead_of_losing_it():
    with ScriptedVlmServer() as server:
        server.fail_next(503, 10)
        stage = _generator(server, frames_per_episode=1)
        with pytest.raises(VlmUnavailableError):
            stage([pick_place_episode("ep-5")])


def test_config_needs_a_vlm_and_a_dataset():
    with pytest.raises(ValueError, match="Config.vlm is None"):
        CaptionGenerator.Config(dataset="d").build()
    with pytest.raises(ValueError, match="frames_per_episode must be >= 1"):
        CaptionGenerator.Config(dataset="d", frames_per_episode=0)
