"""Failures of the environment, said in one line: what failed, where, and the fix (the CLI prints it once).

A read-only output, a full disk and Prefect's temporary API server not starting in time are not bugs and not bad
input: a traceback (or three: Prefect logs each failed task and flow run with its own) only hides the one thing a
data engineer needs, the path or service and what to do. `explain` turns such an error into that line;
`QuietRunFailures` keeps Prefect's run loggers from printing the failure the CLI is about to print.
"""

from __future__ import annotations

import errno
import logging
import os
import shutil
from collections.abc import Iterator

PREFECT_TIMEOUT_MESSAGE = "Timed out while attempting to connect to ephemeral Prefect API server"
"""What Prefect 3's `SubprocessASGIServer.start` raises (a RuntimeError) when its server is not healthy in time."""
PREFECT_TIMEOUT_SETTING = "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS"
_PREFECT_RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")
_PREFECT_SERVICE_LOGGERS = ("EventsWorker", "APILogWorker")
"""Prefect's background services log under their class names ("Still processing items" as they drain at exit)."""
_READ_ONLY = {errno.EROFS}
_DENIED = {errno.EACCES, errno.EPERM}
_FULL = {errno.ENOSPC, errno.EDQUOT}
NOT_TRANSIENT = _READ_ONLY | _DENIED | _FULL
"""OSErrors that a retry cannot fix (the flows' tasks do not retry them)."""


def causes(error: BaseException) -> Iterator[BaseException]:
    """`error` and what it wraps: `__cause__` / `__context__`, and Ray's `.cause` (a worker's exception)."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or getattr(error, "cause", None) or error.__context__


def explain(error: BaseException, output: str | None) -> str | None:
    """One line for an environment failure in `error`'s chain, naming the path (`output` when the error has none)
    and the fix; None when it is not one."""
    for cause in causes(error):
        if isinstance(cause, OSError) and cause.errno in NOT_TRANSIENT:
            return _os_problem(cause, output)
        if isinstance(cause, RuntimeError) and PREFECT_TIMEOUT_MESSAGE in str(cause):
            return _prefect_timeout()
    return None


def _os_problem(error: OSError, output: str | None) -> str:
    path = _named_path(error.filename, output)
    if error.errno in _FULL:
        return (f"no space left on the device that holds {path} ({_free(path)} free). Fix: free space there, or "
                "write to another disk with --output; rerun to go on where it stopped (partial shards were removed)")
    if error.errno in _READ_ONLY:
        return (f"cannot write {path}: the filesystem is read-only. Fix: choose a writable --output (or remount "
                "it read-write)")
    return (f"cannot use {path}: permission denied. Fix: choose paths you may read (--input) and write (--output), "
            "or change their permissions")


def _named_path(filename: str | None, output: str | None) -> str:
    """The output directory when the failing file is in it (a shard's temporary name says nothing to a user), else
    the file (an input that cannot be read, say)."""
    if output and (not filename or os.path.abspath(str(filename)).startswith(os.path.abspath(output) + os.sep)):
        return output
    return str(filename or output or "the output")


def _free(path: str) -> str:
    directory = os.path.abspath(path)
    while directory != os.path.dirname(directory) and not os.path.exists(directory):
        directory = os.path.dirname(directory)
    try:
        return f"{shutil.disk_usage(directory).free / 2**20:,.1f} MiB"
    except OSError:
        return "unknown"


def _prefect_timeout() -> str:
    waited = os.environ.get(PREFECT_TIMEOUT_SETTING, "20")
    return (f"Prefect's temporary API server did not start within {waited} s ({PREFECT_TIMEOUT_SETTING}); the "
            f"machine may be loaded. Fix: allow it longer, e.g. {PREFECT_TIMEOUT_SETTING}=120, or start a server "
            "once (`prefect server start`) and point PREFECT_API_URL at it (http://127.0.0.1:4200/api)")


class QuietRunFailures(logging.Filter):
    """Drops Prefect's ERROR records about failed task and flow runs (the CLI prints the failure itself, once), and
    its services' notices while they drain at exit."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.ERROR

    def install(self) -> None:
        for name in _PREFECT_RUN_LOGGERS:
            logging.getLogger(name).addFilter(self)
        for name in _PREFECT_SERVICE_LOGGERS:
            logging.getLogger(name).setLevel(logging.ERROR)
