"""Which component each draw of a slot comes from: the VL:robot ratio, then the weights within a kind.

Each draw takes the kind furthest behind its target share (target share x draws so far - draws of that kind), then,
within that kind, the component furthest behind its weight. So after any number of draws every kind and every
component is within one draw of its target: 10,000 draws at 1:6 give 1,428 or 1,429 VL samples, never a random
walk around 1,428.6. The choice is a pure function of the counts, so the state is the counts and a draw costs
O(components), whatever the size of the corpus.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping


@dataclasses.dataclass(frozen=True)
class MixtureEntry:
    name: str
    kind: str
    weight: float
    """Share of its kind's draws (the weights of a kind sum to 1)."""


class MixtureSchedule:
    """Deterministic draws by largest deficit, kind first (`kind_shares`), then component (`entries`' weights)."""

    def __init__(self, kind_shares: Mapping[str, float], entries: list[MixtureEntry]) -> None:
        kinds = sorted({entry.kind for entry in entries})
        missing = [kind for kind in kinds if kind_shares.get(kind, 0) <= 0]
        if missing:
            raise ValueError(f"components of kind(s) {missing} have no share in the kind ratio {dict(kind_shares)}")
        total = sum(kind_shares[kind] for kind in kinds)
        self._kind_shares = {kind: kind_shares[kind] / total for kind in kinds}
        self._by_kind = {kind: [e for e in entries if e.kind == kind] for kind in kinds}
        self._kind_counts = dict.fromkeys(kinds, 0)
        self._counts = {entry.name: 0 for entry in entries}

    def peek(self) -> str:
        """The component of the next draw (does not count it)."""
        drawn = sum(self._kind_counts.values()) + 1
        kind = max(self._kind_shares, key=lambda k: self._kind_shares[k] * drawn - self._kind_counts[k])
        within = self._kind_counts[kind] + 1
        entry = max(self._by_kind[kind], key=lambda e: e.weight * within - self._counts[e.name])
        return entry.name

    def advance(self, name: str, kind: str) -> None:
        """Count a draw of `name` (of `kind`)."""
        self._counts[name] += 1
        self._kind_counts[kind] += 1

    def state_dict(self) -> dict[str, dict[str, int]]:
        return {"kinds": dict(self._kind_counts), "components": dict(self._counts)}

    def load_state_dict(self, state: Mapping[str, Mapping[str, int]]) -> None:
        if set(state["components"]) != set(self._counts):
            raise ValueError(f"the mixture state counts components {sorted(state['components'])}, but this corpus "
                             f"has {sorted(self._counts)}")
        self._kind_counts = {kind: int(state["kinds"].get(kind, 0)) for kind in self._kind_counts}
        self._counts = {name: int(count) for name, count in state["components"].items()}
