"""Per-detector score tests and calibrations: detectors' scores are not comparable with each other.

Grounding DINO's box score is a sigmoid of one token's logit; OWLv2's is a differently trained objectness-times-class
score that runs far lower; a classical detector gives a margin or a vote count, or no score at all; an API may give
anything. So the consensus never compares raw scores across detectors. Each detector has a `ScoreRule`:

- the **score test** (`threshold`): its own raw score a box must reach to vote; a detector without scores has no
  test (its boxes always vote);
- the **calibration** into a confidence in [0, 1], used to weigh boxes in fusion and for the fused score:
  `identity` (the raw score, clipped to [0, 1]), `linear` (raw `low` -> 0, `high` -> 1, clipped) or `logistic`
  (1 / (1 + exp(-(scale * raw + offset))), a Platt scaling fitted on held-out boxes);
- `unscored`: the confidence of a box that came without a score.

A detector with no rule gets `ScoreRule(detector=name)`: no test, identity calibration, unscored boxes weigh 1.
The rule each vote was judged by is recorded in its audit row.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any

CALIBRATIONS = ("identity", "linear", "logistic")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScoreRule:
    """How one detector's raw scores are tested and made comparable."""

    detector: str
    """The detector's name in the recipe."""
    threshold: float | None = None
    """A box votes only when its raw score is at least this; None: no test (every box votes)."""
    calibration: str = "identity"
    """"identity" (clipped to [0, 1]), "linear" (`low` -> 0, `high` -> 1) or "logistic" (`scale`, `offset`)."""
    low: float = 0.0
    """linear: the raw score that maps to confidence 0."""
    high: float = 1.0
    """linear: the raw score that maps to confidence 1."""
    scale: float = 1.0
    """logistic: the slope applied to the raw score."""
    offset: float = 0.0
    """logistic: the intercept."""
    unscored: float = 1.0
    """The confidence of a box given without a score (it weighs by the detector's weight alone)."""

    def __post_init__(self) -> None:
        where = f"ScoreRule({self.detector!r})"
        if not isinstance(self.detector, str) or not self.detector:
            raise ValueError(f"ScoreRule.detector must name a detector, got {self.detector!r}")
        if self.calibration not in CALIBRATIONS:
            raise ValueError(f"{where}.calibration must be one of {CALIBRATIONS}, got {self.calibration!r}")
        if self.calibration == "linear" and not self.high > self.low:
            raise ValueError(f"{where}: linear calibration needs high > low, got low={self.low}, high={self.high}")
        if not 0 <= self.unscored <= 1:
            raise ValueError(f"{where}.unscored must be in [0, 1], got {self.unscored}")
        if self.threshold is not None and not math.isfinite(self.threshold):
            raise ValueError(f"{where}.threshold must be a finite number or None, got {self.threshold}")

    def passes(self, raw: float | None) -> bool:
        """The score test: an unscored box, or a detector without a threshold, always passes."""
        return raw is None or self.threshold is None or raw >= self.threshold

    def confidence(self, raw: float | None) -> float:
        """The raw score as a confidence in [0, 1]."""
        if raw is None:
            return self.unscored
        if self.calibration == "linear":
            value = (raw - self.low) / (self.high - self.low)
        elif self.calibration == "logistic":
            z = self.scale * raw + self.offset
            value = 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0
        else:
            value = raw
        return min(max(value, 0.0), 1.0)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def score_rules(rules: Iterable[ScoreRule | Mapping[str, Any]], where: str) -> tuple[ScoreRule, ...]:
    """Rules given as `ScoreRule`s or as dicts (from a JSON recipe), at most one per detector."""
    built = []
    for rule in rules:
        if isinstance(rule, ScoreRule):
            built.append(rule)
        elif isinstance(rule, Mapping):
            try:
                built.append(ScoreRule(**dict(rule)))
            except TypeError as error:
                fields = ", ".join(f.name for f in dataclasses.fields(ScoreRule))
                raise ValueError(f"{where}: {error}; a score rule has fields {fields}") from None
        else:
            raise ValueError(f"{where}: each rule must be a ScoreRule or a dict, got {rule!r}")
    names = [rule.detector for rule in built]
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: one rule per detector, got {names}")
    return tuple(built)


def rule_for(rules: Mapping[str, ScoreRule], detector: str) -> ScoreRule:
    """The detector's rule, or the default one (no test, identity)."""
    return rules.get(detector) or ScoreRule(detector=detector)
