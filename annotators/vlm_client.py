"""The one small interface every VLM backend implements: requests in, answers out, in batches.

A request is a conversation in the Hugging Face chat format (the format `conversation.json` uses), whose n-th
`{"type": "image"}` part shows the n-th of its JPEG images. Two backends implement it interchangeably:
`vlm_local.LocalVlm` (transformers Qwen3-VL, batched generation) and `vlm_http.HttpVlm` (an OpenAI-compatible
`/v1/chat/completions` endpoint, as vLLM and SGLang serve it), registered by name in `vlm_backends.py`.

    client = HttpVlm.Config(base_url="http://127.0.0.1:8000/v1", model="Qwen/Qwen3-VL-4B-Instruct").build()
    client.setup()
    [answer] = client.generate([VlmRequest(messages=[user(None, "Describe the image.")], images=(jpeg,))])
    answer.text, answer.model_id, answer.usage

A request the backend refuses on its own merits (too long, malformed) comes back as an answer with `error` set, so
one bad request never takes a batch down. A backend that cannot answer at all raises: `VlmUnavailableError`
(server down, retries exhausted: an `OSError`, so flow tasks retry it) or `VlmConfigError` (wrong model path,
URL or key: fix the command).
"""

from __future__ import annotations

import abc
import dataclasses
import enum
from collections.abc import Sequence
from typing import Any, ClassVar

from vlaforge.datasets.configurable import Configurable

Message = dict[str, Any]


class VlmConfigError(ValueError):
    """The backend is misconfigured (no such model directory, endpoint or model name; key refused)."""


class VlmUnavailableError(ConnectionError):
    """The backend could not answer (connection refused, retries exhausted): the work must be redone later."""


class ResponseFormat(str, enum.Enum):
    """What the answer must be: free text, or one JSON object (HTTP backends constrain it; local ones prompt it)."""

    TEXT = "text"
    JSON = "json"


class FinishReason(str, enum.Enum):
    STOP = "stop"
    """The model ended its answer."""
    LENGTH = "length"
    """The answer hit `max_new_tokens` and is cut short."""
    ERROR = "error"
    """The backend refused this request; see `VlmAnswer.error`."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class VlmRequest:
    """One conversation to continue."""

    messages: list[Message]
    """HF chat messages; `{"type": "image"}` parts show `images` in order."""
    images: tuple[bytes, ...] = ()
    """JPEG bytes, one per image part."""
    max_new_tokens: int = 256
    """Upper bound on the answer's length in tokens."""
    temperature: float = 0.0
    """0 is greedy decoding (deterministic on the local backend)."""
    response_format: ResponseFormat = ResponseFormat.TEXT
    """TEXT, or JSON when the answer must be one JSON object."""
    request_id: str = ""
    """What the request is about (a sample key), for error messages."""

    def __post_init__(self) -> None:
        shown = sum(p.get("type") == "image" for m in self.messages for p in _parts(m))
        if shown != len(self.images):
            raise ValueError(f"VlmRequest {self.request_id!r}: messages show {shown} images but {len(self.images)} "
                             "were given; put one {'type': 'image'} part per image, in order")
        if self.max_new_tokens < 1:
            raise ValueError(f"VlmRequest.max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(f"VlmRequest.temperature must be >= 0, got {self.temperature}")

    def settings(self) -> dict[str, Any]:
        """The generation settings, as provenance records them."""
        return {"max_new_tokens": self.max_new_tokens, "temperature": self.temperature,
                "response_format": ResponseFormat(self.response_format).value}


@dataclasses.dataclass(frozen=True, kw_only=True)
class VlmAnswer:
    """The model's answer to one request."""

    text: str
    """The generated text (empty when `error` is set)."""
    model_id: str
    """The model that answered, as the backend names it (hub id or served model name)."""
    revision: str
    """The model's revision (hub commit, weights digest, or what the operator configured)."""
    usage: dict[str, int]
    """{"prompt_tokens": n, "completion_tokens": m} as the backend counted them."""
    finish_reason: FinishReason
    """Why generation ended."""
    backend: str
    """"local" or "http"."""
    error: str | None = None
    """Why the backend refused this request; None for an answer."""

    @property
    def ok(self) -> bool:
        return self.error is None


def _parts(message: Message) -> list[dict[str, Any]]:
    content = message.get("content")
    return content if isinstance(content, list) else []


@dataclasses.dataclass(frozen=True, kw_only=True)
class VlmBackendConfig(Configurable.Config):
    """Base of each backend's nested `Config`; `build()` makes the (not yet set up) client."""


class VlmClient(Configurable, abc.ABC):
    """A VLM backend. `__init__` is cheap; `setup()` loads the model or opens connections, once per worker."""

    Config: ClassVar[type[VlmBackendConfig]] = VlmBackendConfig
    backend: ClassVar[str]

    def __init__(self, config: VlmBackendConfig) -> None:
        self.config = config

    @abc.abstractmethod
    def setup(self) -> None:
        """Load the model / open the connection pool. Raises VlmConfigError when that cannot work."""

    @abc.abstractmethod
    def generate(self, requests: Sequence[VlmRequest]) -> list[VlmAnswer]:
        """One answer per request, in order."""

    def close(self) -> None:
        """Release connections or memory; the default has nothing to release."""
