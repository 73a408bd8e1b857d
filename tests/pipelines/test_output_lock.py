"""One run at a time per output, held by a real process: a second run is refused naming the holder; a holder killed
with kill -9 leaves the output free, and the run that takes it over says whose it was; a worker of a run that lost
the output commits nothing."""

import os
import signal
import socket
import subprocess
import sys

import pytest

from vlaforge.pipelines.output_lock import CommitGuard, LockOwner, OutputBusyError, OutputLock, OutputTakenError

HOLDER = """
import sys, time
from vlaforge.pipelines.output_lock import OutputLock
lock = OutputLock(sys.argv[1])
lock.acquire("holder-under-test")
print("held", flush=True)
time.sleep(600)
"""


@pytest.fixture
def holder(tmp_path):
    """A separate process holding the output's lock until it is killed."""
    output = tmp_path / "out"
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(output)], stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    yield output, process
    if process.poll() is None:
        process.kill()
        process.wait()


def test_a_second_run_is_refused_naming_the_live_holder(holder):
    output, process = holder
    with pytest.raises(OutputBusyError) as refused:
        OutputLock(output).acquire("second")
    message = str(refused.value)
    assert f"pid {process.pid} on host {socket.gethostname()}" in message
    assert "started 20" in message and "holder-under-test" in message


def test_a_lock_left_by_a_killed_run_is_taken_over(holder, caplog):
    output, process = holder
    dead = LockOwner.read(output)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert LockOwner.read(output) == dead  # kill -9 leaves the record: nothing released it

    with caplog.at_level("WARNING"), OutputLock(output) as lock:
        owner = lock.acquire("new run")
        assert lock.previous == dead
        assert owner.token != dead.token and owner.pid == os.getpid()
        assert f"pid {dead.pid}" in caplog.text and "ended without finishing" in caplog.text
    assert LockOwner.read(output) is None  # a run that ends releases the output and its record


def test_a_worker_of_a_run_that_lost_the_output_commits_nothing(tmp_path):
    output = tmp_path / "out"
    first = OutputLock(output)
    token = first.acquire("first").token
    guard = CommitGuard(output, token)
    with guard.held():
        (output / "committed-by-first").touch()
    first.release()  # the run ended (or died, and a new run took the output over)

    with pytest.raises(OutputTakenError, match="no longer owns the output"):
        with guard.held():
            (output / "late").touch()
    with OutputLock(output) as second:
        second.acquire("second")
        with pytest.raises(OutputTakenError, match="it now belongs to pid"):
            with guard.held():
                (output / "late").touch()
        with CommitGuard(output, second.owner.token).held():
            (output / "committed-by-second").touch()
    assert sorted(p.name for p in output.iterdir() if p.name != "_lock") == ["committed-by-first",
                                                                            "committed-by-second"]


def test_a_takeover_waits_for_a_commit_under_way(tmp_path, monkeypatch):
    """A worker inside a commit holds the commit lock shared: the new run's token change waits for it, and gives up
    (saying why) on one that never ends."""
    from vlaforge.pipelines import output_lock

    output = tmp_path / "out"
    first = OutputLock(output)
    guard = CommitGuard(output, first.acquire("first").token)
    first.release()
    monkeypatch.setattr(output_lock, "TAKEOVER_WAIT_S", 0.3)
    # A stand-in commit under way: a real second process holding the commit lock shared.
    script = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR); fcntl.flock(fd, fcntl.LOCK_SH); "
              "print('in', flush=True); time.sleep(600)")
    inside = subprocess.Popen([sys.executable, "-c", script, str(output / "_lock" / "commit")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert inside.stdout.readline().strip() == "in"
        with pytest.raises(OutputBusyError, match="inside a commit"):
            OutputLock(output).acquire("second")
    finally:
        inside.kill()
        inside.wait()
    with OutputLock(output) as lock:
        assert lock.acquire("third").token != guard.token
