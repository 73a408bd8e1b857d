"""`SafeCheckpointEngine`: DeepSpeed's torch.save checkpoint engine, reading back with `weights_only=True`.

DeepSpeed 0.19.8's `TorchCheckpointEngine.load` calls `torch.load(..., weights_only=False)`: a full unpickle, which
can run any callable a file names. This engine loads the same files with torch's restricted unpickler instead: only
tensors, containers and primitive types, plus the few DeepSpeed types a ZeRO-2 checkpoint holds (listed in
`DEEPSPEED_CHECKPOINT_TYPES`, found with `torch.serialization.get_unsafe_globals_in_checkpoint` on checkpoints this
trainer wrote: model states need none; optimizer states name the three below). Anything else in a file makes the
load fail with torch's `UnpicklingError` naming the type, instead of being constructed.
"""

from __future__ import annotations

import logging

import torch
from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine
from deepspeed.runtime.fp16.loss_scaler import LossScaler
from deepspeed.runtime.zero.config import ZeroStageEnum
from deepspeed.utils.tensor_fragment import fragment_address

log = logging.getLogger(__name__)

DEEPSPEED_CHECKPOINT_TYPES = (ZeroStageEnum, LossScaler, fragment_address)
"""DeepSpeed's own classes in ZeRO-2 optimizer-state files (fp32 and bf16): the stage enum, the (static) loss
scaler's attributes and a tensor fragment's (start, numel) address. Only these are allowed past the restricted
unpickler, and it rebuilds them from plain values without running any other code."""


class SafeCheckpointEngine(TorchCheckpointEngine):
    """Saves like DeepSpeed's torch engine; loads with `weights_only=True` and an explicit allow-list."""

    def load(self, path: str, map_location=None):  # type: ignore[no-untyped-def]
        log.debug("loading %s with weights_only=True", path)
        with torch.serialization.safe_globals(list(DEEPSPEED_CHECKPOINT_TYPES)):
            return torch.load(path, map_location=map_location, weights_only=True)
