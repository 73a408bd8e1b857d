"""A local OpenAI-compatible chat-completions server that answers from a script: for tests, benchmarks and demos.

It speaks the protocol vLLM and SGLang serve (`GET /v1/models`, `POST /v1/chat/completions`, bearer auth, OpenAI
error bodies) on 127.0.0.1, and can be told to misbehave: fail the next requests with a status (429 with
`Retry-After`, 500, 503, 400), stall them, or answer every request after a fixed latency (what the throughput
benchmark measures against). A `responder(body) -> str` writes the answers, so generator tests can assert on
content that a random-weight model could never produce.
"""

from __future__ import annotations

import argparse
import collections
import http.server
import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

Responder = Callable[[dict[str, Any]], str]


def request_text(body: dict[str, Any]) -> str:
    """All text parts of a chat-completions request body, joined: what a responder usually matches on."""
    texts = []
    for message in body.get("messages", []):
        content = message.get("content")
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content or []
        texts += [p.get("text", "") for p in parts if p.get("type") == "text"]
    return "\n".join(texts)


def request_images(body: dict[str, Any]) -> list[str]:
    """The image URLs of a request body, in order."""
    return [p["image_url"]["url"] for m in body.get("messages", []) if isinstance(m.get("content"), list)
            for p in m["content"] if p.get("type") == "image_url"]


class ScriptedVlmServer:
    """`with ScriptedVlmServer(responder) as server: HttpVlm.Config(base_url=server.url, ...)`."""

    def __init__(self, responder: Responder | None = None, *, model: str = "scripted-vlm", latency_s: float = 0.0,
                 api_key: str | None = None) -> None:
        self.responder = responder or (lambda body: "A robot arm above a table.")
        self.model = model
        self.latency_s = latency_s
        self.api_key = api_key
        self.requests: list[dict[str, Any]] = []
        """Every chat-completions body received (failed ones too), in arrival order."""
        self.max_in_flight = 0
        self._in_flight = 0
        self._faults: collections.deque[tuple[int, float, str | None]] = collections.deque()
        self._lock = threading.Lock()
        self._server = _Server(("127.0.0.1", 0), _handler_for(self))
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name="scripted-vlm", daemon=True)

    @property
    def url(self) -> str:
        """The API root, e.g. http://127.0.0.1:PORT/v1."""
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def fail_next(self, status: int, count: int = 1, *, retry_after: str | None = None) -> None:
        """Answer the next `count` chat requests with HTTP `status` (and a Retry-After header when given)."""
        with self._lock:
            self._faults.extend([(status, 0.0, retry_after)] * count)

    def stall_next(self, seconds: float, count: int = 1) -> None:
        """Hold the next `count` chat requests for `seconds` before answering them normally."""
        with self._lock:
            self._faults.extend([(200, seconds, None)] * count)

    def __enter__(self) -> "ScriptedVlmServer":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def _next_fault(self) -> tuple[int, float, str | None]:
        with self._lock:
            return self._faults.popleft() if self._faults else (200, 0.0, None)

    def _enter(self, body: dict[str, Any]) -> None:
        with self._lock:
            self.requests.append(body)
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)

    def _leave(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def completion(self, body: dict[str, Any]) -> tuple[int, dict[str, Any], dict[str, str]]:
        """(status, JSON body, headers) for one chat-completions request."""
        self._enter(body)
        try:
            status, stall, retry_after = self._next_fault()
            time.sleep(self.latency_s + stall)
            if status != 200:
                headers = {"Retry-After": retry_after} if retry_after else {}
                return status, _error(status, f"scripted failure {status}"), headers
            if body.get("model") != self.model:
                return 404, _error(404, f"The model `{body.get('model')}` does not exist."), {}
            if not isinstance(body.get("messages"), list) or not body["messages"]:
                return 400, _error(400, "messages must be a non-empty list"), {}
            try:
                return 200, self._reply(body), {}
            except Exception as error:  # noqa: BLE001 - a responder bug is a 500, as a real server's bug is
                return 500, _error(500, f"responder failed: {type(error).__name__}: {error}"), {}
        finally:
            self._leave()

    def _reply(self, body: dict[str, Any]) -> dict[str, Any]:
        text = self.responder(body)
        words = text.split()
        limit = int(body.get("max_tokens") or 1 << 30)
        finish = "length" if len(words) > limit else "stop"
        text = " ".join(words[:limit]) if finish == "length" else text
        prompt_tokens = len(request_text(body).split()) + 64 * len(request_images(body))
        return {
            "id": f"chatcmpl-{len(self.requests)}", "object": "chat.completion", "created": int(time.time()),
            "model": self.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": min(len(words), limit),
                      "total_tokens": prompt_tokens + min(len(words), limit)},
        }


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default backlog of 5 drops connections when 32 clients connect at once

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that gave up (timed out) before its stalled answer is no server error; anything else is."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _error(status: int, message: str) -> dict[str, Any]:
    kinds = {400: "BadRequestError", 401: "AuthenticationError", 404: "NotFoundError", 429: "RateLimitError"}
    return {"error": {"message": message, "type": kinds.get(status, "InternalServerError"), "param": None,
                      "code": status}}


def _handler_for(server: ScriptedVlmServer) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
            """Quiet: tests and benchmarks read `server.requests` instead."""

        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            if not self._authorized():
                return
            if self.path.rstrip("/") == "/v1/models":
                self._send(200, {"object": "list", "data": [{"id": server.model, "object": "model"}]})
            else:
                self._send(404, _error(404, f"no route {self.path}"))

        def do_POST(self) -> None:  # noqa: N802
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length)
            if not self._authorized():
                return
            if self.path.rstrip("/") != "/v1/chat/completions":
                self._send(404, _error(404, f"no route {self.path}"))
                return
            try:
                body = json.loads(raw)
            except ValueError:
                self._send(400, _error(400, "body is not JSON"))
                return
            self._send(*server.completion(body))

        def _authorized(self) -> bool:
            if server.api_key is None or self.headers.get("Authorization") == f"Bearer {server.api_key}":
                return True
            self._send(401, _error(401, "Incorrect API key provided."))
            return False

        def _send(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler


def main() -> None:
    """Serve a fixed answer from its own process (benchmarks keep client and server off one GIL): prints the API
    root on the first line of stdout, then serves until terminated."""
    parser = argparse.ArgumentParser(description="a local OpenAI-compatible server answering a fixed text")
    parser.add_argument("--answer", default="A robot arm above a table.")
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument("--model", default="scripted-vlm")
    args = parser.parse_args()
    server = ScriptedVlmServer(lambda body: args.answer, model=args.model, latency_s=args.latency_ms / 1000)
    with server:
        print(server.url, flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
