"""glimpse-api's process model, in fresh interpreters: what the supervisor and a
worker import (memory, issue 6), and the supervisor's signal and restart rules.
The real server over a socket is tested in tests/functional/test_cli.py."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env={**os.environ, **env})


def test_supervisor_imports_no_server_stack(tmp_path: Path) -> None:
    """The supervisor (glimpse.cli + glimpse.supervisor, with its log file set up)
    loads none of the libraries the workers use: they would stay resident for its
    whole life."""
    result = _python(
        "import sys, json, glimpse.cli, glimpse.supervisor;"
        "glimpse.cli.setup_logging(glimpse.cli.ServeSettings("
        f"'127.0.0.1', 9292, 2, {str(tmp_path / 'glimpse.log')!r}, False));"
        "print(json.dumps(sorted(m for m in ('oslo_config', 'sqlalchemy', 'uvicorn',"
        " 'starlette', 'alembic', 'multiprocessing', 'asyncio', 'kombu', 'glimpse.config',"
        " 'glimpse.notifications') if m in sys.modules)))")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


@pytest.fixture
def prepared_args(tmp_path: Path) -> str:
    """GLIMPSE_CONFIG_ARGS of a configuration (SQLite, log driver) whose schema
    is created, as the parent process leaves it for the workers."""
    conf = tmp_path / "glimpse-api.conf"
    conf.write_text(f"[DEFAULT]\nstate_path = {tmp_path / 'state'}\n"
                    f"log_file = {tmp_path / 'glimpse.log'}\n"
                    "[oslo_messaging_notifications]\ndriver = log\n")
    args = json.dumps(["--config-file", str(conf)])
    prepared = _python(f"from glimpse.cli import prepare; prepare({args})")
    assert prepared.returncode == 0, prepared.stderr
    return args


def test_worker_app_does_not_import_tools_it_does_not_use(prepared_args: str) -> None:
    """A worker's application (log driver, noauth) loads no httpx (only a
    web-download needs it), no Alembic (the schema is checked before the
    workers start), no keystonemiddleware (only auth_strategy = keystone)."""
    args = prepared_args
    result = _python(
        "import sys, json; from glimpse.worker import create_worker_app; create_worker_app();"
        "print(json.dumps(sorted(m for m in ('httpx', 'alembic', 'mako', 'keystonemiddleware',"
        " 'multiprocessing', 'sqlalchemy.orm') if m in sys.modules)))",
        GLIMPSE_CONFIG_ARGS=args)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == []


def test_worker_app_leaves_its_startup_objects_out_of_garbage_collection(
        prepared_args: str) -> None:
    """The modules, configuration and app a worker builds are frozen: full
    collections while it serves do not walk them (they were the p99 pauses)."""
    result = _python(
        "import gc, json; from glimpse.worker import create_worker_app;"
        "before = gc.get_freeze_count(); app = create_worker_app();"
        "print(json.dumps([before, gc.get_freeze_count(), gc.is_tracked(app),"
        " any(o is app for g in (0, 1, 2) for o in gc.get_objects(g))]))",
        GLIMPSE_CONFIG_ARGS=prepared_args)
    assert result.returncode == 0, result.stderr
    before, after, tracked, in_a_generation = json.loads(result.stdout.splitlines()[-1])
    assert before == 0 and after > 10_000
    assert tracked and not in_a_generation


def test_sigterm_before_uvicorn_handles_signals_still_stops_the_server(
        prepared_args: str) -> None:
    """A worker told to stop while it is still starting (e.g. replaced by a
    SIGHUP right away) stops once started, instead of serving on forever."""
    code = """
import json, os, signal
import glimpse.cli as cli
import glimpse.worker as worker
worker.import_uvicorn_lean()
from uvicorn.server import Server
run = Server.run
def early_sigterm(self, sockets=None):
    os.kill(os.getpid(), signal.SIGTERM)   # uvicorn has no handler yet
    return run(self, sockets=sockets)
Server.run = early_sigterm
started, received = worker.serve(cli.ServeSettings("127.0.0.1", 0, 1, None, False))
print(json.dumps([started, received]))
"""
    result = _python(code, GLIMPSE_CONFIG_ARGS=prepared_args)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.splitlines()[-1]) == [True, [int(signal.SIGTERM)]]


def test_stop_timeout_outlasts_a_clean_stop_with_the_configured_drain() -> None:
    """A worker is killed only after uvicorn's grace, the executor's and the
    relay's drains (three drain timeouts) and a margin: a longer drain_timeout
    is never cut short."""
    from glimpse import config
    from glimpse.cli import GRACEFUL_SHUTDOWN, ServeSettings

    conf = config.load([])
    conf.set_override("drain_timeout", 40.0, group="outbox")
    settings = ServeSettings(**json.loads(ServeSettings.from_conf(conf).to_json()))
    assert settings.stop_timeout > GRACEFUL_SHUTDOWN + 3 * 40.0
    conf.clear_override("drain_timeout", group="outbox")
    assert ServeSettings.from_conf(conf).stop_timeout < settings.stop_timeout


# A supervisor over a dummy worker: each worker appends "<pid> <event>" lines to
# a file; behaviour is chosen per start by files in the directory.
SUPERVISED = """
import os, signal, socket, sys, time
from pathlib import Path
import glimpse.supervisor as supervisor
from glimpse.supervisor import PING, PONG, READY, STARTUP_FAILURE, Supervisor

work = Path(sys.argv[1])

def event(what):
    with open(work / "events", "a") as f:
        f.write(f"{os.getpid()} {what}\\n")

def serve(channel):
    event("start")
    if (work / "fail-start").exists():
        return STARTUP_FAILURE
    try:
        (work / "die-once").unlink()   # only one worker wins the unlink
        return 7
    except FileNotFoundError:
        pass
    try:
        (work / "hang-once").unlink()   # this worker will not answer pings
        hang = True
    except FileNotFoundError:
        hang = False
    try:
        (work / "ignore-term-once").unlink()   # this worker will not stop on SIGTERM
        on_term = lambda *_: event("ignored-term")
    except FileNotFoundError:
        on_term = lambda *_: stop.append(1)
    stop = []
    signal.signal(signal.SIGTERM, on_term)
    channel.send(READY)
    channel.settimeout(0.05)
    while not stop:
        try:
            message, fds, _, _ = socket.recv_fds(channel, 16, 4)
        except (TimeoutError, InterruptedError):
            continue
        if not message and not fds:
            event("orphaned")
            return 0
        if message == PING and not hang:
            channel.send(PONG)
        for fd in fds:   # a handed-over connection: answer with our pid
            with socket.socket(fileno=fd) as conn:
                conn.sendall(str(os.getpid()).encode())
    event("stop")
    return 0

supervisor.HEALTHCHECK_INTERVAL, supervisor.HEALTHCHECK_TIMEOUT = 0.1, 1.0
sock = socket.socket()
sock.bind(("127.0.0.1", 0))
sock.listen(16)
(work / "port").write_text(str(sock.getsockname()[1]))
sys.exit(Supervisor(sock, 2, serve, stop_timeout=1.5).run())
"""


def _events(work: Path) -> list[tuple[int, str]]:
    path = work / "events"
    if not path.exists():
        return []
    return [(int(p), e) for p, e in (line.split() for line in path.read_text().splitlines())]


def _wait(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"gave up waiting for {what}")


def _served_by(work: Path, connections: int) -> list[int]:
    """Open ``connections`` at once, then read which worker answered each."""
    port = int((work / "port").read_text())
    socks = [socket.create_connection(("127.0.0.1", port), timeout=10)
             for _ in range(connections)]
    pids = []
    for sock in socks:
        with sock:
            pids.append(int(sock.recv(64)))
    return pids


def _ready(work: Path, starts: int) -> Callable[[], bool]:
    return lambda: (work / "port").exists() and len(
        [e for _, e in _events(work) if e == "start"]) >= starts


@pytest.fixture
def supervised(tmp_path: Path) -> Callable[..., subprocess.Popen[bytes]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(*flags: str) -> subprocess.Popen[bytes]:
        for flag in flags:
            (tmp_path / flag).touch()
        proc = subprocess.Popen([sys.executable, "-c", SUPERVISED, str(tmp_path)], cwd=REPO,
                                start_new_session=True)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _stop_and_check_one_was_replaced(proc: subprocess.Popen[bytes], work: Path,
                                     why: str) -> None:
    """SIGTERM: a clean exit; three workers started, the two live ones stopped."""
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0
    events = _events(work)
    started = [p for p, e in events if e == "start"]
    stopped = [p for p, e in events if e == "stop"]
    assert len(started) == 3
    assert len(stopped) == 2 and set(stopped) < set(started), why


def test_dead_worker_is_replaced_and_sigterm_stops_all(
        tmp_path: Path, supervised: Callable[..., subprocess.Popen[bytes]]) -> None:
    proc = supervised("die-once")
    _wait(lambda: len(_events(tmp_path)) == 3, "two workers and one replacement")
    _stop_and_check_one_was_replaced(proc, tmp_path, "the live two stop cleanly")


def test_connections_are_handed_to_the_workers_in_turn(
        tmp_path: Path, supervised: Callable[..., subprocess.Popen[bytes]]) -> None:
    """Four connections that arrive together go two to each worker (a shared
    listening socket let one worker take all four in about a third of the runs)."""
    proc = supervised()
    _wait(_ready(tmp_path, 2), "two workers")
    time.sleep(0.2)   # both reported ready
    workers = {p for p, e in _events(tmp_path) if e == "start"}
    for _ in range(5):
        served = _served_by(tmp_path, 4)
        assert set(served) == workers
        assert sorted(served.count(pid) for pid in workers) == [2, 2]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_a_worker_that_stops_answering_pings_is_killed_and_replaced(
        tmp_path: Path, supervised: Callable[..., subprocess.Popen[bytes]]) -> None:
    proc = supervised("hang-once")
    _wait(_ready(tmp_path, 3), "two workers and the replacement of the hung one")
    time.sleep(1.5)   # the others keep answering: no further kill
    _stop_and_check_one_was_replaced(proc, tmp_path, "the hung one was killed")


def test_workers_stop_when_the_supervisor_dies(
        tmp_path: Path, supervised: Callable[..., subprocess.Popen[bytes]]) -> None:
    """SIGKILL of the supervisor closes the channels: the workers do not linger."""
    proc = supervised()
    _wait(_ready(tmp_path, 2), "two workers")
    time.sleep(0.2)
    proc.kill()
    proc.wait()
    _wait(lambda: len([e for _, e in _events(tmp_path) if e == "orphaned"]) == 2,
          "both workers to see EOF on their channel")


def test_sighup_replaces_every_worker(
        tmp_path: Path, supervised: Callable[..., subprocess.Popen[bytes]]) -> None:
    proc = supervised()
    _wait(lambda: len(_events(tmp_path)) == 2, "two workers")
    first = {p for p, _ in _events(tmp_path)}
    proc.send_signal(signal.SIGHUP)
    _wait(lambda: len([e for _, e in _events(tmp_path) if e == "stop"]) == 2,
          "the old workers to stop")
    _wait(lambda: len([e for _, e in _events(tmp_path) if e == "start"]) == 4,
          "two new workers")
    time.sleep(0.3)   # a wrongly restarted retiree would show up as a 5th start
    events = _events(tmp_path)
    assert {p for p, e in events if e == "stop"} == first
    assert len([e for _, e in events if e == "start"]) == 4
    fresh = {p for p, e in events if e == "start"} - first
    assert set(_served_by(tmp_path, 4)) == fresh, "only the new workers get connections"
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 0


def _alive(pid: int) -> bool:
    """Running (a zombie left for its parent to reap counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_worker_that_ignores_sigterm_is_killed_and_the_stop_completes(
        tmp_path: Path, supervised: Callable[..., subprocess.Popen[bytes]]) -> None:
    proc = supervised("ignore-term-once")
    _wait(_ready(tmp_path, 2), "two workers")
    workers = {p for p, e in _events(tmp_path) if e == "start"}
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0, "the supervisor does not wait forever for the stuck worker"
    events = _events(tmp_path)
    (stuck,) = {p for p, e in events if e == "ignored-term"}
    assert {p for p, e in events if e == "stop"} == workers - {stuck}
    assert not _alive(stuck), "killed, not left behind"


def test_retired_worker_that_ignores_sigterm_is_killed(
        tmp_path: Path, supervised: Callable[..., subprocess.Popen[bytes]]) -> None:
    proc = supervised("ignore-term-once")
    _wait(_ready(tmp_path, 2), "two workers")
    proc.send_signal(signal.SIGHUP)
    _wait(lambda: any(e == "ignored-term" for _, e in _events(tmp_path)), "a retired worker")
    (stuck,) = {p for p, e in _events(tmp_path) if e == "ignored-term"}
    _wait(lambda: not _alive(stuck), "the retired worker to be killed")
    assert proc.poll() is None, "the service goes on"
    assert len([e for _, e in _events(tmp_path) if e == "start"]) == 4, "not replaced again"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0


def test_worker_startup_failure_stops_the_supervisor(
        tmp_path: Path, supervised: Callable[..., subprocess.Popen[bytes]]) -> None:
    proc = supervised("fail-start")
    assert proc.wait(30) == 1
    assert 1 <= len(_events(tmp_path)) <= 2, "no restart loop"


@pytest.mark.parametrize(("argument", "status", "shown"), [
    ("--help", 0, "[--config-file PATH]"), ("--no-such-option", 2, "unrecognized arguments")])
def test_help_and_bad_arguments_exit_cleanly(argument: str, status: int, shown: str) -> None:
    result = subprocess.run([sys.executable, "-m", "glimpse.cli", argument],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == status
    assert shown in result.stdout + result.stderr
    assert "Traceback" not in result.stderr
