"""`StepTally`: what one optimizer step (or one validation pass) adds up on a rank, reduced over all ranks.

One float64 vector holds, per logged loss, its sum and how many micro batches had it, then the sample, token, FLOP
and data-wait totals. `reduce` all-reduces it on the device the collective backend needs (NCCL reduces only CUDA
tensors, gloo CPU ones: pass the engine's device) and reads the means back.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist

COUNTERS = ("robot_samples", "vl_samples", "tokens", "flops", "data_wait")
"""Totals over micro batches and ranks: samples of each kind, VLM tokens, model FLOPs, seconds waiting for data."""


class StepTally:
    """Sums of `losses` (names) and `COUNTERS` on one rank; `reduce` gives the mean record over all ranks."""

    def __init__(self, losses: tuple[str, ...]) -> None:
        self.losses = losses
        self._sums = [0.0] * (2 * len(losses) + len(COUNTERS))

    def add(self, losses: Mapping[str, float], **counters: float) -> None:
        """One micro batch: its losses (any subset of the names) and counter increments."""
        for slot, name in enumerate(self.losses):
            if name in losses:
                self._sums[2 * slot] += float(losses[name])
                self._sums[2 * slot + 1] += 1
        base = 2 * len(self.losses)
        for name, value in counters.items():
            self._sums[base + COUNTERS.index(name)] += float(value)

    def totals(self, device: torch.device) -> torch.Tensor:
        """This rank's sums as the float64 vector the collective reduces, made on `device`."""
        return torch.tensor(self._sums, dtype=torch.float64, device=device)

    def reduce(self, device: torch.device, world_size: int) -> dict[str, Any]:
        """{each loss's mean over the micro batches of all ranks that had it (None if none did), each counter's
        total over ranks (data_wait: the mean rank's)}; every rank must call it. The collective's tensor is made on
        `device`."""
        totals = self.totals(device)
        if world_size > 1:
            dist.all_reduce(totals)
        return self.record(totals.tolist(), world_size)

    def record(self, values: list[float], world_size: int) -> dict[str, Any]:
        """The mean record from reduced totals (`values`, as `totals` lays them out)."""
        record: dict[str, Any] = {}
        for slot, name in enumerate(self.losses):
            count = values[2 * slot + 1]
            record[name] = values[2 * slot] / count if count else None
        base = 2 * len(self.losses)
        counters = dict(zip(COUNTERS, values[base:], strict=True))
        record.update(robot_samples=int(counters["robot_samples"]), vl_samples=int(counters["vl_samples"]),
                      tokens=int(counters["tokens"]), flops=counters["flops"],
                      data_wait=counters["data_wait"] / world_size)
        return record
