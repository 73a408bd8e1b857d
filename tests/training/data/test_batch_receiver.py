"""The receiver thread that takes batches off the DataLoader ahead of the trainer: order, the end of a pass, a
worker's error, and stopping while the source still has batches."""

from __future__ import annotations

import itertools
import threading

import pytest

from vlaforge.training.data.batch_receiver import BatchReceiver


def test_items_arrive_in_order_and_a_finite_source_ends_the_loop():
    assert list(BatchReceiver(iter(range(50)), depth=3)) == list(range(50))


def test_the_sources_error_is_raised_where_the_item_would_have_been_taken():
    def source():
        yield 1
        yield 2
        raise RuntimeError("DataLoader worker 0: shard /data/a.tar, sample k7: bad JPEG")

    taken = []
    with pytest.raises(RuntimeError, match="shard /data/a.tar, sample k7") as raised:
        for item in BatchReceiver(source()):
            taken.append(item)
    assert taken == [1, 2] and raised.type is RuntimeError


def test_the_receiver_runs_ahead_by_at_most_its_depth_and_stop_releases_it():
    drawn = []
    endless = (drawn.append(n) or n for n in itertools.count())
    receiver = BatchReceiver(endless, depth=2)
    batches = iter(receiver)
    assert next(batches) == 0
    threading.Event().wait(0.3)
    assert len(drawn) <= 1 + 2 + 1  # the one taken, the queue's 2, one waiting to be put
    receiver.stop()
    assert not receiver.alive


def test_depth_must_be_positive():
    with pytest.raises(ValueError, match="depth must be >= 1, got 0"):
        BatchReceiver(iter(()), depth=0)
