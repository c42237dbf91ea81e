"""Shared fixtures: a real Glimpse server process over HTTP, and the test services.

``glimpse_server(**options)`` starts ``glimpse-api`` in a subprocess on a free
port with a fresh state directory and the given options (``{"section": {...}}``),
waits until it answers, and stops it at the end of the test.

Services started by ``scripts/test-services.sh`` (PostgreSQL, RabbitMQ) are
found through the environment: ``GLIMPSE_TEST_PG_URL`` and
``GLIMPSE_TEST_RABBIT_URL``. When they are missing the tests that need them
fail (never skip): a missing service is a failure.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

Options = dict[str, dict[str, Any]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_config(path: Path, options: Options) -> Path:
    lines: list[str] = []
    for section, values in options.items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            if isinstance(value, list | tuple):
                if key == "driver":  # MultiStrOpt: one line per value
                    lines.extend(f"{key} = {v}" for v in value)
                    continue
                value = ",".join(str(v) for v in value)
            elif isinstance(value, bool):
                value = "true" if value else "false"
            lines.append(f"{key} = {value}")
        lines.append("")
    path.write_text("\n".join(lines))
    return path


@dataclass
class ServerProcess:
    """A running glimpse-api. ``url`` is its base URL; ``log`` its log file."""

    url: str
    port: int
    state: Path
    config_file: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    options: Options = field(default_factory=dict)

    def client(self, **headers: str) -> httpx.Client:
        """An HTTP client for this server. It asks for JSON error bodies, as
        openstacksdk does (without it errors come as Glance's HTML pages)."""
        return httpx.Client(base_url=self.url, headers={"Accept": "application/json", **headers},
                            timeout=30)

    def start(self, timeout: float = 30.0) -> None:
        stderr = open(self.state / "stderr.log", "ab")  # noqa: SIM115 - owned by the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "glimpse.cli", "--config-file", str(self.config_file)],
            stdout=stderr, stderr=stderr, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"glimpse-api exited with {self.proc.returncode}: "
                                   + self._output_tail())
            try:
                if httpx.get(self.url + "/versions", timeout=1).status_code in (200, 300):
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"glimpse-api did not come up in {timeout:.0f} s: "
                           + self._output_tail())

    def _output_tail(self) -> str:
        """The end of the server's stderr and of its log file (where logging goes)."""
        parts = []
        for path in (self.state / "stderr.log", self.log):
            if path.exists():
                parts.append(f"--- {path.name}:\n{path.read_text(errors='replace')[-3000:]}")
        return "\n".join(parts)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)

    def kill(self) -> None:
        """SIGKILL the whole process group: a crash, no clean shutdown."""
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()


def held_body(release: threading.Event, fill: bytes) -> Iterator[bytes]:
    """A request body of 2 MiB of ``fill`` that sends its first MiB, then waits for
    ``release`` (at most 30 s) before the second: a transfer held open midway."""
    yield fill * (1024 * 1024)
    release.wait(30)
    yield fill * (1024 * 1024)


def server_options(state: Path, port: int, options: Options | None) -> Options:
    merged: Options = {
        "DEFAULT": {"bind_host": "127.0.0.1", "bind_port": port, "state_path": str(state),
                    "log_file": str(state / "glimpse.log")},
    }
    for section, values in (options or {}).items():
        merged.setdefault(section, {}).update(values)
    return merged


def new_server(state: Path, options: Options | None = None) -> ServerProcess:
    """A server (not started) on a free port, its state and configuration in ``state``."""
    port = free_port()
    merged = server_options(state, port, options)
    return ServerProcess(url=f"http://127.0.0.1:{port}", port=port, state=state,
                         config_file=write_config(state / "glimpse-api.conf", merged),
                         log=state / "glimpse.log", options=merged)


@contextmanager
def running_server(state: Path, options: Options | None = None) -> Iterator[ServerProcess]:
    """A started server for a module-scoped fixture; stopped at the end."""
    server = new_server(state, options)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def glimpse_server(tmp_path: Path) -> Iterator[Callable[..., ServerProcess]]:
    """Factory: ``glimpse_server(options=None, start=True) -> ServerProcess``."""
    started: list[ServerProcess] = []

    def make(options: Options | None = None, start: bool = True) -> ServerProcess:
        state = tmp_path / f"server{len(started)}"
        state.mkdir()
        server = new_server(state, options)
        started.append(server)
        if start:
            server.start()
        return server

    yield make
    for server in started:
        server.stop()


def _required_env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(f"{name} is not set: run the suite through scripts/test.sh, which starts "
                    "PostgreSQL and RabbitMQ (a missing service is a failure, not a skip)")
    return value


@pytest.fixture(scope="session")
def pg_url() -> str:
    """URL of the throw-away PostgreSQL cluster (server, not a database)."""
    return _required_env("GLIMPSE_TEST_PG_URL")


@pytest.fixture(scope="session")
def rabbit_url() -> str:
    return _required_env("GLIMPSE_TEST_RABBIT_URL")


@contextmanager
def fresh_pg_database(pg_url: str, template: str | None = None) -> Iterator[str]:
    """A fresh PostgreSQL database (its URL), dropped afterwards: empty, or a copy of
    the database named ``template`` (which nobody may be connected to)."""
    import uuid

    import psycopg

    name = f"glimpse_test_{uuid.uuid4().hex[:12]}"
    admin = (pg_url.rsplit("/", 1)[0] + "/postgres").replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"'
                     + (f' TEMPLATE "{template}"' if template else ""))
    try:
        yield pg_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def pg_database(pg_url: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test; dropped afterwards."""
    with fresh_pg_database(pg_url) as url:
        yield url


def server_per_database(request: pytest.FixtureRequest,
                        tmp_path_factory: pytest.TempPathFactory, name: str,
                        options: Options | None = None) -> Iterator[ServerProcess]:
    """The body of a module-scoped fixture parametrized ``["sqlite", "postgresql"]``:
    one started server for the module on that database (PostgreSQL: a fresh
    database, migrated as ``glimpse-manage db sync`` does)."""
    from glimpse.db import migrate
    from glimpse.db.engine import make_engine

    with contextlib.ExitStack() as stack:
        extra: Options = {section: dict(values) for section, values in (options or {}).items()}
        if request.param == "postgresql":
            url = stack.enter_context(fresh_pg_database(request.getfixturevalue("pg_url")))
            engine = make_engine(url)
            migrate.upgrade(engine)
            engine.dispose()
            extra["database"] = {"connection": url}
        yield stack.enter_context(running_server(
            tmp_path_factory.mktemp(f"{name}-{request.param}"), extra))
