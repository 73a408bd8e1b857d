"""The Ray Data LLM backend (`annotators/vlm_ray_llm.py`) through Ray Data's own LLM processor, with its HTTP engine
against a scripted OpenAI-compatible server. The vLLM engine needs vLLM and a GPU: not run here."""

import base64
import json

import numpy as np
import pytest

from vlaforge.annotators.scripted_vlm_server import ScriptedVlmServer, request_images, request_text
from vlaforge.annotators.vlm_backends import backend_config
from vlaforge.annotators.vlm_client import FinishReason, ResponseFormat, VlmRequest
from vlaforge.annotators.vlm_ray_llm import RayLlmVlm
from vlaforge.datasets.frames import FrameConfig, encode_jpeg
from vlaforge.pipelines.vl_samples import user

JPEG = encode_jpeg(np.full((16, 16, 3), 200, np.uint8), FrameConfig())


def _ask(text, images=(), **options):
    parts = (None,) * len(images)
    return VlmRequest(messages=[user(*parts, text)], images=tuple(images), **options)


def test_answers_in_request_order_through_ray_data_llm(ray_local):
    with ScriptedVlmServer(lambda body: f"{request_text(body)} with {len(request_images(body))} image(s)") as server:
        config = backend_config("ray-llm:scripted-vlm", engine="http", url=server.url, batch_size=3, concurrency=2)
        assert isinstance(config, RayLlmVlm.Config)
        client = config.build()
        client.setup()
        requests = [_ask(f"q{i}", images=[JPEG] if i % 2 else [], max_new_tokens=9) for i in range(7)]
        requests.append(_ask("as json", response_format=ResponseFormat.JSON))
        answers = client.generate(requests)
    assert [a.text for a in answers[:7]] == [f"q{i} with {i % 2} image(s)" for i in range(7)]
    assert all(a.ok and a.backend == "ray-llm" and a.finish_reason == FinishReason.STOP for a in answers)
    bodies = {request_text(b): b for b in server.requests}
    assert bodies["q1"]["max_tokens"] == 9 and bodies["q1"]["model"] == "scripted-vlm"
    [url] = request_images(bodies["q1"])
    assert base64.b64decode(url.split(",", 1)[1]) == JPEG  # the image itself, as a data URL
    assert bodies["as json"]["response_format"] == {"type": "json_object"}
    assert len(server.requests) == 8


def test_a_malformed_reply_is_an_answer_with_an_error_not_a_crash(ray_local):
    with ScriptedVlmServer(lambda body: "fine") as server:
        client = RayLlmVlm.Config(model="scripted-vlm", engine="http", url=server.url).build()
        client.setup()
        [answer] = client.generate([_ask("hello")])
    assert answer.ok and answer.text == "fine"
    from vlaforge.annotators import vlm_ray_llm

    broken = vlm_ray_llm._http_answer({"index": 0, "http_response": {"detail": "no"}})
    assert "malformed chat-completions reply" in json.loads(broken["answer"])["error"]


def test_config_errors_name_the_field():
    with pytest.raises(ValueError, match="engine must be one of"):
        RayLlmVlm.Config(model="m", engine="tgi")
    with pytest.raises(ValueError, match="url is needed with engine='http'"):
        RayLlmVlm.Config(model="m", engine="http")
