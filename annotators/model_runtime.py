"""Where a model stage runs (device, dtype) and what pins its weights (hub revision or a digest of the files).

The audit records a revision for every model: the hub revision when one was asked for, else a digest of the
local weight files (so two runs with different weights under the same path are told apart).
"""

from __future__ import annotations

import hashlib
import pathlib
from typing import Any

DTYPES = ("float32", "bfloat16", "float16")
_CHUNK = 1 << 22


def check_runtime(owner: str, device: str, dtype: str) -> None:
    """Raise ValueError naming `owner`'s field when the device or dtype is not one we can run."""
    if device != "auto" and device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"{owner}.device must be 'auto', 'cpu' or 'cuda[:N]', got {device!r}")
    if dtype not in DTYPES:
        raise ValueError(f"{owner}.dtype must be one of {DTYPES}, got {dtype!r}")


def torch_runtime(device: str, dtype: str) -> tuple[Any, Any]:
    """(torch.device, torch.dtype); "auto" is the GPU when there is one. Half precision on a CPU is refused: most
    of its kernels are missing there."""
    import torch

    resolved = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else
                            "cpu" if device == "auto" else device)
    if resolved.type == "cpu" and dtype == "float16":
        raise ValueError("dtype float16 needs a GPU; use float32 or bfloat16 on the CPU")
    return resolved, getattr(torch, dtype)


def file_revision(path: str) -> str:
    """"sha256:<12 hex>" of one weights file (an original checkpoint)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()[:12]}"


def weights_revision(model: str, revision: str | None) -> str:
    """The revision to record: `revision` when given, else "sha256:<12 hex>" of a local directory's weight files,
    else "unpinned" (a hub id without a revision: whatever the hub serves today)."""
    if revision:
        return revision
    path = pathlib.Path(model)
    files = sorted([*path.glob("*.safetensors"), *path.glob("*.bin")]) if path.is_dir() else []
    if not files:
        return "unpinned"
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        with open(file, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    return f"sha256:{digest.hexdigest()[:12]}"
