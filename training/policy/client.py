"""`PolicyClient`: our side of openpi's websocket protocol, for the evaluation's environment processes and robots.

It speaks what `openpi_client.websocket_client_policy.WebsocketClientPolicy` speaks (see `server.py`), so it talks
to our server and to openpi's alike: the server's metadata on connect, then one packed observation out and one
packed response back per `infer`. A text message back is the server's error, raised as `PolicyServerError` with the
server's words; the connection stays usable.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from websockets.exceptions import InvalidHandshake, InvalidURI
from websockets.sync.client import ClientConnection, connect

from vlaforge.training.policy.wire_format import pack, unpack


class PolicyServerError(RuntimeError):
    """The server answered an observation with an error message."""


class PolicyClient:
    """A connection to a policy server at `url` (`ws://host:port`)."""

    def __init__(self, url: str, *, connect_timeout_s: float = 30.0) -> None:
        self.url = url
        self._connection = self._connect(url, connect_timeout_s)
        self.metadata: dict[str, Any] = unpack(self._connection.recv())

    @staticmethod
    def _connect(url: str, timeout_s: float) -> ClientConnection:
        """Retry while the server is still starting (connection refused), up to `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                return connect(url, compression=None, max_size=None, open_timeout=timeout_s)
            except InvalidURI:
                raise ValueError(f"{url!r} is not a websocket URL: use ws://HOST:PORT") from None
            except (OSError, InvalidHandshake) as error:
                if time.monotonic() > deadline:
                    raise ConnectionError(f"no policy server answers at {url} after {timeout_s:.0f} s ({error}); "
                                          f"start one with `vlaforge serve-policy`") from None
                time.sleep(0.2)

    def infer(self, observation: Mapping[str, Any]) -> dict[str, Any]:
        """The server's response to one observation: `actions` [T, D_a] and timing."""
        self._connection.send(pack(dict(observation)))
        reply = self._connection.recv()
        if isinstance(reply, str):
            raise PolicyServerError(reply)
        return unpack(reply)

    def close(self) -> None:
        self._connection.close()

    def __enter__(self) -> "PolicyClient":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
