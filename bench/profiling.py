"""py-spy sampling of server workers during a benchmark row (``--profile DIR``).

:class:`Profiler` starts one ``py-spy record --format raw`` per worker pid for a
row and, when the row is over, folds the collapsed stacks into the functions
that hold the CPU: "self" (the leaf frame) and "inclusive" (anywhere in the
stack), as percentages of the samples. Profiled runs are slower than plain ones:
their numbers go to the JSON only, never into the comparison table.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^():]+)(?::(?P<line>\d+))?\)$")


def py_spy() -> str | None:
    local = Path(sys.executable).parent / "py-spy"
    return str(local) if local.exists() else shutil.which("py-spy")


def _short(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m.group("file")
    for marker in ("site-packages/", "/src/", "/lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            break
    return f"{m.group('func')} ({path})"


def summarize(raw_files: list[Path], top: int = 15) -> dict[str, Any]:
    """Fold py-spy raw (collapsed) output into self/inclusive shares of the samples."""
    selfc: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    total = 0
    for path in raw_files:
        if not path.exists():
            continue
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count_text = line.rpartition(" ")
            if not stack or not count_text.isdigit():
                continue
            count = int(count_text)
            frames = [_short(f) for f in stack.split(";")]
            # drop the "process ..." / "thread ..." pseudo-frames py-spy may add
            frames = [f for f in frames if not f.startswith(("process ", "thread "))]
            if not frames:
                continue
            total += count
            selfc[frames[-1]] += count
            for f in set(frames):
                incl[f] += count

    def share(counter: Counter[str]) -> list[list[Any]]:
        return [[name, round(100.0 * n / total, 1)] for name, n in counter.most_common(top)]

    return {"samples": total, "self_pct": share(selfc), "inclusive_pct": share(incl)}


class Profiler:
    """Record every worker of a server for one row; ``stop()`` returns the summary."""

    def __init__(self, outdir: Path, label: str, pids: list[int], rate: int = 99) -> None:
        self.outdir = outdir
        self.label = label
        self.pids = pids
        self.rate = rate
        self.procs: list[subprocess.Popen[bytes]] = []
        self.files: list[Path] = []

    def start(self) -> Profiler:
        exe = py_spy()
        if exe is None:
            raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
        self.outdir.mkdir(parents=True, exist_ok=True)
        for pid in self.pids:
            out = self.outdir / f"{self.label}-{pid}.txt"
            self.files.append(out)
            self.procs.append(subprocess.Popen(
                [exe, "record", "--pid", str(pid), "--rate", str(self.rate), "--format", "raw",
                 "--nonblocking", "--output", str(out)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        return self

    def stop(self) -> dict[str, Any]:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)  # py-spy writes its output on SIGINT
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        return summarize(self.files)
