"""A separate process holding a liveness mark (glimpse.liveness), for tests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_HOLDER = """
import sys, time
from glimpse.liveness import LivenessMarks
assert LivenessMarks(sys.argv[1]).hold(sys.argv[2])
print("ready", flush=True)
time.sleep(600)
"""


def hold_mark(directory: Path, node_id: str) -> subprocess.Popen[str]:
    """Start a process that holds ``node_id``'s mark in ``directory``; returns once
    it does. Kill it (``kill()`` then ``wait()``) to make that node an exited one."""
    proc = subprocess.Popen([sys.executable, "-c", _HOLDER, str(directory), node_id],
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if line != "ready\n":
        proc.kill()
        proc.wait(30)
        raise AssertionError(f"mark holder did not start: {line!r}")
    return proc


def exited_node(directory: Path, node_id: str) -> None:
    """Leave ``node_id``'s mark as a process killed with SIGKILL leaves it."""
    proc = hold_mark(directory, node_id)
    proc.kill()
    proc.wait(30)
