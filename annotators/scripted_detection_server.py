"""A local server speaking the hosted Grounding DINO API's v2 task protocol: for tests, benchmarks and the demo.

`POST /v2/task/grounding_dino/detection` (header `Token`) queues a task and answers its `task_uuid`;
`GET /v2/task_status/<uuid>` answers "waiting", then "running" for `polls_until_done` polls, then "success" with
the objects a `responder(pixels, phrases) -> [{"bbox", "score", "category"}]` found (or "failed"). It can be told to
misbehave on the next requests: answer with an HTTP status (401, 429 with Retry-After, 500, 503, a redirect), stall
(slower than the client's timeout), or answer garbage that is not JSON. It listens on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import collections
import http.server
import io
import json
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image

Responder = Callable[[np.ndarray, list[str]], list[dict[str, Any]]]


def _no_objects(pixels: np.ndarray, phrases: list[str]) -> list[dict[str, Any]]:
    return []


class ScriptedDetectionServer:
    """`with ScriptedDetectionServer(responder, token="t") as server: HostedDetector.Config(base_url=server.url)`."""

    def __init__(self, responder: Responder | None = None, *, token: str = "test-token", polls_until_done: int = 1,
                 latency_s: float = 0.0) -> None:
        self.responder = responder or _no_objects
        self.token = token
        self.polls_until_done = polls_until_done
        self.latency_s = latency_s
        self.received: list[dict[str, Any]] = []
        """Every request as {"method", "path", "headers", "body"}, in arrival order (faulted ones too)."""
        self.tasks: dict[str, dict[str, Any]] = {}
        self._failing_prompts: set[str] = set()
        self._faults: collections.deque[tuple[str, Any]] = collections.deque()
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="scripted-detection", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def fail_next(self, status: int, count: int = 1, *, retry_after: str | None = None,
                  location: str | None = None) -> None:
        """Answer the next `count` requests with HTTP `status` (and Retry-After or Location when given)."""
        headers = {k: v for k, v in (("Retry-After", retry_after), ("Location", location)) if v is not None}
        with self._lock:
            self._faults.extend([("status", (status, headers))] * count)

    def stall_next(self, seconds: float, count: int = 1) -> None:
        """Hold the next `count` requests for `seconds`, then answer them normally."""
        with self._lock:
            self._faults.extend([("stall", seconds)] * count)

    def garbage_next(self, count: int = 1) -> None:
        """Answer the next `count` requests with HTTP 200 and a body that is not JSON."""
        with self._lock:
            self._faults.extend([("garbage", None)] * count)

    def fail_task(self, phrase_text: str) -> None:
        """Tasks whose prompt text equals `phrase_text` end in status "failed"."""
        with self._lock:
            self._failing_prompts.add(phrase_text)

    def __enter__(self) -> "ScriptedDetectionServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def handle(self, method: str, path: str, headers: dict[str, str], raw: bytes) -> tuple[int, bytes, dict[str, str]]:
        """(status, body, headers) for one request."""
        body = _json_or_none(raw)
        with self._lock:
            self.received.append({"method": method, "path": path, "headers": headers, "body": body})
            kind, value = self._faults.popleft() if self._faults else ("", None)
        time.sleep(self.latency_s + (value if kind == "stall" else 0.0))
        if kind == "status":
            status, extra = value
            return status, _json({"code": status, "msg": f"scripted failure {status}"}), extra
        if kind == "garbage":
            return 200, b"<html>502 Bad Gateway</html>", {}
        if headers.get("token") != self.token:
            return 401, _json({"code": 401, "msg": "invalid token"}), {}
        if method == "POST" and path == "/v2/task/grounding_dino/detection":
            return 200, _json(self._submit(body)), {}
        if method == "GET" and path.startswith("/v2/task_status/"):
            return 200, _json(self._status(path.rsplit("/", 1)[-1])), {}
        return 404, _json({"code": 404, "msg": f"no route {method} {path}"}), {}

    def _submit(self, body: dict[str, Any] | None) -> dict[str, Any]:
        if not body or not isinstance(body.get("prompt"), dict) or not str(body.get("image", "")).startswith("data:"):
            return {"code": 400, "msg": "body needs model, image (data URI) and prompt"}
        task_id = str(uuid.uuid4())
        with self._lock:
            self.tasks[task_id] = {"body": body, "polls": 0}
        return {"code": 0, "msg": "ok", "data": {"task_uuid": task_id}}

    def _status(self, task_id: str) -> dict[str, Any]:
        with self._lock:
            task = self.tasks.get(task_id)
            if task is None:
                return {"code": 404, "msg": f"no task {task_id}"}
            task["polls"] += 1
            polls = task["polls"]
        if polls <= self.polls_until_done:
            return {"code": 0, "msg": "ok", "data": {"status": "waiting" if polls == 1 else "running"}}
        prompt = task["body"]["prompt"]["text"]
        if prompt in self._failing_prompts:
            return {"code": 0, "msg": "ok", "data": {"status": "failed", "error": "scripted task failure"}}
        pixels = _decode(task["body"]["image"])
        objects = self.responder(pixels, [p for p in prompt.split(".") if p])
        return {"code": 0, "msg": "ok", "data": {"status": "success", "result": {"objects": objects}}}


def _decode(data_uri: str) -> np.ndarray:
    payload = data_uri.split(",", 1)[1]
    return np.array(Image.open(io.BytesIO(base64.b64decode(payload))).convert("RGB"))


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw) if raw else None
    except json.JSONDecodeError:
        return None


def _handler_for(server: ScriptedDetectionServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            """Quiet: tests assert on `received`, not on stderr."""

        def _serve(self, method: str) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, body, extra = server.handle(method, self.path, headers, raw)
            try:
                self.send_response(status)
                for key, value in {"Content-Type": "application/json", **extra}.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up waiting (a timeout test): nothing to answer

        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            self._serve("POST")

        def do_GET(self) -> None:  # noqa: N802
            self._serve("GET")

    return Handler
