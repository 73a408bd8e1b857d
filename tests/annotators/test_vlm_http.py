"""The OpenAI-compatible backend against a local server speaking the protocol: content, errors, retries, limits."""

import base64
import logging
import socket

import numpy as np
import pytest

from vlaforge.annotators.scripted_vlm_server import ScriptedVlmServer, request_images, request_text
from vlaforge.annotators.vlm_backends import backend_config
from vlaforge.annotators.vlm_client import (
    FinishReason,
    ResponseFormat,
    VlmConfigError,
    VlmRequest,
    VlmUnavailableError,
)
from vlaforge.annotators.vlm_http import HttpVlm
from vlaforge.datasets.frames import FrameConfig, encode_jpeg
from vlaforge.pipelines.vl_samples import system, user

JPEGS = [encode_jpeg(np.full((32, 48, 3), value, np.uint8), FrameConfig()) for value in (40, 200)]
KEY = "sk-test-9f3a77c1d2"


def _client(server, **options):
    options = {"model": server.model, "backoff_s": 0.01, "max_backoff_s": 0.05, **options}
    client = HttpVlm.Config(base_url=server.url, **options).build()
    client.setup()
    return client


def _ask(text, images=(), **options):
    parts = [None] * len(images) + [text]
    return VlmRequest(messages=[user(*parts)], images=tuple(images), request_id=text, **options)


def test_images_travel_as_data_urls_in_order_and_answers_come_back():
    with ScriptedVlmServer(lambda body: "two frames" if len(request_images(body)) == 2 else "?") as server:
        client = _client(server)
        request = VlmRequest(messages=[system("Be brief."), user(None, "Compare", None, "these.")],
                             images=tuple(JPEGS), max_new_tokens=17, temperature=0.3,
                             response_format=ResponseFormat.JSON)
        [answer] = client.generate([request])
        client.close()
    assert answer.ok and answer.text == "two frames" and answer.finish_reason == FinishReason.STOP
    assert answer.model_id == "scripted-vlm" and answer.backend == "http" and answer.usage["completion_tokens"] == 2
    body = server.requests[0]
    assert body["max_tokens"] == 17 and body["temperature"] == 0.3
    assert body["response_format"] == {"type": "json_object"}
    assert body["messages"][0] == {"role": "system", "content": [{"type": "text", "text": "Be brief."}]}
    kinds = [p["type"] for p in body["messages"][1]["content"]]
    assert kinds == ["image_url", "text", "image_url", "text"]
    urls = request_images(body)
    assert [base64.b64decode(u.split(",", 1)[1]) for u in urls] == JPEGS
    assert all(u.startswith("data:image/jpeg;base64,") for u in urls)


def test_answers_keep_request_order_under_concurrency_and_respect_the_limit():
    with ScriptedVlmServer(lambda body: request_text(body).upper(), latency_s=0.1) as server:
        client = _client(server, concurrency=4)
        answers = client.generate([_ask(f"question {i}") for i in range(16)])
        client.close()
    assert [a.text for a in answers] == [f"QUESTION {i}" for i in range(16)]
    assert 2 <= server.max_in_flight <= 4


def test_rate_limit_with_retry_after_is_retried():
    with ScriptedVlmServer(lambda body: "fine") as server:
        server.fail_next(429, 2, retry_after="0")
        client = _client(server)
        [answer] = client.generate([_ask("q")])
    assert answer.text == "fine" and len(server.requests) == 3


def test_server_errors_are_retried_then_raise_unavailable_naming_the_endpoint():
    with ScriptedVlmServer() as server:
        server.fail_next(503, 10)
        client = _client(server, max_retries=2)
        with pytest.raises(VlmUnavailableError, match=r"failed 3 times for 'q'.*HTTP 503") as error:
            client.generate([_ask("q")])
    assert "/v1/chat/completions" in str(error.value) and len(server.requests) == 3
    assert isinstance(error.value, OSError)  # flow tasks retry I/O errors


def test_a_refused_request_is_an_answer_with_an_error_and_the_batch_goes_on():
    with ScriptedVlmServer(lambda body: "ok") as server:
        server.fail_next(400)
        client = _client(server, concurrency=1)
        first, second = client.generate([_ask("too long"), _ask("fine")])
    assert not first.ok and "HTTP 400" in first.error and first.finish_reason == FinishReason.ERROR
    assert second.ok and second.text == "ok"


def test_slow_answer_times_out_and_is_retried():
    with ScriptedVlmServer(lambda body: "late but here") as server:
        server.stall_next(5.0)
        client = _client(server, timeout_s=1.0)
        [answer] = client.generate([_ask("q")])
    assert answer.text == "late but here" and len(server.requests) >= 2  # the stalled try, then the answered one


def test_max_tokens_cut_is_reported_as_length():
    with ScriptedVlmServer(lambda body: "one two three four five") as server:
        [answer] = _client(server).generate([_ask("q", max_new_tokens=3)])
    assert answer.text == "one two three" and answer.finish_reason == FinishReason.LENGTH


def test_api_key_is_sent_and_never_shown(caplog):
    caplog.set_level(logging.DEBUG)
    with ScriptedVlmServer(lambda body: "authorized", api_key=KEY) as server:
        config = HttpVlm.Config(base_url=server.url, model=server.model, api_key=KEY)
        client = config.build()
        client.setup()
        assert client.generate([_ask("q")])[0].text == "authorized"
        wrong = HttpVlm.Config(base_url=server.url, model=server.model, api_key="sk-wrong-000").build()
        wrong.setup()
        with pytest.raises(VlmConfigError, match="refused the API key") as error:
            wrong.generate([_ask("q")])
    assert KEY not in repr(config) and KEY not in str(config)
    assert "sk-wrong-000" not in str(error.value)
    assert KEY not in caplog.text


def test_model_name_is_discovered_and_a_wrong_one_is_named():
    with ScriptedVlmServer(model="Qwen/Qwen3-VL-4B-Instruct") as server:
        client = HttpVlm.Config(base_url=server.url.removesuffix("/v1")).build()
        client.setup()
        assert client.model_id == "Qwen/Qwen3-VL-4B-Instruct"
        assert client.generate([_ask("q")])[0].model_id == "Qwen/Qwen3-VL-4B-Instruct"
        wrong = _client(server, model="Qwen/Qwen3-VL-8B")
        with pytest.raises(VlmConfigError, match="404.*Qwen3-VL-8B"):
            wrong.generate([_ask("q")])


def test_nothing_listening_raises_unavailable():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = HttpVlm.Config(base_url=f"http://127.0.0.1:{port}/v1", model="m", max_retries=1, backoff_s=0.01).build()
    client.setup()
    with pytest.raises(VlmUnavailableError, match="ConnectError"):
        client.generate([_ask("q")])


def test_request_and_config_validation_name_the_field():
    with pytest.raises(ValueError, match="show 1 images but 0 were given"):
        VlmRequest(messages=[user(None, "q")], request_id="k")
    with pytest.raises(ValueError, match="base_url"):
        HttpVlm.Config(base_url="127.0.0.1:8000")
    with pytest.raises(ValueError, match="unknown backend 'grpc'"):
        backend_config("grpc:host")
    config = backend_config("http:http://127.0.0.1:8000/v1", model="m", concurrency=32)
    assert isinstance(config, HttpVlm.Config) and config.concurrency == 32


@pytest.mark.parametrize("in_flight", [1, 8, 32])
def test_the_http_backend_keeps_as_many_requests_in_flight_as_configured(in_flight):
    # Relabelling at cluster scale sends many requests at once to a vLLM / SGLang server: 1, 8 and 32 in flight.
    with ScriptedVlmServer(lambda body: request_text(body).upper(), latency_s=0.3) as server:
        client = _client(server, concurrency=in_flight)
        answers = client.generate([_ask(f"question {i}") for i in range(2 * in_flight)])
        client.close()
    assert [a.text for a in answers] == [f"QUESTION {i}" for i in range(2 * in_flight)]  # request order kept
    assert len(server.requests) == 2 * in_flight  # each request sent once
    # Never more than configured; and (each answer taking 0.3 s) most of them at once, not one after another.
    assert max(1, in_flight // 2) <= server.max_in_flight <= in_flight
