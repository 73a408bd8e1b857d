"""An OpenAI-compatible chat-completions backend: what vLLM (`vllm serve`) and SGLang serve at `/v1/chat/completions`.

Images travel as base64 `data:image/jpeg;base64,...` URLs in `image_url` content parts. Requests run on a thread
pool of `concurrency` workers over one pooled HTTP client. Transient failures (connection errors, timeouts, 429,
5xx) are retried with exponential backoff, honouring `Retry-After`; when retries run out the batch raises
`VlmUnavailableError`, so the unit is redone later instead of losing its samples. The API key comes from the caller
(the CLI reads it from the environment) or from a Prefect Secret block, and never reaches a log or an error.
"""

from __future__ import annotations

import base64
import concurrent.futures
import dataclasses
import email.utils
import logging
import random
import time
from collections.abc import Sequence
from typing import Any

import httpx

from vlaforge.annotators.vlm_client import (
    FinishReason,
    Message,
    ResponseFormat,
    VlmAnswer,
    VlmBackendConfig,
    VlmClient,
    VlmConfigError,
    VlmRequest,
    VlmUnavailableError,
)

logger = logging.getLogger(__name__)

_TRANSIENT_STATUS = frozenset({408, 409, 425, 429})
_BODY_EXCERPT = 300


class _Transient(Exception):
    """A failure worth retrying; `wait_s` is the server's Retry-After, when it gave one."""

    def __init__(self, message: str, wait_s: float | None = None) -> None:
        super().__init__(message)
        self.wait_s = wait_s


class HttpVlm(VlmClient):
    """A VLM behind an OpenAI-compatible `/v1/chat/completions` endpoint."""

    backend = "http"

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(VlmBackendConfig):
        base_url: str
        """The API root, e.g. `http://127.0.0.1:8000/v1` (a root without `/v1` gets it appended)."""
        model: str | None = None
        """The served model name; None asks `/v1/models` and takes the first one."""
        revision: str = "served"
        """The model revision recorded in provenance (servers do not report it: pass the hub commit)."""
        api_key: str | None = dataclasses.field(default=None, repr=False)
        """Bearer token; never logged. The CLI fills it from $VLAFORGE_VLM_API_KEY."""
        api_key_block: str | None = None
        """Name of a Prefect Secret block holding the key, read in `setup()` (used when `api_key` is None)."""
        timeout_s: float = 120.0
        """Per-request read timeout in seconds (connecting gets at most 10 s)."""
        max_retries: int = 4
        """Retries of a transient failure before the batch raises VlmUnavailableError."""
        backoff_s: float = 1.0
        """First retry delay; it doubles per retry (with jitter) unless the server sends Retry-After."""
        max_backoff_s: float = 60.0
        """Longest wait between two tries, Retry-After included."""
        concurrency: int = 8
        """Requests in flight at once."""
        seed: int | None = None
        """Sent as `seed` (vLLM and SGLang honour it for sampling)."""

        def __post_init__(self) -> None:
            if not self.base_url.startswith(("http://", "https://")):
                raise ValueError(f"HttpVlm.Config.base_url must start with http:// or https://, got {self.base_url!r}")
            for name in ("timeout_s", "backoff_s", "max_backoff_s"):
                if getattr(self, name) <= 0:
                    raise ValueError(f"HttpVlm.Config.{name} must be > 0, got {getattr(self, name)}")
            if self.max_retries < 0 or self.concurrency < 1:
                raise ValueError(f"HttpVlm.Config: max_retries must be >= 0 and concurrency >= 1, got "
                                 f"{self.max_retries} and {self.concurrency}")

    config: Config

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        root = config.base_url.rstrip("/")
        self.api_root = root if root.endswith("/v1") else f"{root}/v1"
        self.model_id = config.model or ""
        self._client: httpx.Client | None = None
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None

    def setup(self) -> None:
        if self._client is not None:
            return
        key = self.config.api_key or _secret_block(self.config.api_key_block)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(
            headers=headers, timeout=httpx.Timeout(self.config.timeout_s, connect=min(10.0, self.config.timeout_s)),
            limits=httpx.Limits(max_connections=self.config.concurrency,
                                max_keepalive_connections=self.config.concurrency),
        )
        self._pool = concurrent.futures.ThreadPoolExecutor(self.config.concurrency, thread_name_prefix="vlm-http")
        if not self.model_id:
            self.model_id = self._served_model()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        if self._client is not None:
            self._client.close()
        self._client, self._pool = None, None

    def generate(self, requests: Sequence[VlmRequest]) -> list[VlmAnswer]:
        if self._client is None or self._pool is None:
            raise RuntimeError("HttpVlm.generate before setup(): call setup() once per worker")
        futures = [self._pool.submit(self._answer, request) for request in requests]
        try:
            return [future.result() for future in futures]
        except BaseException:
            for future in futures:
                future.cancel()
            raise

    def _served_model(self) -> str:
        try:
            body = self._with_retries("GET", f"{self.api_root}/models", None, "model list")
        except _Refused as refused:
            raise VlmConfigError(f"{self.api_root}/models: {refused}; pass the served model name "
                                 "(--vlm-model)") from None
        models = [m.get("id") for m in body.get("data", []) if isinstance(m, dict)]
        if not models or not models[0]:
            raise VlmConfigError(f"{self.api_root}/models lists no model; pass the served model name (--vlm-model)")
        return str(models[0])

    def _answer(self, request: VlmRequest) -> VlmAnswer:
        body = {
            "model": self.model_id,
            "messages": openai_messages(request),
            "max_tokens": request.max_new_tokens,
            "temperature": request.temperature,
        }
        if request.response_format == ResponseFormat.JSON:
            body["response_format"] = {"type": "json_object"}
        if self.config.seed is not None:
            body["seed"] = self.config.seed
        try:
            reply = self._with_retries("POST", f"{self.api_root}/chat/completions", body, request.request_id)
        except _Refused as refused:
            return self._answer_of(request, text="", reason=FinishReason.ERROR, error=str(refused))
        return self._parse(request, reply)

    def _parse(self, request: VlmRequest, reply: dict[str, Any]) -> VlmAnswer:
        try:
            choice = reply["choices"][0]
            text = choice["message"].get("content") or ""
            reason = FinishReason.LENGTH if choice.get("finish_reason") == "length" else FinishReason.STOP
        except (KeyError, IndexError, TypeError, AttributeError):
            excerpt = str(reply)[:_BODY_EXCERPT]
            return self._answer_of(request, text="", reason=FinishReason.ERROR,
                                   error=f"malformed chat-completions reply (no choices[0].message): {excerpt}")
        usage = reply.get("usage") or {}
        counts = {k: int(usage.get(k) or 0) for k in ("prompt_tokens", "completion_tokens")}
        return self._answer_of(request, text=text, reason=reason, usage=counts, model=reply.get("model"))

    def _answer_of(self, request: VlmRequest, *, text: str, reason: FinishReason, error: str | None = None,
                   usage: dict[str, int] | None = None, model: str | None = None) -> VlmAnswer:
        return VlmAnswer(text=text, model_id=model or self.model_id, revision=self.config.revision,
                         usage=usage or {"prompt_tokens": 0, "completion_tokens": 0}, finish_reason=reason,
                         backend=self.backend, error=error)

    def _with_retries(self, method: str, url: str, body: dict[str, Any] | None, what: str) -> dict[str, Any]:
        """The JSON reply, retrying transient failures; raises VlmUnavailableError once retries run out."""
        last = ""
        for attempt in range(self.config.max_retries + 1):
            try:
                return self._once(method, url, body)
            except _Transient as transient:
                last = str(transient)
                if attempt == self.config.max_retries:
                    break
                delay = self._delay(attempt, transient.wait_s)
                logger.info("VLM %s (%s): %s; retry %d of %d in %.2f s", url, what, transient, attempt + 1,
                            self.config.max_retries, delay)
                time.sleep(delay)
        raise VlmUnavailableError(f"VLM endpoint {url} failed {self.config.max_retries + 1} times for {what!r}: "
                                  f"{last}; check the server, or raise --vlm-retries / --vlm-timeout")

    def _once(self, method: str, url: str, body: dict[str, Any] | None) -> dict[str, Any]:
        assert self._client is not None
        try:
            response = self._client.request(method, url, json=body)
        except httpx.TimeoutException as error:
            raise _Transient(f"no answer within {self.config.timeout_s} s ({type(error).__name__})") from None
        except httpx.TransportError as error:
            raise _Transient(f"{type(error).__name__}: {error}") from None
        status = response.status_code
        if status == 200:
            try:
                return response.json()
            except ValueError:
                raise _Refused(f"HTTP 200 with a body that is not JSON: {response.text[:_BODY_EXCERPT]!r}") from None
        excerpt = response.text[:_BODY_EXCERPT]
        if status in _TRANSIENT_STATUS or status >= 500:
            raise _Transient(f"HTTP {status}: {excerpt}", _retry_after(response.headers.get("retry-after")))
        if status in (401, 403):
            raise VlmConfigError(f"{url} refused the API key (HTTP {status}); set VLAFORGE_VLM_API_KEY or "
                                 "--vlm-key-block to a valid key")
        if status == 404:
            raise VlmConfigError(f"{url} answered HTTP 404 ({excerpt}); check the URL (the API root, e.g. "
                                 f"http://host:8000/v1) and the model name {self.model_id!r}")
        raise _Refused(f"HTTP {status}: {excerpt}")

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.config.max_backoff_s)
        exponential = self.config.backoff_s * 2**attempt
        return min(self.config.max_backoff_s, exponential * random.uniform(0.5, 1.0))


class _Refused(Exception):
    """The server refused this one request (HTTP 4xx other than auth, or an unreadable reply)."""


def openai_messages(request: VlmRequest) -> list[dict[str, Any]]:
    """The request's messages as OpenAI chat-completions messages (images as base64 data URLs)."""
    return [_openai_message(m, request.images) for m in _with_image_indices(request.messages)]


def _with_image_indices(messages: list[Message]) -> list[tuple[Message, list[int]]]:
    """Each message with the indices of the request images its image parts show."""
    out, shown = [], 0
    for message in messages:
        content = message.get("content")
        parts = content if isinstance(content, list) else []
        count = sum(p.get("type") == "image" for p in parts)
        out.append((message, list(range(shown, shown + count))))
        shown += count
    return out


def _openai_message(item: tuple[Message, list[int]], images: Sequence[bytes]) -> dict[str, Any]:
    """An HF chat message as OpenAI chat-completions content parts (images as base64 data URLs)."""
    message, image_indices = item
    content = message.get("content")
    if isinstance(content, str):
        return {"role": message["role"], "content": content}
    parts, next_image = [], iter(image_indices)
    for part in content or []:
        if part.get("type") == "image":
            url = "data:image/jpeg;base64," + base64.b64encode(images[next(next_image)]).decode("ascii")
            parts.append({"type": "image_url", "image_url": {"url": url}})
        else:
            parts.append({"type": "text", "text": part.get("text", "")})
    return {"role": message["role"], "content": parts}


def _retry_after(value: str | None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _secret_block(name: str | None) -> str | None:
    """The value of a Prefect Secret block, or None when no block is named."""
    if not name:
        return None
    from prefect.blocks.system import Secret

    try:
        return Secret.load(name).get()
    except ValueError as error:
        raise VlmConfigError(f"Prefect Secret block {name!r} could not be loaded ({error}); create it with "
                             f"`Secret(value=...).save({name!r})`") from None
