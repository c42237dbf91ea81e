"""Running the ``openstack`` CLI (python-openstackclient) in tests.

Each run spends ~2 s starting up. :func:`openstack_shell` runs several commands
in one process, through the CLI's own interactive shell (commands on stdin), for
the commands whose exit status is not what a test checks; :func:`openstack` runs
one.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

OPENSTACK = str(Path(sys.executable).with_name("openstack"))


def _line(command: Sequence[str]) -> str:
    """One command as the shell reads it. Its parser drops quotes before it splits
    the line, so arguments holding spaces or quotes cannot be passed: refused."""
    for arg in command:
        if not arg or any(c.isspace() or c in "\"'\\" for c in arg):
            raise ValueError(f"the openstack shell cannot be given {arg!r}: use openstack()")
    return " ".join(command) + "\n"


def openstack(env: Mapping[str, str], *args: str) -> Any:
    """``openstack <args>`` in ``env`` (stdin closed): it must succeed; the JSON it
    printed, or None."""
    proc = subprocess.run([OPENSTACK, *args], capture_output=True, text=True, env=dict(env),
                          timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"openstack {' '.join(args)} failed: {proc.stderr}"
    return json.loads(proc.stdout) if proc.stdout.strip() else None


def openstack_shell(env: Mapping[str, str], *commands: Sequence[str]) -> list[Any]:
    """``commands`` run one after the other by one ``openstack`` process, configured
    by ``env`` alone (the shell would take arguments for commands). Every command
    must succeed: the shell reports a failure on stderr, or on stdout where it is
    not JSON, and goes on (its exit status, 1 at the end of its input, says
    nothing). Returns the JSON documents printed (``-f json``), in order."""
    proc = subprocess.run([OPENSTACK],
                          input="".join(_line(c) for c in commands),
                          capture_output=True, text=True, env=dict(env), timeout=300)
    assert not proc.stderr.strip(), (commands, proc.stderr)
    decoder, text, documents = json.JSONDecoder(), proc.stdout, []
    position = 0
    while rest := text[position:].strip():
        position = text.index(rest[0], position)
        try:
            document, position = decoder.raw_decode(text, position)
        except ValueError:
            raise AssertionError(f"not JSON in the output of {commands}: {rest[:2000]}") from None
        documents.append(document)
    return documents
