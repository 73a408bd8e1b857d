"""Open shards and manifests by URL: plain paths, `file://`, `http(s)://` and `s3://`, with retries.

A transient failure (a refused or dropped connection, a timeout, HTTP 408/429/5xx, an S3 error other than "not
found" or "access denied") is retried with exponential backoff, `retries` times at most, and a read that fails
midway resumes at the byte it had reached (an HTTP Range request; a server that ignores Range is read again from the
start and the bytes already delivered are skipped). A missing object raises `ShardNotFoundError` at once; anything
else that is not transient, or a failure that outlasts the retries, raises `ShardAccessError` naming the URL.

Time is bounded per URL. An HTTP connection must be made within `connect_timeout_s`, and each read of an answer
(its headers, then each piece of its body) must bring bytes within `read_timeout_s`; and a URL that has delivered no
byte for `give_up_after_s`, retries and backoff included, fails. So a server that accepts connections but never
answers fails within `give_up_after_s` plus one attempt's timeouts, however many retries are allowed, while a slow
but steady download is never cut off.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import http.client
import io
import logging
import posixpath
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from typing import IO, Any

log = logging.getLogger(__name__)

_TRANSIENT_HTTP = {408, 425, 429, 500, 502, 503, 504}
_CONTENT_RANGE_TOTAL = re.compile(r"/(\d+)\s*$")


class ShardNotFoundError(FileNotFoundError):
    """The URL names nothing (HTTP 404/410, no such S3 key or file)."""


class ShardAccessError(OSError):
    """The URL could not be read: a permanent error, or transient errors that outlasted the retries."""


class _Transient(Exception):
    """Internal: a failure worth retrying."""


class _ConnectTimeout(TimeoutError):
    """No connection within `connect_timeout_s` (a read that times out raises a plain TimeoutError)."""


class _TimedHTTPConnection(http.client.HTTPConnection):
    """An HTTP connection made within `connect_timeout`, whose every read then waits at most `read_timeout`."""

    def __init__(self, host: str, *, connect_timeout: float, read_timeout: float, **kwargs: Any) -> None:
        kwargs.pop("timeout", None)  # urllib passes its one timeout; these two replace it
        super().__init__(host, timeout=connect_timeout, **kwargs)
        self.read_timeout = read_timeout

    def connect(self) -> None:
        try:
            super().connect()
        except TimeoutError:
            raise _ConnectTimeout(f"no connection to {self.host}:{self.port} within {self.timeout:g} s "
                                  "(connect_timeout_s)") from None
        self.sock.settimeout(self.read_timeout)


class _TimedHTTPSConnection(http.client.HTTPSConnection):
    """`_TimedHTTPConnection` over TLS: the handshake is part of connecting."""

    def __init__(self, host: str, *, connect_timeout: float, read_timeout: float, **kwargs: Any) -> None:
        kwargs.pop("timeout", None)
        super().__init__(host, timeout=connect_timeout, **kwargs)
        self.read_timeout = read_timeout

    def connect(self) -> None:
        try:
            super().connect()
        except TimeoutError:
            raise _ConnectTimeout(f"no connection to {self.host}:{self.port} within {self.timeout:g} s "
                                  "(connect_timeout_s)") from None
        self.sock.settimeout(self.read_timeout)


class _TimedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, **timeouts: float) -> None:
        super().__init__()
        self.timeouts = timeouts

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_TimedHTTPConnection, **self.timeouts), req)


class _TimedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, **timeouts: float) -> None:
        super().__init__()
        self.timeouts = timeouts

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(functools.partial(_TimedHTTPSConnection, **self.timeouts), req, context=self._context)


class UrlScheme(str, enum.Enum):
    FILE = "file"
    HTTP = "http"
    S3 = "s3"


def scheme_of(url: str) -> UrlScheme:
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme in ("", "file"):
        return UrlScheme.FILE
    if scheme in ("http", "https"):
        return UrlScheme.HTTP
    if scheme == "s3":
        return UrlScheme.S3
    raise ValueError(f"{url}: unsupported URL scheme {scheme!r}; use a path, file://, http(s):// or s3://")


def local_path(url: str) -> str:
    """The filesystem path of a plain path or `file://` URL."""
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.unquote(parts.path) if parts.scheme.lower() == "file" else url


def resolve_url(base: str, reference: str) -> str:
    """`reference` (a shard URL from a corpus manifest) relative to `base` (the manifest's URL) when relative."""
    if urllib.parse.urlsplit(reference).scheme or reference.startswith("/"):
        return reference
    parts = urllib.parse.urlsplit(base)
    if not parts.scheme:
        return posixpath.normpath(posixpath.join(posixpath.dirname(base), reference))
    path = posixpath.normpath(posixpath.join(posixpath.dirname(parts.path) or "/", reference))
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, "", ""))


class ShardSource(io.RawIOBase):
    """A read-only byte stream of one URL that reconnects at the current offset after a transient failure.

    `size` is the object's length when the server says it (None otherwise); `retries` counts reconnections.
    """

    def __init__(self, url: str, connect: Callable[[int], tuple[IO[bytes], int | None]], opener: ShardOpener):
        super().__init__()
        self.url = url
        self.offset = 0
        self.retries = 0
        self._connect = connect
        self._opener = opener
        self._progress = time.monotonic()
        """When the last byte arrived (or the stream was opened): `give_up_after_s` counts from here."""
        self._stream, self.size = opener.attempt(url, lambda: connect(0))
        self._progress = time.monotonic()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def read(self, size: int = -1) -> bytes:
        failures = 0
        while True:
            try:
                data = _classified(lambda: self._stream.read(size))
                if not data and size != 0 and self.size is not None and self.offset < self.size:
                    raise _Transient(f"the connection ended at byte {self.offset} of {self.size}")
                self.offset += len(data)
                if data:
                    self._progress = time.monotonic()
                return data
            except _Transient as error:
                failures += 1
                self.retries += 1
                if failures > self._opener.config.retries:
                    raise ShardAccessError(f"{self.url}: reading failed at byte {self.offset} after "
                                           f"{failures} attempts: {error}") from None
                self._opener.pause(failures, self.url, error, since=self._progress)
                self._close_stream()
                self._stream, _ = self._opener.attempt(self.url, lambda: self._connect(self.offset),
                                                       since=self._progress)

    def close(self) -> None:
        self._close_stream()
        super().close()

    def _close_stream(self) -> None:
        try:
            self._stream.close()
        except OSError:
            pass  # a broken connection may fail to close; it is being replaced or abandoned either way


def _classified(call: Callable[[], Any]) -> Any:
    """Run `call`, turning transient network errors into `_Transient` and missing objects into
    `ShardNotFoundError`."""
    try:
        return call()
    except urllib.error.HTTPError as error:
        if error.code in (404, 410):
            raise ShardNotFoundError(f"{error.url}: HTTP {error.code} {error.reason}") from None
        if error.code in _TRANSIENT_HTTP:
            raise _Transient(f"HTTP {error.code} {error.reason}") from None
        raise ShardAccessError(f"{error.url}: HTTP {error.code} {error.reason}") from None
    except ShardNotFoundError:
        raise
    except FileNotFoundError as error:
        raise ShardNotFoundError(str(error)) from None
    except PermissionError as error:
        raise ShardAccessError(str(error)) from None
    except _ConnectTimeout as error:
        raise _Transient(str(error)) from None
    except TimeoutError:
        raise _Transient("the server sent nothing within the read timeout (read_timeout_s)") from None
    except urllib.error.URLError as error:
        reason = error.reason
        if isinstance(reason, _ConnectTimeout):
            raise _Transient(str(reason)) from None
        if isinstance(reason, TimeoutError):
            raise _Transient("the server sent no answer within the read timeout (read_timeout_s)") from None
        raise _Transient(f"{type(error).__name__}: {error}") from None
    except (http.client.HTTPException, ConnectionError, OSError) as error:
        raise _Transient(f"{type(error).__name__}: {error}") from None
    except Exception as error:  # botocore/aiohttp network errors are not OSErrors; anything else is a bug: re-raise
        if type(error).__module__.split(".")[0] in ("botocore", "aiohttp", "aiobotocore"):
            raise _Transient(f"{type(error).__name__}: {error}") from None
        raise


class ShardOpener:
    """Opens URLs for reading. Holds an S3 filesystem (made on first use, in the process that uses it)."""

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config:
        """How to reach shards, and how hard to try."""

        retries: int = 5
        """Reconnections after a transient failure before giving up (per open, and per read)."""
        backoff_s: float = 0.5
        """The first wait before a retry; it doubles each time."""
        max_backoff_s: float = 10.0
        """The longest wait between two attempts."""
        connect_timeout_s: float = 10.0
        """The longest wait for an HTTP(S) connection (TCP, then TLS) to a server."""
        read_timeout_s: float = 30.0
        """The longest wait for the next bytes of an HTTP answer (its headers, or the next piece of its body)."""
        give_up_after_s: float = 120.0
        """A URL that has delivered no byte for this long, retries and backoff included, fails (`ShardAccessError`):
        a server that accepts connections but never answers fails within this plus one attempt's timeouts."""
        s3_options: Mapping[str, Any] = dataclasses.field(default_factory=dict, repr=False)
        """`s3fs.S3FileSystem` options, e.g. {"endpoint_url": "http://127.0.0.1:9000", "key": ..., "secret": ...};
        left out of the repr, so a logged config never shows a secret."""
        s3_block_bytes: int = 8 * 2**20
        """Bytes per S3 range request."""

        def __post_init__(self) -> None:
            if self.retries < 0:
                raise ValueError(f"ShardOpener.Config.retries must be >= 0, got {self.retries}")
            if self.backoff_s < 0 or self.max_backoff_s < self.backoff_s:
                raise ValueError(f"ShardOpener.Config needs 0 <= backoff_s <= max_backoff_s, got {self.backoff_s} "
                                 f"and {self.max_backoff_s}")
            for name in ("connect_timeout_s", "read_timeout_s", "give_up_after_s"):
                if not getattr(self, name) > 0:
                    raise ValueError(f"ShardOpener.Config.{name} must be > 0, got {getattr(self, name)}")

    def __init__(self, config: ShardOpener.Config | None = None, *, sleep: Callable[[float], None] = time.sleep):
        self.config = config or ShardOpener.Config()
        self._sleep = sleep
        self._s3: Any = None
        self._http: urllib.request.OpenerDirector | None = None

    def __getstate__(self) -> dict[str, Any]:
        # The S3 filesystem holds an event loop and connections: a DataLoader worker makes its own (and HTTP opener).
        return {**self.__dict__, "_s3": None, "_http": None}

    def open(self, url: str) -> IO[bytes]:
        """A byte stream of `url`: a local file (seekable), or a `ShardSource` for remote URLs."""
        scheme = scheme_of(url)
        if scheme is UrlScheme.FILE:
            path = local_path(url)
            try:
                return open(path, "rb")
            except FileNotFoundError:
                raise ShardNotFoundError(f"{url}: no such file") from None
        connect = self._http_connect(url) if scheme is UrlScheme.HTTP else self._s3_connect(url)
        return ShardSource(url, connect, self)

    def read_bytes(self, url: str) -> bytes:
        with self.open(url) as stream:
            return stream.read()

    def attempt(self, url: str, connect: Callable[[], Any], since: float | None = None) -> Any:
        """`connect()`, retried on transient failures with backoff, until `give_up_after_s` from `since` (the last
        byte the URL delivered; default: now)."""
        since = time.monotonic() if since is None else since
        failures = 0
        while True:
            try:
                return _classified(connect)
            except _Transient as error:
                failures += 1
                if failures > self.config.retries:
                    raise ShardAccessError(f"{url}: still failing after {failures} attempts ({error}); check the "
                                           f"server, or allow more with ShardOpener.Config.retries") from None
                self.pause(failures, url, error, since=since)

    def pause(self, failures: int, url: str, error: Exception, *, since: float) -> None:
        """Wait before retry `failures`, or give up when the URL would then have been silent too long."""
        wait = min(self.config.backoff_s * 2 ** (failures - 1), self.config.max_backoff_s)
        silent = time.monotonic() - since
        if silent + wait > self.config.give_up_after_s:
            raise ShardAccessError(
                f"{url}: no byte for {silent:.1f} s over {failures} attempts (the last: {error}); the server does "
                f"not answer. Fix: check it, or allow longer with ShardOpener.Config.give_up_after_s "
                f"({self.config.give_up_after_s:g} s), read_timeout_s ({self.config.read_timeout_s:g} s) and "
                f"connect_timeout_s ({self.config.connect_timeout_s:g} s)") from None
        log.warning("%s: %s; retry %d of %d in %.2f s", url, error, failures, self.config.retries, wait)
        self._sleep(wait)

    def _http_connect(self, url: str) -> Callable[[int], tuple[IO[bytes], int | None]]:
        def connect(offset: int) -> tuple[IO[bytes], int | None]:
            request = urllib.request.Request(url, headers={"Range": f"bytes={offset}-"} if offset else {})
            response = self._http_opener().open(request)
            if response.status == 206:
                total = _CONTENT_RANGE_TOTAL.search(response.headers.get("Content-Range", ""))
                return response, int(total.group(1)) if total else None
            length = response.headers.get("Content-Length")
            if offset:  # the server ignored Range: skip what was already delivered
                _skip(response, offset)
            return response, int(length) if length is not None else None

        return connect

    def _http_opener(self) -> urllib.request.OpenerDirector:
        if self._http is None:
            timeouts = {"connect_timeout": self.config.connect_timeout_s, "read_timeout": self.config.read_timeout_s}
            self._http = urllib.request.build_opener(_TimedHTTPHandler(**timeouts), _TimedHTTPSHandler(**timeouts))
        return self._http

    def _s3_connect(self, url: str) -> Callable[[int], tuple[IO[bytes], int | None]]:
        def connect(offset: int) -> tuple[IO[bytes], int | None]:
            if self._s3 is None:
                import s3fs

                options = dict(self.config.s3_options)
                options["config_kwargs"] = {"connect_timeout": self.config.connect_timeout_s,
                                            "read_timeout": self.config.read_timeout_s,
                                            **options.get("config_kwargs", {})}
                self._s3 = s3fs.S3FileSystem(**options)
            handle = self._s3.open(url, "rb", block_size=self.config.s3_block_bytes, cache_type="readahead")
            handle.seek(offset)
            return handle, handle.size

        return connect


def _skip(stream: IO[bytes], count: int) -> None:
    while count:
        data = stream.read(min(count, 2**20))
        if not data:
            raise _Transient(f"the response ended {count} bytes before the resume offset")
        count -= len(data)
