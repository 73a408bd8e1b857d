"""Plans, slot sequences and the mixture schedule: the arithmetic behind "each sample once per epoch" and resumes.

The reference here is brute force: every (shard, index) enumerated and handed out one by one in the order a slot
hands them out, compared with what the compact arithmetic (portions, prefix counts, remainders) says.
"""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlaforge.training.data.mixture_schedule import MixtureEntry, MixtureSchedule
from vlaforge.training.data.shard_assignment import ALL, Plan, PlanSpec, Remainder, hash_order
from vlaforge.training.data.slot_sequence import SlotSequence


def handed_out(plan: Plan, slot: int) -> list[tuple[int, int]]:
    """(shard, index) in the order slot `slot` hands them out, enumerated one by one."""
    pieces, order = plan.sequence(slot)
    indices = [[i for start, stop in p.intervals for i in range(start, stop)] for p in pieces]
    offsets = [0] * len(pieces)
    positions = []
    for piece in order.walk(0):
        positions.append((pieces[piece].shard, indices[piece][offsets[piece]]))
        offsets[piece] += 1
    result = []
    for block in range((order.length + order.block - 1) // order.block):
        start, _ = order.block_bounds(block)
        result += [positions[start + j] for j in order.permutation(block)]
    return result


shard_sizes = st.lists(st.integers(0, 23), min_size=1, max_size=9)
layout = st.tuples(st.integers(1, 5), st.integers(1, 7), st.integers(1, 3))


@settings(max_examples=60, deadline=None)
@given(sizes=shard_sizes, world=layout, epoch=st.integers(0, 3))
def test_portions_partition_every_sample_and_balance_the_slots(sizes, world, epoch):
    slots, block, interleave = world
    plan = Plan(PlanSpec(epoch=epoch, seed=1, slots=slots, block=block, interleave=interleave), "c", sizes)
    per_slot = [handed_out(plan, slot) for slot in range(slots)]
    everything = sorted(itertools.chain.from_iterable(per_slot))
    assert everything == sorted((shard, i) for shard, n in enumerate(sizes) for i in range(n))
    assert max(map(len, per_slot)) - min(map(len, per_slot)) <= 1


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(0, 15), min_size=1, max_size=6), interleave=st.integers(1, 4),
       block=st.integers(1, 9), data=st.data())
def test_prefix_counts_and_consumed_offsets_agree_with_the_walk(sizes, interleave, block, data):
    order = SlotSequence(sizes, interleave=interleave, block=block, key=["k"])
    walked = list(order.walk(0))
    assert sorted(walked) == sorted(i for i, n in enumerate(sizes) for _ in range(n))
    position = data.draw(st.integers(0, order.length))
    assert order.prefix_counts(position) == [walked[:position].count(i) for i in range(len(sizes))]
    assert list(order.walk(position)) == walked[position:]
    consumed = data.draw(st.integers(0, order.length))
    taken = order.consumed_offsets(consumed)
    assert sum(stop - start for intervals in taken for start, stop in intervals) == consumed


def test_interleave_reads_shards_in_turn_and_blocks_shuffle_within_themselves():
    order = SlotSequence([3, 2, 4], interleave=3, block=4, key=["k"])
    assert list(order.walk(0)) == [0, 1, 2, 0, 1, 2, 0, 2, 2]
    assert sorted(order.permutation(0)) == [0, 1, 2, 3] and sorted(order.permutation(2)) == [0]
    assert order.permutation(0) == SlotSequence([3, 2, 4], interleave=3, block=4, key=["k"]).permutation(0)


@settings(max_examples=60, deadline=None)
@given(sizes=shard_sizes, old=layout, new=layout, data=st.data())
def test_a_remainder_plan_delivers_exactly_what_the_old_slots_had_not_consumed(sizes, old, new, data):
    spec = PlanSpec(epoch=2, seed=5, slots=old[0], block=old[1], interleave=old[2])
    plan = Plan(spec, "c", sizes)
    orders = [handed_out(plan, slot) for slot in range(spec.slots)]
    consumed = tuple(data.draw(st.sampled_from([ALL, *range(len(o) + 1)])) for o in orders)
    used = {pair for order, n in zip(orders, consumed) for pair in (order if n == ALL else order[:n])}
    remainder = Plan(PlanSpec(epoch=2, seed=9, slots=new[0], block=new[1], interleave=new[2],
                              after=Remainder(spec, consumed)), "c", sizes)
    delivered = [pair for slot in range(new[0]) for pair in handed_out(remainder, slot)]
    assert sorted(delivered) == sorted(set(delivered))
    assert set(delivered) == {(s, i) for s, n in enumerate(sizes) for i in range(n)} - used


def test_plan_specs_round_trip_through_json_and_name_their_plan():
    inner = PlanSpec(epoch=1, seed=0, slots=4, block=8, interleave=2)
    spec = PlanSpec(epoch=1, seed=0, slots=3, block=8, interleave=2, after=Remainder(inner, (ALL, 3, 0, 7)))
    assert PlanSpec.from_dict(spec.as_dict()) == spec
    assert spec.digest() != inner.digest()


def test_shard_order_depends_on_the_seed_and_epoch_only_through_the_key():
    assert hash_order(50, ["c", 0, 1]) == hash_order(50, ["c", 0, 1])
    assert hash_order(50, ["c", 0, 1]) != hash_order(50, ["c", 0, 2])
    assert sorted(hash_order(50, ["c", 1, 1])) == list(range(50))


@settings(max_examples=40, deadline=None)
@given(weights=st.lists(st.integers(1, 50), min_size=1, max_size=4), vl=st.integers(1, 5), robot=st.integers(1, 9))
def test_every_kind_and_component_stays_within_one_draw_of_its_target(weights, vl, robot):
    total = sum(weights)
    entries = [MixtureEntry(f"r{i}", "robot", w / total) for i, w in enumerate(weights)] + \
        [MixtureEntry("v", "vl", 1.0)]
    schedule = MixtureSchedule({"vl": vl, "robot": robot}, entries)
    counts = dict.fromkeys([e.name for e in entries], 0)
    for draw in range(1, 701):
        name = schedule.peek()
        schedule.advance(name, "vl" if name == "v" else "robot")
        counts[name] += 1
        robot_draws = draw - counts["v"]
        assert abs(counts["v"] - draw * vl / (vl + robot)) <= 1
        for i, w in enumerate(weights):
            assert abs(counts[f"r{i}"] - robot_draws * w / total) <= 1 + 1e-9


def test_a_schedule_resumes_from_its_counts():
    entries = [MixtureEntry("a", "robot", 0.3), MixtureEntry("b", "robot", 0.7), MixtureEntry("v", "vl", 1.0)]
    kinds = {"a": "robot", "b": "robot", "v": "vl"}
    first = MixtureSchedule({"vl": 1, "robot": 6}, entries)
    for _ in range(37):
        first.advance(name := first.peek(), kinds[name])
    second = MixtureSchedule({"vl": 1, "robot": 6}, entries)
    second.load_state_dict(first.state_dict())
    for _ in range(50):
        assert (name := first.peek()) == second.peek()
        first.advance(name, kinds[name])
        second.advance(name, kinds[name])
    with pytest.raises(ValueError, match="components"):
        second.load_state_dict({"kinds": {}, "components": {"a": 1}})
