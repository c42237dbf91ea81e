"""Separate processes holding a lock, for tests: a liveness mark
(glimpse.liveness), or an ``flock`` on any file (as a writer of that file does)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_HOLD_MARK = """
import sys, time
from glimpse.liveness import LivenessMarks
assert LivenessMarks(sys.argv[1]).hold(sys.argv[2])
print("ready", flush=True)
time.sleep(600)
"""

_HOLD_LOCK = """
import fcntl, sys, time
handle = open(sys.argv[1], "ab")
fcntl.flock(handle, fcntl.LOCK_EX)
print("ready", flush=True)
time.sleep(600)
"""


def _holder(script: str, *args: str) -> subprocess.Popen[str]:
    """Run ``script`` in a new process; return once it printed "ready" (killed if
    it printed anything else or exited)."""
    proc = subprocess.Popen([sys.executable, "-c", script, *args],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line != "ready\n":
        proc.kill()
        proc.wait(30)
        raise AssertionError(f"lock holder did not start: {line!r}")
    return proc


def hold_mark(directory: Path, node_id: str) -> subprocess.Popen[str]:
    """A process holding ``node_id``'s mark in ``directory``. Kill it (``kill()``
    then ``wait()``) to make that node an exited one."""
    return _holder(_HOLD_MARK, str(directory), node_id)


def hold_lock(path: Path) -> subprocess.Popen[str]:
    """A process holding an exclusive ``flock`` on ``path`` until it is killed."""
    return _holder(_HOLD_LOCK, str(path))


def exited_node(directory: Path, node_id: str) -> None:
    """Leave ``node_id``'s mark as a process killed with SIGKILL leaves it."""
    proc = hold_mark(directory, node_id)
    proc.kill()
    proc.wait(30)
