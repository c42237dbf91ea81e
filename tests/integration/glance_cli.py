"""Running python-glanceclient's ``glance`` CLI against a test server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

GLANCE = str(Path(sys.executable).with_name("glance"))


def run_glance(server: Any, *args: str) -> subprocess.CompletedProcess[str]:
    """``glance --os-image-url <server> ... args`` with no OS_* settings and stdin
    closed (glanceclient reads image data from any open stdin that is not a tty,
    /dev/null included)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OS_")}
    return subprocess.run(
        [GLANCE, "--os-image-url", server.url, "--os-auth-token", "unused", *args],
        capture_output=True, text=True, env=env, timeout=120,
        preexec_fn=lambda: os.close(0))


def glance(server: Any, *args: str) -> str:
    """Run the CLI; return stdout, failing the test with its stderr."""
    proc = run_glance(server, *args)
    assert proc.returncode == 0, f"glance {' '.join(args)} failed: {proc.stderr}"
    return proc.stdout


def table(output: str) -> dict[str, str]:
    """Parse glanceclient's two-column 'Property | Value' table."""
    rows: dict[str, str] = {}
    for line in output.splitlines():
        if line.startswith("|") and not line.startswith("| Property"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            if len(cells) == 2:
                rows[cells[0]] = cells[1]
    return rows
