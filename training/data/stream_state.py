"""Checkpoints of a `CorpusStream`: one state per (rank, worker) slot, combined, resumed exactly or elastically.

A slot's state (`CorpusStream.state_dict()`) is small JSON-able data:
  {"format", "corpus_sha256", "split", "one_pass", "world": {"seed", "slots", "block", "interleave"}, "slot",
   "mixture": {"kinds": {...}, "components": {...}},                        draws so far, for the VL:robot schedule
   "components": {name: {"epoch", "consumed", "plans": {epoch: PlanSpec}}}}  per component: the epoch, positions
                                                                            handed out, and any remainder plans
A checkpoint is every slot's state: `combine_states(states)` (any order) checks that the states belong together
and that no slot is missing or repeated. A DataLoader wrapper gathers its workers' states, a trainer gathers its
ranks' (e.g. `torch.distributed.all_gather_object`), and each new slot loads the combined checkpoint:
- same world (seed, slots, block, interleave): each slot takes its own state back and continues exactly;
- a different world (elastic): for each component, the samples the old slots had not consumed in each epoch still
  under way become the base of a remainder plan for that epoch, split over the new slots. Old slots may be in
  different epochs of a component (the one that finished its portion first has started the next); every epoch from
  the earliest to the latest gets a remainder plan, so nothing of any of them is repeated or skipped. The mixture
  counts start afresh: the ratio holds from the resume on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from vlaforge.training.data.component_cursor import World
from vlaforge.training.data.shard_assignment import ALL, PlanSpec, Remainder

STATE_FORMAT = "vlaforge.corpus-stream-state/1"
CHECKPOINT_FORMAT = "vlaforge.corpus-stream-checkpoint/1"
_RUN_FIELDS = {"corpus_sha256": None, "split": None, "one_pass": False, "world": None}
"""What every slot state of one checkpoint shares, with the value a state that lacks the field means."""


class StreamStateError(ValueError):
    """A state or checkpoint that cannot resume this stream; the message says why and what to pass instead."""


def combine_states(states: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """One checkpoint from the states of every slot of one world (in any order)."""
    states = list(states)
    if not states:
        raise StreamStateError("combine_states needs the state of every slot; got none")
    for state in states:
        if state.get("format") != STATE_FORMAT:
            raise StreamStateError(f"not a CorpusStream slot state (format {state.get('format')!r})")
    first = states[0]
    for state in states[1:]:
        for field, default in _RUN_FIELDS.items():
            if state.get(field, default) != first.get(field, default):
                raise StreamStateError(f"slot states disagree on {field}: {first.get(field, default)!r} and "
                                       f"{state.get(field, default)!r}; they come from different runs")
    slots = sorted(state["slot"] for state in states)
    expected = list(range(first["world"]["slots"]))
    if slots != expected:
        missing = sorted(set(expected) - set(slots))
        repeated = sorted({s for s in slots if slots.count(s) > 1})
        raise StreamStateError(f"a checkpoint needs each of the {len(expected)} slots once: missing {missing}, "
                               f"repeated {repeated}")
    return {"format": CHECKPOINT_FORMAT, "slots": sorted(states, key=lambda state: state["slot"])}


def resume(state: dict[str, Any], *, corpus_sha256: str, split: str, world: World, components: list[str],
           one_pass: bool = False) -> tuple[dict[str, dict[str, Any]], dict[str, Any] | None]:
    """Per component, the cursor state this slot starts from, and the mixture state (None: start afresh)."""
    slots = state["slots"] if state.get("format") == CHECKPOINT_FORMAT else [state]
    for slot_state in slots:
        if slot_state.get("format") != STATE_FORMAT:
            raise StreamStateError(f"not a CorpusStream state or checkpoint (format {slot_state.get('format')!r})")
        if slot_state["corpus_sha256"] != corpus_sha256:
            raise StreamStateError("the state was saved for a different corpus manifest (sha256 "
                                   f"{slot_state['corpus_sha256'][:12]}..., this one is {corpus_sha256[:12]}...)")
        if slot_state["split"] != split:
            raise StreamStateError(f"the state was saved for split {slot_state['split']!r}, not {split!r}")
        if slot_state.get("one_pass", False) != one_pass:  # states written before one_pass existed: training
            raise StreamStateError(f"the state was saved by a stream with one_pass={not one_pass}, this one has "
                                   f"one_pass={one_pass}; an evaluation pass and training keep separate states")
        if sorted(slot_state["components"]) != sorted(components):
            raise StreamStateError(f"the state has components {sorted(slot_state['components'])}, the stream "
                                   f"{sorted(components)}")
    if slots[0]["world"] == world.key():
        mine = [s for s in slots if s["slot"] == world.slot]
        if not mine:
            raise StreamStateError(f"the state holds slots {[s['slot'] for s in slots]}, not this stream's slot "
                                   f"{world.slot}; pass the combined checkpoint (combine_states)")
        return dict(mine[0]["components"]), mine[0]["mixture"]
    if len(slots) != slots[0]["world"]["slots"]:
        raise StreamStateError(f"resuming with a different layout ({slots[0]['world']} -> {world.key()}) needs "
                               "every old slot's state: pass combine_states(all states)")
    old = slots[0]["world"]
    return {name: _elastic([s["components"][name] for s in slots], old, world) for name in components}, None


def _elastic(old_states: list[dict[str, Any]], old: dict[str, int], new: World) -> dict[str, Any]:
    """The state a slot of world `new` starts a component from, given every old slot's state of it."""
    epochs = [int(state["epoch"]) for state in old_states]
    remainders = {}
    for state in old_states:
        for epoch, spec in state["plans"].items():
            remainders.setdefault(int(epoch), PlanSpec.from_dict(spec))
    plans = {}
    for epoch in range(min(epochs), max([*epochs, *remainders]) + 1):
        consumed = tuple(ALL if at > epoch else int(state["consumed"]) if at == epoch else 0
                         for at, state in zip(epochs, old_states))
        before = remainders.get(epoch)
        if before is None and not any(consumed):
            continue  # no old slot touched this epoch: the new world's own plan reads all of it
        before = before or PlanSpec(epoch=epoch, **old)
        plans[str(epoch)] = PlanSpec(epoch=epoch, seed=new.seed, slots=new.slots, block=new.block,
                                     interleave=new.interleave, after=Remainder(before, consumed)).as_dict()
    return {"epoch": min(epochs), "consumed": 0, "plans": plans}
