"""The VLM backends, by name: the registry behind `--vlm local:DIR`, `--vlm http:URL` and `--vlm ray-llm:MODEL`.
Adding a backend is one module implementing `VlmClient` and one line here."""

from __future__ import annotations

from typing import Any

from vlaforge.annotators.vlm_client import VlmBackendConfig, VlmClient
from vlaforge.annotators.vlm_http import HttpVlm
from vlaforge.annotators.vlm_local import LocalVlm
from vlaforge.annotators.vlm_ray_llm import RayLlmVlm
from vlaforge.datasets.configurable import lookup

BACKENDS: dict[str, tuple[type[VlmClient], str]] = {
    "local": (LocalVlm, "path"),
    "http": (HttpVlm, "base_url"),
    "ray-llm": (RayLlmVlm, "model"),
}
"""Backend name -> (client class, the Config field the spec's target fills)."""


def backend_config(spec: str, **options: Any) -> VlmBackendConfig:
    """A backend config from a command-line spec: `local:DIR_OR_HUB_ID` or `http:URL` (e.g.
    `http:http://127.0.0.1:8000/v1`); `options` are fields of that backend's Config."""
    kind, _, target = spec.partition(":")
    if not target:
        raise ValueError(f"VLM spec {spec!r} needs a target: local:/models/Qwen3-VL-4B-Instruct or "
                         "http:http://host:8000/v1")
    try:
        client, field = lookup(BACKENDS, kind, what="backend")
    except ValueError as error:
        raise ValueError(f"VLM spec {spec!r}: {error} Use local:DIR, http:URL or ray-llm:MODEL") from None
    return client.Config(**{field: target}, **options)
