"""The order in which one slot reads its portion: a few shards interleaved, then shuffled in blocks.

The portion's pieces are taken in groups of `interleave`; within a group the pieces are read round-robin (one
sample of each in turn, skipping pieces that ran out), so consecutive samples come from different shards. That
*position* order is then shuffled in blocks of `block` positions, each block by its own keyed permutation.

The trade-off, against the usual streaming shuffle buffer (a reservoir that is refilled as samples leave): a block
is a fixed window of the position order, so "how far a slot got" is one integer, a resume re-reads at most one block
(the block holding the next position), and the set of samples a slot consumed is computable from that integer
alone, which is what an elastic resume needs. Memory is bounded the same way (one block of samples per component),
and mixing is the same within a block; samples never move across blocks, so neighbours in a block come from at most
`interleave` shards (plus a group boundary). Larger `interleave` decorrelates consecutive samples (robot shards hold
whole episodes) at the cost of that many shards open at once.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from vlaforge.pipelines.shards.reader import Interval


def merge_intervals(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, disjoint, non-empty intervals covering the same integers."""
    merged: list[list[int]] = []
    for start, stop in sorted(intervals):
        if start >= stop:
            continue
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], stop)
        else:
            merged.append([start, stop])
    return [(start, stop) for start, stop in merged]


def complement(intervals: Sequence[Interval], size: int) -> list[Interval]:
    """[0, size) minus `intervals` (sorted, disjoint)."""
    left, cursor = [], 0
    for start, stop in intervals:
        if start > cursor:
            left.append((cursor, start))
        cursor = max(cursor, stop)
    if cursor < size:
        left.append((cursor, size))
    return left


def _round_of(sizes: Sequence[int], position: int) -> tuple[int, int]:
    """Round-robin over pieces of `sizes`: the round holding `position`, and how many of that round came before."""
    low, high = 0, max(sizes, default=0)
    while low < high:  # the largest round r whose earlier rounds end at or before `position`
        middle = (low + high + 1) // 2
        if sum(min(size, middle) for size in sizes) <= position:
            low = middle
        else:
            high = middle - 1
    return low, position - sum(min(size, low) for size in sizes)


class SlotSequence:
    """Positions 0..length-1 of one slot's portion (pieces of `sizes` samples): which piece each position reads,
    and the block permutations that turn positions into the order samples are handed out."""

    def __init__(self, sizes: Sequence[int], *, interleave: int, block: int, key: Any) -> None:
        if interleave < 1 or block < 1:
            raise ValueError(f"interleave and block must be >= 1, got {interleave} and {block}")
        self.sizes = list(sizes)
        self.interleave = interleave
        self.block = block
        self._key = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).digest()[:32]
        self._group_starts = [0]
        for first in range(0, len(self.sizes), interleave):
            self._group_starts.append(self._group_starts[-1] + sum(self.sizes[first:first + interleave]))
        self.length = self._group_starts[-1]

    def prefix_counts(self, position: int) -> list[int]:
        """Per piece, how many of its samples come before `position` in position order."""
        counts = []
        for group, first in enumerate(range(0, len(self.sizes), self.interleave)):
            sizes = self.sizes[first:first + self.interleave]
            start, end = self._group_starts[group], self._group_starts[group + 1]
            if position >= end:
                counts += sizes
            elif position <= start:
                counts += [0] * len(sizes)
            else:
                round_, extra = _round_of(sizes, position - start)
                eligible = [i for i, size in enumerate(sizes) if size > round_][:extra]
                counts += [min(size, round_) + (i in eligible) for i, size in enumerate(sizes)]
        return counts

    def walk(self, position: int) -> Iterator[int]:
        """The piece read at each position from `position` to the end."""
        for group, first in enumerate(range(0, len(self.sizes), self.interleave)):
            if position >= self._group_starts[group + 1]:
                continue
            sizes = self.sizes[first:first + self.interleave]
            round_, skip = _round_of(sizes, max(position - self._group_starts[group], 0))
            while True:
                eligible = [first + i for i, size in enumerate(sizes) if size > round_]
                if not eligible:
                    break
                yield from eligible[skip:]
                skip, round_ = 0, round_ + 1

    def block_bounds(self, index: int) -> tuple[int, int]:
        return index * self.block, min((index + 1) * self.block, self.length)

    def permutation(self, index: int) -> list[int]:
        """Block `index`'s hand-out order, as offsets into the block."""
        start, stop = self.block_bounds(index)
        salt = self._key + index.to_bytes(8, "little")
        digest = hashlib.blake2b
        return sorted(range(stop - start),
                      key=lambda j: digest(j.to_bytes(8, "little"), key=salt, digest_size=8).digest())

    def consumed_offsets(self, consumed: int) -> list[list[Interval]]:
        """Per piece, the offsets (intervals) handed out once `consumed` samples of the sequence were."""
        if consumed == -1 or consumed >= self.length:
            return [[(0, size)] for size in self.sizes]
        index = consumed // self.block
        start, stop = self.block_bounds(index)
        counts = self.prefix_counts(start)
        taken: list[list[Interval]] = [[(0, count)] for count in counts]
        if consumed > start:
            offsets = list(counts)
            located = []
            for piece in itertools.islice(self.walk(start), stop - start):
                located.append((piece, offsets[piece]))
                offsets[piece] += 1
            for j in self.permutation(index)[:consumed - start]:
                piece, offset = located[j]
                taken[piece].append((offset, offset + 1))
        return [merge_intervals(intervals) for intervals in taken]
