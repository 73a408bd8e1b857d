"""What the loader does with a sample it cannot turn into tensors: raise, or quarantine it under a named reason.

A transform raises `BadSampleError` naming the sample, its shard and the fix; `BadSamplePolicy` decides whether that
stops training (`RAISE`, the default for tests and small runs) or sets the sample aside (`QUARANTINE`): the sample
is then recorded as a `datasets.drops.Drop`, counted by reason and logged, never silently skipped.
"""

from __future__ import annotations

import enum
import logging

from vlaforge.datasets.drops import Drop, DropReason

log = logging.getLogger(__name__)


class BadSamplePolicy(str, enum.Enum):
    """What a loader worker does when a sample fails to decode."""

    RAISE = "raise"
    QUARANTINE = "quarantine"


class BadSampleError(ValueError):
    """A sample that cannot become training tensors; `str()` names the sample, its shard and the fix."""

    def __init__(self, *, url: str, key: str, reason: DropReason, message: str) -> None:
        super().__init__(f"{url}: sample {key}: {message}")
        self.url = url
        self.key = key
        self.reason = reason
        self.detail = message

    def as_drop(self) -> Drop:
        """The quarantine record of this sample."""
        return Drop(file=self.url, episode=self.key, reason=self.reason, message=str(self), quarantined=True, steps=1)


def handle(error: BadSampleError, policy: BadSamplePolicy, drops: list[Drop]) -> None:
    """Re-raise `error`, or record it in `drops` and log it, according to `policy`."""
    if policy is BadSamplePolicy.RAISE:
        raise error
    log.warning("quarantined (%s): %s", error.reason.value, error)
    drops.append(error.as_drop())
