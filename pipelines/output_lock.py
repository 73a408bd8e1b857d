"""Who may write a dataset directory: one run at a time, and only the run that owns it commits.

A run claims its output before it writes anything (`OutputLock.acquire`): it takes an exclusive `flock` on
`<output>/_lock/run` and holds it for as long as it lives. The kernel drops the lock when the process dies, however
it dies (kill -9 included), so a lock left by a dead run is simply free; `_lock/owner.json` says who holds it (a
fresh token, the host, pid, start time and command): that is what a refused second run prints, and what a run that
takes over an output left by a dead one reports.

Workers can outlive their driver: the Ray workers of a killed driver keep running until Ray notices, and a new run
may own the output by then. So every commit (a shard renamed into place with its commit record, a unit's marker,
its side-table parts and step table) happens inside `CommitGuard.held()`: a shared `flock` on `<output>/_lock/commit`
under which the worker checks that `owner.json` still holds its run's token. A new run writes its token under the
exclusive lock of the same file, so a commit either finished before the takeover (the new run then sees it, or
clears it with `--overwrite`) or sees the new token and is refused (`OutputTakenError`); never in between.

`flock` is exact on a local filesystem and on NFSv4 (where Linux maps it to byte-range locks); on filesystems
without locks, `acquire` fails and says so.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import errno
import fcntl
import json
import logging
import os
import pathlib
import socket
import time
import uuid
from collections.abc import Iterator

from vlaforge.pipelines.atomic_files import atomic_write_bytes

logger = logging.getLogger(__name__)

LOCK_DIR = "_lock"
OWNER_NAME = "owner.json"
_RUN_NAME = "run"
_COMMIT_NAME = "commit"
TAKEOVER_WAIT_S = 60.0
"""How long a new run waits for a commit under way (microseconds, normally) before it gives up on taking over."""


class OutputBusyError(ValueError):
    """Another live run holds the output; the message names it (host, pid, start time, command)."""


class OutputTakenError(RuntimeError):
    """A worker's run no longer owns the output (a newer run took it over): it must commit nothing more."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class LockOwner:
    """The run that holds (or last held) an output, as `owner.json` records it."""

    token: str
    """Unique per run: what workers compare at each commit."""
    host: str
    pid: int
    started: str
    """ISO 8601 UTC."""
    command: str = ""
    """What was run, for the message a refused run prints."""

    def describe(self) -> str:
        command = f" ({self.command})" if self.command else ""
        return f"pid {self.pid} on host {self.host}, started {self.started}{command}"

    @classmethod
    def read(cls, output: pathlib.Path) -> "LockOwner | None":
        """The recorded owner, or None when none is recorded (or the record is unreadable)."""
        try:
            return cls(**json.loads((output / LOCK_DIR / OWNER_NAME).read_text()))
        except (OSError, ValueError, TypeError):
            return None


class OutputLock:
    """The exclusive claim of one run on one output directory (see the module docstring)."""

    def __init__(self, output: pathlib.Path) -> None:
        self.output = pathlib.Path(output)
        self.owner: LockOwner | None = None
        self.previous: LockOwner | None = None
        """The owner recorded by a run that died holding the output, when this run took it over."""
        self._fd: int | None = None

    def acquire(self, command: str = "") -> LockOwner:
        """Claim the output (creating it), or raise `OutputBusyError` naming the live run that holds it."""
        directory = self.output / LOCK_DIR
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / _RUN_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise OSError(error.errno, f"cannot lock {directory / _RUN_NAME} ({error.strerror}): this "
                                           "filesystem may not support file locks; write to a local disk") from error
            holder = LockOwner.read(self.output)
            who = holder.describe() if holder else "a run that has not recorded itself yet"
            raise OutputBusyError(f"{self.output} is being written by another run: {who}. Wait for it to finish "
                                  "(or stop it) and run again; a lock left by a run that died is taken over "
                                  "automatically") from None
        self._fd = fd
        self.previous = LockOwner.read(self.output)
        if self.previous is not None:
            logger.warning("taking over %s from a run that ended without finishing: %s", self.output,
                           self.previous.describe())
        owner = LockOwner(token=uuid.uuid4().hex, host=socket.gethostname(), pid=os.getpid(),
                          started=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                          command=command)
        try:
            with _commit_lock(self.output, exclusive=True):
                atomic_write_bytes(directory / OWNER_NAME, json.dumps(dataclasses.asdict(owner)).encode())
        except BaseException:
            self._close()
            raise
        self.owner = owner
        return owner

    def release(self) -> None:
        """Give the output up: no worker of this run commits after this. Idempotent."""
        if self._fd is None:
            return
        try:
            with _commit_lock(self.output, exclusive=True):
                (self.output / LOCK_DIR / OWNER_NAME).unlink(missing_ok=True)
        except OSError as error:  # the run is ending anyway; the kernel drops the lock with the descriptor
            logger.warning("could not remove %s: %s", self.output / LOCK_DIR / OWNER_NAME, error)
        finally:
            self._close()

    def _close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # drops the flock
            self._fd = None

    def __enter__(self) -> "OutputLock":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()


class CommitGuard:
    """Commits of one run's workers: each happens only while the output's owner is still that run."""

    def __init__(self, output: pathlib.Path, token: str | None) -> None:
        self.output = pathlib.Path(output)
        self.token = token
        """None: an output no run claimed (sample data written in memory, a unit test): commits are unchecked."""

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        """Run the block (a commit) only while this run owns the output; else raise `OutputTakenError`."""
        if self.token is None:
            yield
            return
        with _commit_lock(self.output, exclusive=False):
            owner = LockOwner.read(self.output)
            if owner is None or owner.token != self.token:
                now = f"it now belongs to {owner.describe()}" if owner else "its run has ended"
                raise OutputTakenError(f"{self.output}: this worker's run ({self.token[:8]}) no longer owns the "
                                       f"output ({now}); nothing more is committed")
            yield


@contextlib.contextmanager
def _commit_lock(output: pathlib.Path, *, exclusive: bool) -> Iterator[None]:
    """The lock commits take shared and a takeover takes exclusive. A takeover waits at most `TAKEOVER_WAIT_S` for a
    commit under way (a worker stopped inside one would otherwise block it for ever)."""
    fd = os.open(output / LOCK_DIR / _COMMIT_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        if exclusive:
            deadline = time.monotonic() + TAKEOVER_WAIT_S
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise OutputBusyError(
                            f"{output}: a worker has been inside a commit for {TAKEOVER_WAIT_S:g} s (it holds "
                            f"{output / LOCK_DIR / _COMMIT_NAME}); it is stuck or stopped: end it, then run "
                            "again") from None
                    time.sleep(0.05)
        else:
            fcntl.flock(fd, fcntl.LOCK_SH)
        yield
    finally:
        os.close(fd)
