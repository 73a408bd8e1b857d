"""SHA-256 of a file being written, computed on a helper thread that reads the written bytes back.

A shard's hash costs about as much CPU as writing it: on a core with SHA extensions OpenSSL hashes ~1.7 GB/s,
while the page cache takes writes at ~3 GB/s. `hashlib` and `os.preadv` release the GIL for the time they take,
so a helper thread hashing what the writer has already written runs beside the Python that builds the next
samples. Reading back from the page cache costs the helper a copy into one reused buffer, and spares the writer
from joining its pieces into fresh chunk buffers to hand over (whose page faults cost more than the copy).

The helper takes the GIL three times per `written()` call, and behind a busy Python thread each take can wait a
switch interval (5 ms): so call `written()` per few megabytes, not per sample.
"""

from __future__ import annotations

import hashlib
import os
import queue
import threading

READ_SIZE = 4 * 2**20
"""Bytes per read-back (the helper's one buffer)."""
_DONE = -1


class WrittenFileSha256:
    """The SHA-256 of the first bytes of the file open as `fd`, up to the offset last passed to `written()`.

    `written(end)` says that bytes [0, end) are in the file and returns at once; `hexdigest()` waits for the helper
    to hash them and returns the hash. The caller keeps `fd` open until then.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._digest = hashlib.sha256()
        self._hashed = 0
        self._ends: queue.SimpleQueue[int] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._result: str | None = None
        self._thread = threading.Thread(target=self._run, name="shard-sha256", daemon=True)
        self._thread.start()

    def written(self, end: int) -> None:
        if self._result is not None:
            raise RuntimeError("WrittenFileSha256.written() after hexdigest()")
        self._ends.put(end)

    def hexdigest(self) -> str:
        """The hash of bytes [0, the last `written()` end); the helper thread has ended when this returns."""
        if self._result is None:
            self._ends.put(_DONE)
            self._thread.join()
            if self._error is not None:
                raise OSError(f"hashing the written file failed: {self._error}") from self._error
            self._result = self._digest.hexdigest()
        return self._result

    def close(self) -> None:
        """Stop the helper without needing the hash (an aborted file)."""
        if self._result is None:
            self._ends.put(_DONE)
            self._thread.join()
            self._result = ""

    def _run(self) -> None:
        buffer = memoryview(bytearray(READ_SIZE))
        try:
            while (end := self._ends.get()) != _DONE:
                self._hash_until(end, buffer)
        except OSError as error:  # reported by hexdigest(); drain so that no caller ever blocks on a dead helper
            self._error = error
            while self._ends.get() != _DONE:
                pass

    def _hash_until(self, end: int, buffer: memoryview) -> None:
        while self._hashed < end:
            size = os.preadv(self._fd, [buffer[: min(READ_SIZE, end - self._hashed)]], self._hashed)
            if size == 0:
                raise OSError(f"the file ends at byte {self._hashed}, before the {end} bytes said to be written")
            self._digest.update(buffer[:size])
            self._hashed += size
