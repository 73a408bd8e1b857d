"""The hosted Grounding DINO 1.5 client against a local server speaking the DDS v2 task protocol, errors included."""

import base64
import io
import logging

import numpy as np
import pytest
from PIL import Image

from vlaforge.annotators.grounding_frame import GroundingFrame, RunStatus
from vlaforge.annotators.hosted_detector import HostedAuthError, HostedDetector, RateLimiter, RetryPolicy
from vlaforge.annotators.scripted_detection_server import ScriptedDetectionServer
from vlaforge.datasets.frames import FrameConfig, encode_jpeg
from vlaforge.datasets.synth.scenes import camera_frames

TOKEN = "secret-token-3f9a"
FAST = RetryPolicy(timeout_s=0.3, max_retries=2, backoff_s=0.01, max_backoff_s=0.05)


def _frame(key="ep-1", height=48, width=64):
    pixels = camera_frames(0, 1, height, width)[0]
    return GroundingFrame(dataset="d", episode_id=key, source_file="f.tar", step=0, camera="wrist",
                          jpeg=encode_jpeg(pixels, FrameConfig()), pixels=pixels, selected_by="first",
                          instructions=[], phrases=["red mug", "shelf"], negatives=["elephant"])


def mug_responder(pixels, phrases):
    height, width = pixels.shape[:2]
    return [{"bbox": [0.1 * width, 0.2 * height, 0.5 * width, 0.6 * height], "score": 0.7, "category": "red mug"},
            {"bbox": [1, 1, 2, 2], "score": 0.3, "category": "a thing nobody asked for"}]


def _stage(server, **options):
    options = {"retry": FAST, "poll_interval_s": 0.01, "requests_per_second": 1000.0, **options}
    stage = HostedDetector.Config(base_url=server.url, api_token=TOKEN, **options).build()
    stage.setup()
    return stage


def test_detects_through_the_submit_and_poll_protocol():
    with ScriptedDetectionServer(mug_responder, token=TOKEN, polls_until_done=2) as server:
        (frame,) = _stage(server)([_frame()])
    (run,) = frame.runs
    assert run.status == RunStatus.OK and run.detector == "gdino_1_5" and run.revision == "api:GroundingDino-1.5-Pro"
    assert [(d.phrase, d.score) for d in run.detections] == [("red mug", 0.7)]  # the unasked category is ignored
    np.testing.assert_allclose(run.detections[0].box, (6.4, 9.6, 32.0, 28.8))
    submit, *polls = server.received
    assert submit["method"] == "POST" and submit["path"] == "/v2/task/grounding_dino/detection"
    assert submit["headers"]["token"] == TOKEN
    body = submit["body"]
    assert body["prompt"] == {"type": "text", "text": "red mug.shelf.elephant"} and body["targets"] == ["bbox"]
    assert body["model"] == "GroundingDino-1.5-Pro" and body["bbox_threshold"] == 0.25
    assert base64.b64decode(body["image"].split(",", 1)[1]) == _frame().jpeg  # small images go as they are
    assert [p["path"].rsplit("/", 2)[1] for p in polls] == ["task_status"] * 3  # waiting, running, success


def test_large_images_are_shrunk_and_boxes_scaled_back():
    with ScriptedDetectionServer(mug_responder, token=TOKEN) as server:
        (frame,) = _stage(server, max_image_side=32)([_frame()])
    sent = Image.open(io.BytesIO(base64.b64decode(server.received[0]["body"]["image"].split(",", 1)[1])))
    assert sent.size == (32, 24)
    np.testing.assert_allclose(frame.runs[0].detections[0].box, (6.4, 9.6, 32.0, 28.8), atol=1e-6)


def test_429_with_retry_after_and_5xx_are_retried():
    with ScriptedDetectionServer(mug_responder, token=TOKEN) as server:
        server.fail_next(429, retry_after="0")
        server.fail_next(503)
        (frame,) = _stage(server)([_frame()])
    assert frame.runs[0].status == RunStatus.OK
    assert [r["method"] for r in server.received[:3]] == ["POST"] * 3


def test_retries_are_bounded_and_the_image_is_recorded_as_failed():
    with ScriptedDetectionServer(mug_responder, token=TOKEN) as server:
        server.fail_next(500, count=10)
        (frame,) = _stage(server)([_frame()])
    run = frame.runs[0]
    assert run.status == RunStatus.FAILED and run.detections == []
    assert run.error == "POST /v2/task/grounding_dino/detection failed 3 times; last: HTTP 500"
    assert len(server.received) == 3


def test_a_slow_answer_times_out_and_is_retried():
    with ScriptedDetectionServer(mug_responder, token=TOKEN) as server:
        server.stall_next(0.6)
        (frame,) = _stage(server)([_frame()])
    assert frame.runs[0].status == RunStatus.OK  # the retry after the timeout got through
    with ScriptedDetectionServer(mug_responder, token=TOKEN) as server:
        server.stall_next(0.6, count=3)
        (frame,) = _stage(server)([_frame()])
    assert frame.runs[0].status == RunStatus.FAILED and "timeout after 0.3 s" in frame.runs[0].error


def test_garbage_json_fails_the_image_with_a_clear_reason():
    with ScriptedDetectionServer(mug_responder, token=TOKEN) as server:
        server.garbage_next()
        (frame,) = _stage(server)([_frame()])
    assert frame.runs[0].status == RunStatus.FAILED
    assert "answered something that is not JSON: '<html>502 Bad Gateway</html>'" in frame.runs[0].error


def test_a_malformed_object_and_a_failed_task_fail_only_their_image():
    def responder(pixels, phrases):
        return [{"bbox": "nope", "score": 1, "category": "shelf"}]

    with ScriptedDetectionServer(responder, token=TOKEN) as server:
        (frame,) = _stage(server)([_frame()])
    assert "object 0 of the answer is malformed" in frame.runs[0].error
    with ScriptedDetectionServer(mug_responder, token=TOKEN) as server:
        server.fail_task("red mug.shelf.elephant")
        frames = _stage(server)([_frame("a"), _frame("b")])
    assert all(f.runs[0].status == RunStatus.FAILED for f in frames)
    assert "failed on the server: scripted task failure" in frames[0].runs[0].error


def test_a_redirect_is_not_followed_with_the_token():
    with ScriptedDetectionServer(mug_responder, token=TOKEN) as server:
        server.fail_next(302, location=server.url + "/elsewhere")
        (frame,) = _stage(server)([_frame()])
    assert frame.runs[0].status == RunStatus.FAILED and "HTTP 302" in frame.runs[0].error
    assert len(server.received) == 1


def test_task_that_never_finishes_times_out():
    with ScriptedDetectionServer(mug_responder, token=TOKEN, polls_until_done=10_000) as server:
        (frame,) = _stage(server, task_timeout_s=0.2, poll_interval_s=0.05)([_frame()])
    assert "did not finish within 0.2 s" in frame.runs[0].error


def test_a_refused_token_stops_the_run_and_never_shows_the_token(caplog):
    caplog.set_level(logging.DEBUG)
    with ScriptedDetectionServer(mug_responder, token="the-right-one") as server:
        stage = _stage(server)
        with pytest.raises(HostedAuthError, match="refused the API token \\(HTTP 401") as raised:
            stage([_frame()])
    assert TOKEN not in str(raised.value) and TOKEN not in caplog.text
    assert TOKEN not in repr(stage.config) and TOKEN not in str(stage.config.settings())
    with pytest.raises(ValueError, match="no API token; set \\$DDS_API_TOKEN"):
        HostedDetector.Config(base_url="http://127.0.0.1:1").build().setup()


def test_concurrent_images_all_get_answers_and_the_rate_limiter_spaces_requests():
    with ScriptedDetectionServer(mug_responder, token=TOKEN, latency_s=0.02) as server:
        frames = _stage(server, concurrency=4)([_frame(f"ep-{i}") for i in range(6)])
    assert all(f.runs[0].status == RunStatus.OK for f in frames)
    ticks, slept = [0.0], []
    limiter = RateLimiter(4.0, clock=lambda: ticks[0], sleep=slept.append)
    for _ in range(3):
        limiter.wait()
    assert slept == [0.25, 0.5]  # the 2nd and 3rd starts wait for their slot


def test_retry_policy_backs_off_exponentially_and_caps_waits():
    policy = RetryPolicy(backoff_s=1.0, max_backoff_s=5.0)
    assert 1.0 <= policy.delay(0, None) <= 1.25 and 4.0 <= policy.delay(2, None) <= 5.0
    assert policy.delay(5, None) == 5.0 and policy.delay(0, 120.0) == 5.0 and policy.delay(0, 0.5) == 0.5
