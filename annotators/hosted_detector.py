"""Grounding DINO 1.5 / 1.6 as a hosted API: the DeepDataSpace "DDS Cloud API" v2 task protocol, as a stage.

Protocol (what the official `dds-cloudapi-sdk` does): `POST {base}/v2/task/grounding_dino/detection` with header
`Token: <token>` and `{"model", "image" (a data URI), "prompt": {"type": "text", "text": "red mug.shelf"},
"targets": ["bbox"], "bbox_threshold", "iou_threshold"}` answers `{"code": 0, "data": {"task_uuid"}}`; then
`GET {base}/v2/task_status/{uuid}` until `data.status` is "success" (`data.result.objects`: `bbox` [x1, y1, x2, y2]
in pixels of the image sent, `score`, `category`) or "failed" (`data.error`). Images are shrunk to at most 1536 px
on the long side first, as the SDK does, and boxes scaled back.

Failure handling: every request has a timeout; connection errors, timeouts, 429 (honouring Retry-After) and 5xx are
retried a bounded number of times with exponential backoff; requests are rate limited across threads. An image the
API still fails on is recorded as this detector's failure on that image (the consensus counts it); a refused token
(401/403) stops the run, because every other image would fail the same way. The token is never logged, put in an
error message, or shown in the config's repr.
"""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import email.utils
import io
import json
import logging
import random
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

from vlaforge.annotators.grounding_frame import Detection, DetectorRun, GroundingFrame, RunStatus
from vlaforge.annotators.phrases import normalize_phrase
from vlaforge.pipelines.stage import Stage, StageConfig

logger = logging.getLogger(__name__)

SUBMIT_PATH = "/v2/task/grounding_dino/detection"
STATUS_PATH = "/v2/task_status/{uuid}"
PENDING = ("waiting", "running")


class HostedApiError(RuntimeError):
    """The API could not give an answer for this image (recorded as a failed run, the rest goes on)."""


class HostedAuthError(ValueError):
    """The API refused the token: nothing will work until it is fixed, so the run stops."""


class RateLimiter:
    """At most `per_second` request starts per second, shared by all threads of a worker."""

    def __init__(self, per_second: float, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.interval = 1.0 / per_second
        self.clock, self.sleep = clock, sleep
        self._next = 0.0
        self._lock = threading.Lock()

    def wait(self) -> None:
        with self._lock:
            now = self.clock()
            start = max(now, self._next)
            self._next = start + self.interval
        if start > now:
            self.sleep(start - now)


@dataclasses.dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How the client retries transient failures."""

    timeout_s: float = 10.0
    """Per-request timeout (connect and read)."""
    max_retries: int = 4
    """Retries after the first try of one request."""
    backoff_s: float = 1.0
    """First delay; doubled each retry, with up to 25% jitter, unless the server sends Retry-After."""
    max_backoff_s: float = 30.0
    """Longest wait between two tries (Retry-After included)."""

    def delay(self, attempt: int, retry_after: float | None) -> float:
        base = retry_after if retry_after is not None else self.backoff_s * 2**attempt * (1 + random.random() / 4)
        return min(base, self.max_backoff_s)


class DdsClient:
    """The v2 task protocol over urllib: `detect(jpeg, phrases, ...)` -> the API's objects, boxes in pixels."""

    def __init__(self, base_url: str, token: str, retry: RetryPolicy, limiter: RateLimiter,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.retry, self.limiter, self.sleep = retry, limiter, sleep

    def detect(self, body: dict[str, Any], *, poll_interval_s: float, task_timeout_s: float) -> list[dict[str, Any]]:
        """Submit one detection task and wait for its objects."""
        submitted = self._request("POST", SUBMIT_PATH, body)
        uuid = _field(submitted, "data", "task_uuid", what="the submit answer")
        deadline = time.monotonic() + task_timeout_s
        while True:
            status = _field(self._request("GET", STATUS_PATH.format(uuid=uuid)), "data", what="the status answer")
            state = status.get("status")
            if state == "success":
                objects = _field(status, "result", "objects", what=f"task {uuid}'s result")
                if not isinstance(objects, list):
                    raise HostedApiError(f"task {uuid}: result.objects is {type(objects).__name__}, not a list")
                return objects
            if state == "failed":
                raise HostedApiError(f"task {uuid} failed on the server: {status.get('error')}")
            if state not in PENDING:
                raise HostedApiError(f"task {uuid} has unknown status {state!r}")
            if time.monotonic() + poll_interval_s > deadline:
                raise HostedApiError(f"task {uuid} did not finish within {task_timeout_s:g} s (last: {state})")
            self.sleep(poll_interval_s)

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """One API call with retries; returns the parsed answer whose `code` is 0."""
        last, retry_after = "", None
        for attempt in range(self.retry.max_retries + 1):
            if attempt:
                self.sleep(self.retry.delay(attempt - 1, retry_after))
            self.limiter.wait()
            retry_after = None
            try:
                raw = self._send(method, path, body)
            except urllib.error.HTTPError as error:
                if error.code in (401, 403):
                    raise HostedAuthError(
                        f"{self.base_url} refused the API token (HTTP {error.code} on {method} {path}); set a valid "
                        "token ($DDS_API_TOKEN, or the Prefect Secret block named by --hosted-token-block)") from None
                if error.code != 429 and error.code < 500:
                    raise HostedApiError(f"HTTP {error.code} on {method} {path}: {_excerpt(error.read())}") from None
                retry_after, last = _retry_after(error), f"HTTP {error.code}"
                continue
            except (urllib.error.URLError, TimeoutError, socket.timeout, ConnectionError) as error:
                last = f"timeout after {self.retry.timeout_s:g} s" if _is_timeout(error) else f"connection: {error}"
                continue
            return _answer(raw, method, path)
        raise HostedApiError(f"{method} {path} failed {self.retry.max_retries + 1} times; last: {last}")

    def _send(self, method: str, path: str, body: dict[str, Any] | None) -> bytes:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self.base_url + path, data=data, method=method,
                                         headers={"Token": self._token, "Content-Type": "application/json"})
        with _OPENER.open(request, timeout=self.retry.timeout_s) as response:
            return response.read()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is answered as an HTTP error: following it would send the token to wherever it points."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect)


def _answer(raw: bytes, method: str, path: str) -> dict[str, Any]:
    try:
        answer = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise HostedApiError(f"{method} {path} answered something that is not JSON: {_excerpt(raw)}") from None
    if not isinstance(answer, dict) or answer.get("code") != 0:
        message = answer.get("msg") if isinstance(answer, dict) else answer
        raise HostedApiError(f"{method} {path} answered an error: {_excerpt(str(message).encode())}")
    return answer


def _field(answer: dict[str, Any], *keys: str, what: str) -> Any:
    value: Any = answer
    for key in keys:
        if not isinstance(value, dict) or key not in value:
            raise HostedApiError(f"{what} has no {'.'.join(keys)}: {_excerpt(json.dumps(answer).encode())}")
        value = value[key]
    return value


def _retry_after(error: urllib.error.HTTPError) -> float | None:
    """Retry-After as seconds (a number or an HTTP date); None when absent or unreadable."""
    value = error.headers.get("Retry-After") if error.headers else None
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        when = email.utils.parsedate_to_datetime(value) if value else None
        return max(when.timestamp() - time.time(), 0.0) if when else None


def _is_timeout(error: BaseException) -> bool:
    reason = getattr(error, "reason", error)
    return isinstance(reason, (TimeoutError, socket.timeout))


def _excerpt(raw: bytes, limit: int = 120) -> str:
    text = raw.decode("utf-8", "replace").strip()
    return repr(text[:limit] + ("..." if len(text) > limit else ""))


def encode_image(pixels: np.ndarray, jpeg: bytes, max_side: int) -> tuple[str, float]:
    """The data URI to send and the scale applied (boxes from the API divide by it). Unscaled images go as their
    original JPEG bytes."""
    height, width = pixels.shape[:2]
    scale = min(max_side / max(height, width), 1.0)
    if scale < 1.0:
        size = (max(int(width * scale), 1), max(int(height * scale), 1))
        buffer = io.BytesIO()
        Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS).save(buffer, format="JPEG", quality=95)
        jpeg = buffer.getvalue()
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode(), scale


class HostedDetector(Stage):
    """Frames with phrases -> the same frames with one more `DetectorRun` each, from the hosted API."""

    pooled = True  # one quota for the whole run: on a cluster, one pool shares it

    @property
    def pool_name(self) -> str:
        return self.config.name

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(StageConfig):
        name: str = "gdino_1_5"
        """The detector's name in the audit (unique per recipe)."""
        base_url: str = "https://api.deepdataspace.com"
        """The API root (tests point it at a local server speaking the same protocol)."""
        model: str = "GroundingDino-1.5-Pro"
        """The API's model: "GroundingDino-1.5-Pro", "GroundingDino-1.6-Pro", "GroundingDino-1.5-Edge"."""
        api_token: str | None = dataclasses.field(default=None, repr=False)
        """The API token; never logged. The CLI fills it from $DDS_API_TOKEN."""
        api_token_block: str | None = None
        """Name of a Prefect Secret block holding the token, read in `setup()` (when `api_token` is None)."""
        bbox_threshold: float = 0.25
        """Sent as `bbox_threshold`: boxes scoring lower are not returned."""
        iou_threshold: float = 0.8
        """Sent as `iou_threshold`: the server's NMS."""
        max_image_side: int = 1536
        """Images are shrunk to this long side before sending (what the SDK does)."""
        retry: RetryPolicy = RetryPolicy()
        """Timeouts and retries of each request."""
        poll_interval_s: float = 1.0
        """Wait between two status polls of a task."""
        task_timeout_s: float = 60.0
        """A task not done after this long counts as failed for its image."""
        requests_per_second: float = 2.0
        """Rate limit over all requests of one worker (submits and polls)."""
        concurrency: int = 4
        """Images in flight at once per worker."""

        def __post_init__(self) -> None:
            if not self.base_url.startswith(("http://", "https://")):
                raise ValueError(f"HostedDetector.Config.base_url must start with http:// or https://, "
                                 f"got {self.base_url!r}")
            for name in ("poll_interval_s", "task_timeout_s", "requests_per_second"):
                if getattr(self, name) <= 0:
                    raise ValueError(f"HostedDetector.Config.{name} must be > 0, got {getattr(self, name)}")
            if self.concurrency < 1 or self.max_image_side < 32 or self.retry.max_retries < 0:
                raise ValueError("HostedDetector.Config: concurrency >= 1, max_image_side >= 32 and "
                                 "retry.max_retries >= 0 are required")

        def settings(self) -> dict[str, Any]:
            """What provenance records (never the token)."""
            return {"api": self.base_url, "bbox_threshold": self.bbox_threshold, "iou_threshold": self.iou_threshold,
                    "max_image_side": self.max_image_side}

    def __init__(self, config: "HostedDetector.Config") -> None:
        super().__init__(config)
        self.client: DdsClient | None = None

    @property
    def revision(self) -> str:
        return f"api:{self.config.model}"  # type: ignore[attr-defined]

    def setup(self) -> None:
        config: HostedDetector.Config = self.config  # type: ignore[assignment]
        token = config.api_token or _secret_block(config.api_token_block)
        if not token:
            raise ValueError(f"{config.name}: no API token; set $DDS_API_TOKEN or name a Prefect Secret block with "
                             "--hosted-token-block")
        self.client = DdsClient(config.base_url, token, config.retry, RateLimiter(config.requests_per_second))

    def __call__(self, batch: list[GroundingFrame]) -> list[GroundingFrame]:
        if self.client is None:
            raise RuntimeError(f"{self.config.name}: call setup() before running the stage")  # type: ignore[attr-defined]
        with concurrent.futures.ThreadPoolExecutor(self.config.concurrency) as pool:  # type: ignore[attr-defined]
            runs = list(pool.map(self._run, batch))
        for frame, run in zip(batch, runs):
            frame.runs.append(run)
        return batch

    def _run(self, frame: GroundingFrame) -> DetectorRun:
        config: HostedDetector.Config = self.config  # type: ignore[assignment]
        image, scale = encode_image(frame.pixels, frame.jpeg, config.max_image_side)
        body = {"model": config.model, "image": image, "prompt": {"type": "text", "text": ".".join(frame.queried)},
                "targets": ["bbox"], "bbox_threshold": config.bbox_threshold, "iou_threshold": config.iou_threshold}
        try:
            objects = self.client.detect(body, poll_interval_s=config.poll_interval_s,  # type: ignore[union-attr]
                                         task_timeout_s=config.task_timeout_s)
            detections = _detections(objects, frame, scale)
        except HostedApiError as error:
            logger.warning("%s failed on %s: %s", config.name, frame.image_key, error)
            return DetectorRun(config.name, config.model, self.revision, RunStatus.FAILED, [], str(error))
        return DetectorRun(config.name, config.model, self.revision, RunStatus.OK, detections)


def _detections(objects: list[Any], frame: GroundingFrame, scale: float) -> list[Detection]:
    """API objects -> detections of the phrases asked; a malformed object fails the image (HostedApiError)."""
    asked = {normalize_phrase(p): p for p in frame.queried}
    detections = []
    for index, item in enumerate(objects):
        try:
            box = [float(v) / scale for v in item["bbox"]]
            score, category = float(item["score"]), str(item["category"])
        except (KeyError, TypeError, ValueError):
            raise HostedApiError(f"object {index} of the answer is malformed: {_excerpt(json.dumps(item).encode())}")
        if len(box) != 4:
            raise HostedApiError(f"object {index} has a bbox of {len(box)} numbers")
        phrase = asked.get(normalize_phrase(category))
        if phrase is not None:  # the API may answer a category it was not asked (a sub-phrase): not ours to judge
            clipped = np.clip(box, 0, [frame.width, frame.height, frame.width, frame.height])
            detections.append(Detection(phrase, tuple(float(v) for v in clipped), score))
    return detections


def _secret_block(name: str | None) -> str | None:
    """The value of a Prefect Secret block, or None when no block is named."""
    if not name:
        return None
    from prefect.blocks.system import Secret

    try:
        return Secret.load(name).get()
    except (ValueError, OSError) as error:
        raise ValueError(f"Prefect Secret block {name!r} could not be loaded ({type(error).__name__}); create it "
                         "with `prefect block create secret` or pass the token in $DDS_API_TOKEN") from None
