"""What the loader does with a sample it cannot turn into tensors: raise, or skip it, counted, up to a budget.

A transform raises `BadSampleError` naming the sample, its shard and the fix; `BadSamplePolicy` decides whether that
stops training (`RAISE`, the default) or skips the sample (`SKIP`): it is then recorded as a `datasets.drops.Drop`,
logged with its shard and key and counted by reason, never silently passed over. A run that skips more than
`BadSampleBudget.max_fraction` of the samples it draws stops (`BadSampleBudgetError`, raised by the loader worker that
crosses it): past that, the data is damaged, not unlucky, and skipping would quietly train on another mixture.
"""

from __future__ import annotations

import dataclasses
import enum

from vlaforge.datasets.drops import Drop, DropReason


class BadSamplePolicy(str, enum.Enum):
    """What a loader worker does when a sample fails to decode (`vlaforge train --on-bad-sample`)."""

    RAISE = "raise"
    """Stop the run with the sample's error."""
    SKIP = "skip"
    """Skip the sample: counted, logged with its shard and key, within the `BadSampleBudget`."""

    @classmethod
    def _missing_(cls, value: object) -> "BadSamplePolicy | None":
        # "quarantine" was SKIP's name until it became a `vlaforge train` option: saved trainer configs still read.
        return cls.SKIP if value == "quarantine" else None


class BadSampleError(ValueError):
    """A sample that cannot become training tensors; `str()` names the sample, its shard and the fix."""

    def __init__(self, *, url: str, key: str, reason: DropReason, message: str) -> None:
        super().__init__(f"{url}: sample {key}: {message}")
        self.url = url
        self.key = key
        self.reason = reason
        self.detail = message

    def as_drop(self) -> Drop:
        """The record of this sample, skipped."""
        return Drop(file=self.url, episode=self.key, reason=self.reason, message=str(self), quarantined=True, steps=1)


class BadSampleBudgetError(RuntimeError):
    """More samples were skipped than the budget allows; the message gives the counts and the first ones."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class BadSampleBudget:
    """How many skipped samples a run tolerates before it stops."""

    max_fraction: float = 0.01
    """The run stops once more than this fraction of the samples drawn were skipped."""
    min_samples: int = 1000
    """The fraction is taken of at least this many draws, so a bad sample early in a run does not stop it alone
    (with the defaults: up to 10 in the first 1,000 draws, then 1%)."""

    def __post_init__(self) -> None:
        if not 0 <= self.max_fraction <= 1:
            raise ValueError(f"BadSampleBudget.max_fraction must be in [0, 1], got {self.max_fraction}")
        if self.min_samples < 1:
            raise ValueError(f"BadSampleBudget.min_samples must be >= 1, got {self.min_samples}")

    def check(self, skipped: list[Drop], drawn: int) -> None:
        """Raise `BadSampleBudgetError` when `skipped` (every skip so far, in order) is over the budget of `drawn`."""
        if len(skipped) <= self.max_fraction * max(drawn, self.min_samples):
            return
        raise BadSampleBudgetError(
            f"{len(skipped)} of {drawn:,} samples drawn were bad and skipped, over the limit of "
            f"{self.max_fraction:.2%} (of at least {self.min_samples:,} draws): the data is damaged. The first: "
            f"{skipped[0].message}. "
            "Fix: find the damaged shards (`vlaforge corpus verify`, then the samples named in the log) and ingest "
            "them again, or raise --max-bad-fraction")


def handle(error: BadSampleError, policy: BadSamplePolicy, drops: list[Drop]) -> None:
    """Re-raise `error`, or record it in `drops` (the loader logs and counts it), according to `policy`."""
    if policy is BadSamplePolicy.RAISE:
        raise error
    drops.append(error.as_drop())
