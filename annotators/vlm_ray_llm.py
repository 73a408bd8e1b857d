"""A VLM backend on Ray Data LLM (`ray.data.llm`): each batch of requests becomes a Ray Data dataset run through an
LLM processor, so on a GPU cluster the model runs as vLLM engines that Ray places, batches and scales.

    --vlm ray-llm:Qwen/Qwen3-VL-4B-Instruct --set ...      # vLLM engines on the cluster's GPUs (needs `vllm`)
    RayLlmVlm.Config(model="Qwen/Qwen3-VL-4B-Instruct", engine="vllm", concurrency=4,
                     engine_kwargs={"max_model_len": 8192, "limit_mm_per_prompt": {"image": 4}})

Two engines, one dataset plumbing:
- `vllm` (`vLLMEngineProcessorConfig`): `concurrency` engine replicas, each on `engine_kwargs`'
  `tensor_parallel_size` GPUs; the processor applies the model's chat template, reads the images from their data URLs
  (its multimodal stage), tokenizes, generates and detokenizes. vLLM is not installed by this project (it pins its own
  torch and needs CUDA): install it on the GPU nodes' image. Not run here: no GPU and no vLLM on this machine.
- `http` (`HttpRequestProcessorConfig`): the same requests as OpenAI chat-completions bodies to a server (vLLM's or
  SGLang's OpenAI-compatible one), `concurrency` actors with `qps` each. Tested here against a scripted server.

Answers come back in request order (rows carry their index) and refusals become answers with `error` set, as with
the other backends. Outside a Ray cluster, Ray starts a local one.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from vlaforge.annotators.vlm_client import (
    FinishReason,
    ResponseFormat,
    VlmAnswer,
    VlmBackendConfig,
    VlmClient,
    VlmConfigError,
    VlmRequest,
)
from vlaforge.annotators.vlm_http import openai_messages

ENGINES = ("vllm", "http")


class RayLlmVlm(VlmClient):
    """Requests through a Ray Data LLM processor (see the module docstring)."""

    backend: ClassVar[str] = "ray-llm"

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Config(VlmBackendConfig):
        model: str
        """vllm: the model to load (hub id or directory); http: the served model name."""
        engine: str = "vllm"
        """"vllm" (engines on the cluster's GPUs) or "http" (requests to an OpenAI-compatible server)."""
        url: str | None = None
        """http: the server's API root, e.g. http://vlm:8000/v1."""
        revision: str = ""
        """The model's revision, as provenance records it."""
        batch_size: int = 16
        """Rows per batch handed to an engine replica or a request actor."""
        concurrency: int = 1
        """vllm: engine replicas; http: request actors."""
        accelerator_type: str | None = None
        """vllm: the GPU type the replicas need (a Ray accelerator type such as "A10G"); None: any."""
        engine_kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
        """vllm: engine arguments, e.g. {"tensor_parallel_size": 2, "max_model_len": 8192}."""
        qps: int | None = None
        """http: requests per second per actor; None: as fast as answers come."""
        max_retries: int = 3
        """http: retries of a failed request."""

        def __post_init__(self) -> None:
            if self.engine not in ENGINES:
                raise ValueError(f"RayLlmVlm.Config.engine must be one of {ENGINES}, got {self.engine!r}")
            if self.engine == "http" and not self.url:
                raise ValueError("RayLlmVlm.Config.url is needed with engine='http' (the server's API root, e.g. "
                                 "http://vlm:8000/v1)")
            if self.batch_size < 1 or self.concurrency < 1:
                raise ValueError(f"RayLlmVlm.Config: batch_size and concurrency must be >= 1, got "
                                 f"{self.batch_size} and {self.concurrency}")

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.config: RayLlmVlm.Config = config
        self._processor: Any = None

    def setup(self) -> None:
        try:
            import ray.data.llm as llm
        except ImportError as error:
            raise VlmConfigError(f"the ray-llm backend needs Ray Data LLM (pip install 'ray[llm]'): {error}") from None
        config = self.config
        if config.engine == "vllm":
            processor_config = llm.vLLMEngineProcessorConfig(
                model_source=config.model, engine_kwargs=dict(config.engine_kwargs), concurrency=config.concurrency,
                batch_size=config.batch_size, accelerator_type=config.accelerator_type,
                prepare_multimodal_stage=True)
            self._processor = llm.build_processor(processor_config, preprocess=_vllm_row, postprocess=_vllm_answer)
        else:
            processor_config = llm.HttpRequestProcessorConfig(
                url=f"{config.url.rstrip('/')}/chat/completions", concurrency=config.concurrency,
                batch_size=config.batch_size, qps=config.qps, max_retries=config.max_retries)
            self._processor = llm.build_processor(processor_config, preprocess=_http_row, postprocess=_http_answer)

    def generate(self, requests: Sequence[VlmRequest]) -> list[VlmAnswer]:
        if self._processor is None:
            raise RuntimeError("RayLlmVlm.generate before setup(): call setup() once per worker")
        if not requests:
            return []
        import ray.data

        rows = [{"index": index, "request": json.dumps(self._body(request))} for index, request in enumerate(requests)]
        results = sorted(self._processor(ray.data.from_items(rows)).take_all(), key=lambda row: row["index"])
        return [self._answer(json.loads(row["answer"])) for row in results]

    def _body(self, request: VlmRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"model": self.config.model, "messages": openai_messages(request),
                                "max_tokens": request.max_new_tokens, "temperature": request.temperature}
        if request.response_format == ResponseFormat.JSON:
            body["response_format"] = {"type": "json_object"}
        return body

    def _answer(self, answer: dict[str, Any]) -> VlmAnswer:
        reason = {"length": FinishReason.LENGTH, "error": FinishReason.ERROR}.get(answer.get("finish_reason"),
                                                                                 FinishReason.STOP)
        return VlmAnswer(text=answer.get("text", ""), model_id=answer.get("model") or self.config.model,
                         revision=self.config.revision, usage=answer.get("usage") or {},
                         finish_reason=reason, backend=self.backend, error=answer.get("error"))


# Row functions: module-level so Ray ships them to its workers by reference.

def _http_row(row: dict[str, Any]) -> dict[str, Any]:
    return {"index": row["index"], "payload": json.loads(row["request"])}


def _http_answer(row: dict[str, Any]) -> dict[str, Any]:
    reply = row.get("http_response") or {}
    try:
        choice = reply["choices"][0]
        usage = reply.get("usage") or {}
        answer = {"text": choice["message"].get("content") or "", "finish_reason": choice.get("finish_reason"),
                  "model": reply.get("model"),
                  "usage": {k: int(usage.get(k) or 0) for k in ("prompt_tokens", "completion_tokens")}}
    except (KeyError, IndexError, TypeError, AttributeError):
        answer = {"text": "", "finish_reason": "error",
                  "error": f"malformed chat-completions reply (no choices[0].message): {str(reply)[:300]}"}
    return {"index": row["index"], "answer": json.dumps(answer)}


def _vllm_row(row: dict[str, Any]) -> dict[str, Any]:
    body = json.loads(row["request"])
    sampling = {"max_tokens": body["max_tokens"], "temperature": body["temperature"]}
    if "response_format" in body:
        sampling["guided_decoding"] = {"json_object": True}
    return {"index": row["index"], "messages": body["messages"], "sampling_params": sampling}


def _vllm_answer(row: dict[str, Any]) -> dict[str, Any]:
    generated = int(row.get("num_generated_tokens") or 0)
    budget = (row.get("sampling_params") or {}).get("max_tokens")
    answer = {"text": row.get("generated_text") or "", "finish_reason": "length" if generated == budget else "stop",
              "usage": {"prompt_tokens": int(row.get("num_input_tokens") or 0), "completion_tokens": generated}}
    return {"index": row["index"], "answer": json.dumps(answer)}
