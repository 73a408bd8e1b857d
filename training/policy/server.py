"""`PolicyServer`: a policy behind openpi's websocket protocol, so robot clients written for openpi talk to it.

The protocol, as openpi's `WebsocketPolicyServer` and `openpi_client.websocket_client_policy` speak it:
- a client opens a websocket (no compression, no message size limit); the server's first message is its metadata;
- then each binary message from the client is one observation packed with msgpack-numpy (`wire_format.py`), and
  the server answers each with one binary message: a packed dict holding `actions` plus timing
  (`server_timing: {infer_ms, prev_total_ms}`, as openpi's server adds, and the policy's own `policy_timing`);
- a text message from the server is an error, which openpi's client raises as `RuntimeError`;
- `GET /healthz` answers 200 without a websocket.

Where openpi's server closes the connection after an error, this one keeps it open: a bad observation is answered
with a text message naming the key and the expected shape, and the client's next observation is served as usual.

Inference runs on one worker thread, so requests from several connections are served one at a time while the
event loop keeps accepting and answering health checks. `serve_forever()` blocks (the CLI); `start()` runs the
server on a background thread and returns its URL (tests, `vlaforge eval sim`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import http
import logging
import threading
import time
from typing import Any, Protocol

import websockets
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from vlaforge.training.policy.observation_map import ObservationError
from vlaforge.training.policy.wire_format import WireFormatError, pack, unpack

log = logging.getLogger(__name__)

SERVER_TIMING = "server_timing"
HEALTH_PATH = "/healthz"


class Endpoint(Protocol):
    """What the server serves: metadata for each client, and a session per connection that answers observations."""

    @property
    def metadata(self) -> dict[str, Any]: ...

    def session(self) -> Any:
        """An object whose `infer(observation: dict) -> dict` answers this connection's observations."""


class PolicyServer:
    """Serves one `Endpoint` (normally a `ServedPolicy`) on `ws://host:port` (see the module docstring)."""

    def __init__(self, endpoint: Endpoint, *, host: str = "127.0.0.1", port: int = 8000) -> None:
        self.endpoint = endpoint
        self.host = host
        self.port = port
        self._inference = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="policy-infer")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}"

    def serve_forever(self) -> None:
        """Serve until interrupted (Ctrl-C)."""
        asyncio.run(self._serve(None))

    def start(self) -> str:
        """Serve on a background thread; returns the URL once the socket listens (port 0 picks a free port)."""
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(self._serve(ready))
            except BaseException as error:  # noqa: BLE001 - reported to the caller of start()
                failure.append(error)
                ready.set()

        self._thread = threading.Thread(target=run, name="policy-server", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            raise failure[0]
        return self.url

    def stop(self) -> None:
        """Close the listening socket and every connection, then wait for the background thread."""
        if self._loop is not None and self._server is not None:
            self._loop.call_soon_threadsafe(self._server.close)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._inference.shutdown(wait=True)

    async def _serve(self, ready: threading.Event | None) -> None:
        async with serve(self._handle, self.host, self.port, compression=None, max_size=None,
                         process_request=_health_check) as server:
            self._loop, self._server = asyncio.get_running_loop(), server
            self.port = server.sockets[0].getsockname()[1]
            log.info("serving the policy on %s", self.url)
            if ready is not None:
                ready.set()
            await server.wait_closed()

    async def _handle(self, connection: ServerConnection) -> None:
        log.info("client %s connected", connection.remote_address)
        loop = asyncio.get_running_loop()
        session = await loop.run_in_executor(self._inference, self.endpoint.session)
        await connection.send(pack(self.endpoint.metadata))
        previous_total_ms: float | None = None
        try:
            async for message in connection:
                started = time.perf_counter()
                reply = await self._answer(loop, session, message)
                if isinstance(reply, dict):
                    reply[SERVER_TIMING]["prev_total_ms"] = previous_total_ms
                    await connection.send(pack(reply))
                else:
                    await connection.send(reply)
                previous_total_ms = (time.perf_counter() - started) * 1e3
        except websockets.ConnectionClosed:
            # The client went away mid-message or before its answer was ready (a robot script stopped at the end of
            # an episode): nothing to answer, and not a server error.
            log.info("client %s closed the connection before its answer was sent", connection.remote_address)
        log.info("client %s disconnected", connection.remote_address)

    async def _answer(self, loop: asyncio.AbstractEventLoop, session: Any, message: bytes | str) -> dict | str:
        """The packed-to-be response dict, or the text of an error for this one message."""
        if isinstance(message, str):
            return "error: send observations as binary msgpack-numpy messages, not text"
        try:
            observation = unpack(message)
        except WireFormatError as error:
            return f"error: the message is not a msgpack-numpy observation: {error}"
        started = time.perf_counter()
        try:
            response = await loop.run_in_executor(self._inference, session.infer, observation)
        except ObservationError as error:
            return f"error: {error}"
        except Exception as error:  # noqa: BLE001 - any failure of one request is reported, the server keeps serving
            log.exception("inference failed")
            return f"error: inference failed: {type(error).__name__}: {error}"
        response[SERVER_TIMING] = {"infer_ms": (time.perf_counter() - started) * 1e3}
        return response


def _health_check(connection: ServerConnection, request: Request) -> Response | None:
    if request.path == HEALTH_PATH:
        return connection.respond(http.HTTPStatus.OK, "OK\n")
    return None
