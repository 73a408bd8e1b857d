"""`BatchReceiver`: a thread in the trainer's process that takes the DataLoader's batches off its worker queue
ahead of the trainer.

Taking a batch from a DataLoader worker costs the taking thread a few ms whatever the batch's size: reading the
pipe, unpickling, the DataLoader's bookkeeping and sending the worker its next request. Done in the training loop,
that time is data wait on every step, even when the worker finished the batch long ago (measured on a 30 ms step-2
step of the tiny model: 4 ms). In this thread it overlaps the step, which spends its time in torch operations (or
waiting on a GPU) with the GIL released. The trainer then takes a ready batch in microseconds.

The receiver holds at most `depth` batches beyond what the DataLoader prefetches. It only moves messages: the
loader applies a batch's bookkeeping (resume records) when the trainer takes it, so batches waiting here are not
consumed and a checkpoint taken meanwhile resumes exactly. A worker's exception reaches the trainer when it takes
the batch it would have had, as the same exception object.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
from collections.abc import Iterator
from typing import Generic, TypeVar

ItemT = TypeVar("ItemT")

_END = object()
"""Put after the last item of a finite iteration (an evaluation pass)."""
_POLL_S = 0.1
"""How often a thread waiting to hand over an item checks whether it was stopped."""


@dataclasses.dataclass(frozen=True)
class _Failure:
    error: BaseException


class BatchReceiver(Generic[ItemT]):
    """Iterates `source` in a daemon thread; iterating the receiver yields its items in order."""

    def __init__(self, source: Iterator[ItemT], *, depth: int = 2, name: str = "batch-receiver") -> None:
        if depth < 1:
            raise ValueError(f"BatchReceiver depth must be >= 1, got {depth}")
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._receive, args=(source,), name=name, daemon=True)
        self._thread.start()

    def __iter__(self) -> Iterator[ItemT]:
        while True:
            item = self._queue.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item

    def stop(self, timeout: float = 5.0) -> None:
        """Stop taking items and wait up to `timeout` s for the thread (it may be inside `next(source)`, which
        returns when a worker delivers or the source is shut down); idempotent."""
        self._stopped.set()
        while True:  # free a thread blocked on a full queue at once
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _receive(self, source: Iterator[ItemT]) -> None:
        try:
            for item in source:
                if not self._hand_over(item):
                    return
            self._hand_over(_END)
        except BaseException as error:  # handed to the trainer, which raises it where it takes the batch
            self._hand_over(_Failure(error))

    def _hand_over(self, item: object) -> bool:
        while not self._stopped.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False
