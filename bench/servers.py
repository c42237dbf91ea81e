"""The servers under test for bench/compare_glance.py, and what they cost.

- :class:`GlimpseServer`: ``python -m glimpse.cli`` with a fresh state directory,
  ``[DEFAULT] workers`` and a notification driver (``log``, or ``messagingv2``
  to RabbitMQ). Started and stopped by the harness.
- :class:`GlanceServer`: the reference Glance peer through
  ``/work/shared/peers/glance/run-peer.sh`` on its own ``PEER`` directory and
  port (never the team's shared peer on 9292); its data is wiped first.
- :class:`TreeMonitor`: samples the resident memory of a server's whole process
  tree (psutil, sum of RSS over the root and all its descendants) and its CPU time.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

PEER_SCRIPT = Path(os.environ.get("GLANCE_PEER_SCRIPT",
                                  "/work/shared/peers/glance/run-peer.sh"))
REPO = Path(__file__).resolve().parent.parent


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None,
              log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"server exited with {proc.returncode}: {tail}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status < 500:
                    return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def rabbit_url(given: str | None) -> str:
    """``given``, else the RabbitMQ URL that scripts/test-services.sh exports
    (starting the broker if needed); SystemExit when there is none."""
    if given:
        return given
    out = subprocess.run(["bash", "-c", ". scripts/test-services.sh >/dev/null 2>&1; "
                          "echo $GLIMPSE_TEST_RABBIT_URL"], cwd=REPO, capture_output=True,
                         text=True, check=False)
    url = out.stdout.strip()
    if not url:
        raise SystemExit("no RabbitMQ URL: run '. scripts/test-services.sh' or pass --rabbit-url")
    return url


NOTIFICATION_PRIORITIES = ("audit", "debug", "info", "warn", "error", "critical", "sample")


def purge_notification_queues(url: str, topic: str = "notifications") -> int:
    """Empty the ``<topic>.<priority>`` queues on the broker at ``url`` and return
    how many messages they held. The benches run no consumer: without this the
    queues only grow, run after run (once 386,532 messages and ~1 GB of the
    broker's memory on this machine), and each run starts from a different broker."""
    import amqp
    from kombu import Connection

    purged = 0
    with Connection(url.replace("rabbit://", "amqp://", 1)) as conn:
        channel = conn.channel()
        for priority in NOTIFICATION_PRIORITIES:
            try:
                purged += int(channel.queue_purge(f"{topic}.{priority}") or 0)
            except amqp.exceptions.NotFound:      # never declared: the channel is closed
                channel = conn.channel()
    return purged


class TreeMonitor:
    """Background sampler: peak of the summed RSS of ``root`` and its descendants."""

    def __init__(self, root_pid: int, interval: float = 0.1) -> None:
        self.root = psutil.Process(root_pid)
        self.interval = interval
        self.peak_rss = 0
        self.peak_pss = 0
        self._samples = 0
        self.phase_peaks: dict[str, int] = {}
        self.phase: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="rss-sampler")

    def processes(self) -> list[psutil.Process]:
        try:
            return [self.root, *self.root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def pids(self) -> list[int]:
        return [p.pid for p in self.processes()]

    def rss(self) -> int:
        total = 0
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def pss(self) -> int:
        """Proportional set size summed: pages shared between the processes count once."""
        total = 0
        for proc in self.processes():
            with contextlib.suppress(psutil.Error, AttributeError):
                total += proc.memory_full_info().pss
        return total

    def cpu_seconds(self) -> float:
        """User+system CPU of the live tree (children that exited are not counted)."""
        total = 0.0
        for proc in self.processes():
            with contextlib.suppress(psutil.Error):
                t = proc.cpu_times()
                total += t.user + t.system
        return total

    def set_phase(self, name: str | None) -> None:
        self.phase = name

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self.rss()
            self.peak_rss = max(self.peak_rss, value)
            if self._samples % 5 == 0:  # smaps_rollup is dearer: every 0.5 s
                self.peak_pss = max(self.peak_pss, self.pss())
            self._samples += 1
            if self.phase:
                self.phase_peaks[self.phase] = max(self.phase_peaks.get(self.phase, 0), value)
            self._stop.wait(self.interval)

    def start(self) -> TreeMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)


@dataclass
class Server:
    """Common shape: a base URL, the root pid of its process tree, identity headers."""

    name: str
    url: str = ""
    root_pid: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def worker_pids(self) -> list[int]:
        """The processes that serve requests (children of the root)."""
        try:
            return [p.pid for p in psutil.Process(self.root_pid).children(recursive=True)
                    if "resource_tracker" not in " ".join(p.cmdline())]
        except psutil.Error:
            return []


@dataclass
class GlimpseServer(Server):
    port: int = 0
    workdir: Path = Path("/tmp/glimpse-bench")
    workers: int = 2
    driver: str = "log"
    transport_url: str | None = None
    database: str | None = None
    # False when transport_url names a broker that is meant to be unreachable
    purge_queues: bool = True
    proc: subprocess.Popen[bytes] | None = None

    def config_text(self) -> str:
        lines = ["[DEFAULT]", "bind_host = 127.0.0.1", f"bind_port = {self.port}",
                 f"state_path = {self.workdir / 'state'}",
                 f"log_file = {self.workdir / 'glimpse.log'}",
                 f"workers = {self.workers}", "",
                 "[oslo_messaging_notifications]", f"driver = {self.driver}"]
        if self.transport_url:
            lines.append(f"transport_url = {self.transport_url}")
        if self.database:
            lines += ["", "[database]", f"connection = {self.database}"]
        return "\n".join(lines) + "\n"

    def start(self) -> None:
        if self.transport_url and self.purge_queues:
            purge_notification_queues(self.transport_url)
        if self.workdir.exists():
            subprocess.run(["rm", "-rf", str(self.workdir)], check=True)
        (self.workdir / "state").mkdir(parents=True)
        conf = self.workdir / "glimpse-api.conf"
        conf.write_text(self.config_text())
        err = self.workdir / "stderr.log"
        with err.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "glimpse.cli", "--config-file", str(conf)],
                stdout=out, stderr=out, start_new_session=True, cwd=str(REPO))
        self.url = f"http://127.0.0.1:{self.port}"
        self.root_pid = self.proc.pid
        wait_http(self.url + "/versions", 60, self.proc, err)
        # wait until every worker serves: the supervisor hands connections only to
        # ready workers, so a client connecting earlier (a row's keep-alive
        # connections) would all land on the first one for the whole row
        deadline = time.monotonic() + 30
        while not self._all_workers_serve() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.info.update(config=self.config_text(), workers=self.workers, driver=self.driver)

    def _all_workers_serve(self) -> bool:
        if len(self.worker_pids()) < self.workers:
            return False
        log = self.workdir / "glimpse.log"
        if self.workers <= 1 or not log.exists():
            return self.workers <= 1
        return log.read_text(errors="replace").count(
            "Application startup complete.") >= self.workers

    def outbox_counts(self) -> dict[str, int] | None:
        """Notifications recorded / still undelivered (default SQLite database only);
        read after stop(), so the relay has drained what it could."""
        db = self.workdir / "state" / "glimpse.sqlite"
        if self.database or not db.exists():
            return None
        import sqlite3

        with contextlib.closing(sqlite3.connect(db)) as conn:
            total, pending = conn.execute(
                "SELECT count(*), sum(delivered_at IS NULL) FROM outbox").fetchone()
        return {"recorded": int(total or 0), "undelivered": int(pending or 0)}

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


@dataclass
class GlanceServer(Server):
    port: int = 9393
    peer: Path = Path("/tmp/glance-bench")
    workers: int = 2
    flavor: str = "trusted"

    def _env(self) -> dict[str, str]:
        return dict(os.environ, PEER=str(self.peer), PORT=str(self.port),
                    WORKERS=str(self.workers), FLAVOR=self.flavor)

    def _run(self, action: str, timeout: float = 600) -> str:
        proc = subprocess.run([str(PEER_SCRIPT), action], env=self._env(), capture_output=True,
                              text=True, timeout=timeout, check=False)
        if proc.returncode != 0 and action != "status":
            raise RuntimeError(f"run-peer.sh {action} failed: {proc.stderr[-2000:]}")
        return proc.stdout + proc.stderr

    def start(self) -> None:
        if self.port == 9292 or self.peer == Path("/tmp/glance-peer"):
            raise RuntimeError("refusing to use the team's shared Glance peer "
                               "(port 9292, /tmp/glance-peer); pick another PORT/PEER")
        self._run("reset")  # fresh database and store: same starting point every run
        self._run("start")
        self.url = f"http://127.0.0.1:{self.port}"
        wait_http(self.url + "/healthcheck", 60)
        self.root_pid = int((self.peer / "run" / "glance-api.pid").read_text().strip())
        deadline = time.monotonic() + 30
        while len(self.worker_pids()) < self.workers and time.monotonic() < deadline:
            time.sleep(0.1)
        self.info.update(workers=self.workers, flavor=self.flavor, server="uwsgi",
                         peer=str(self.peer), version=self.version())

    def version(self) -> str:
        py = self.peer / "venv" / "bin" / "python"
        out = subprocess.run([str(py), "-c", "import importlib.metadata as m;"
                              "print(m.version('glance'))"],
                             capture_output=True, text=True, check=False)
        return out.stdout.strip() or "?"

    def stop(self) -> None:
        self._run("stop", timeout=60)
        self._stop_leftovers()

    def _stop_leftovers(self) -> None:
        """Stop processes of the peer's venv still running after ``run-peer.sh stop``,
        which stops the uWSGI master it started. Once a worker outlived it (niced,
        parent init) and would have shared the cores with the next server measured."""
        venv = f"{self.peer / 'venv' / 'bin'}/"
        left = []
        for proc in psutil.process_iter(["cmdline"]):
            cmdline = proc.info["cmdline"] or []
            if any(arg.startswith(venv) for arg in cmdline[:2]):
                left.append(proc)
        for proc in left:
            with contextlib.suppress(psutil.Error):
                proc.terminate()
        _, alive = psutil.wait_procs(left, timeout=5)
        for proc in alive:
            with contextlib.suppress(psutil.Error):
                proc.kill()
        if left:
            print(f"glance: stopped {len(left)} leftover process(es) of {venv}",
                  file=sys.stderr, flush=True)
