"""One API worker process: the uvicorn configuration, the app factory and serving.

Runs in each process that serves requests: a worker forked by the supervisor
(``[DEFAULT] workers`` > 1) or ``glimpse-api`` itself with ``workers = 1``.
:func:`serve` blocks until SIGTERM/SIGINT, then uvicorn shuts down gracefully
(open requests get ``GRACEFUL_SHUTDOWN`` seconds, then the app's lifespan stops
the background loops). The configuration arguments come from the environment
variable ``GLIMPSE_CONFIG_ARGS`` (set by :func:`glimpse.cli.api_main`).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
from typing import TYPE_CHECKING, Any

from glimpse.cli import CONFIG_ENV, GRACEFUL_SHUTDOWN, ServeSettings, setup_logging

if TYPE_CHECKING:
    from starlette.applications import Starlette
    from uvicorn import Config
    from uvicorn.server import Server


def create_worker_app() -> Starlette:
    """uvicorn factory, run in every worker process: same config, same logging.
    The schema was migrated/checked by the parent (``prepare``) just before."""
    import_uvicorn_lean()   # the app imports uvicorn's HTTP protocol
    from glimpse import config
    from glimpse.api.app import create_app
    from glimpse.runtime import build

    argv = json.loads(os.environ.get(CONFIG_ENV, "[]"))
    conf = config.load(argv)
    setup_logging(conf)
    from glimpse.api.http_protocol import BodyIntoProtocol

    BodyIntoProtocol.idle_timeout = float(conf.client_socket_timeout) or None
    app = create_app(conf, build(conf, check_schema=False))
    freeze_startup_objects()
    return app


def preload() -> None:
    """Import what :func:`create_worker_app` and :func:`serve` will need, nothing
    more (no configuration is read, no thread, socket or database is opened).

    ``glimpse-api`` with ``workers = 1`` calls it while its forked child checks
    the configuration and migrates the database, so that the imports (~1 s of
    CPU here) overlap that check instead of following it. Safe to call twice."""
    import importlib

    limit_malloc_arenas()
    import_uvicorn_lean()
    for module in ("uvicorn.server", "glimpse.config", "glimpse.runtime", "glimpse.api.app"):
        importlib.import_module(module)


def freeze_startup_objects() -> None:
    """Move every object alive now (modules, configuration, the app) out of the
    cyclic collector's generations, for the rest of the process's life.

    They live as long as the process, yet each full collection walked all of
    them: 65-80 ms with the GIL held, under a show load every few seconds, and
    every request in flight waited (that pause was most of the p99). Frozen,
    a full collection takes 5-7 ms. Garbage already unreachable is collected
    first so that none of it is kept forever."""
    import gc

    gc.collect()
    gc.freeze()


def import_uvicorn_lean() -> None:
    """Make the ``uvicorn`` package importable without running its ``__init__``.

    That ``__init__`` imports ``uvicorn.main`` (the command line: click, the
    reload and multiprocess supervisors, watchfiles, multiprocessing), ~2.4 MiB
    resident in every worker, which only needs ``uvicorn.config`` and
    ``uvicorn.server``. The package gets the two names its own modules import
    from it (``Config``, ``Server``); any other name runs the real ``__init__``
    on first use (PEP 562 ``__getattr__``), so nothing that needs it breaks.
    """
    import importlib.util

    if "uvicorn" in sys.modules:
        return
    spec = importlib.util.find_spec("uvicorn")
    if spec is None or spec.loader is None or not spec.submodule_search_locations:
        return  # pragma: no cover - an unusual install: import it as usual
    package = importlib.util.module_from_spec(spec)

    def load_all(name: str) -> Any:
        del package.__dict__["__getattr__"]
        assert spec is not None and spec.loader is not None
        spec.loader.exec_module(package)
        return getattr(package, name)

    package.__dict__["__getattr__"] = load_all
    sys.modules["uvicorn"] = package
    from uvicorn.config import Config
    from uvicorn.server import Server

    package.__dict__.update(Config=Config, Server=Server)


def uvicorn_config(settings: ServeSettings) -> Config:
    """The uvicorn configuration of a worker (no websockets: the API has none)."""
    import_uvicorn_lean()
    from uvicorn.config import Config

    return Config(create_worker_app, factory=True, host=settings.bind_host,
                  port=settings.bind_port, log_config=None, access_log=settings.access_log,
                  timeout_graceful_shutdown=GRACEFUL_SHUTDOWN, timeout_keep_alive=60,
                  server_header=False, ws="none",
                  # uvicorn would take the client address and scheme from
                  # X-Forwarded-For/-Proto of any loopback peer; Glimpse's own rules
                  # decide instead (auth.client_address, api.public_url)
                  proxy_headers=False,
                  # uvicorn's httptools protocol plus a direct body path for uploads
                  http="glimpse.api.http_protocol:BodyIntoProtocol")


# 1 rather than 2, with worker_threads = 2 (bench/memory.py, 2 runs each): the
# tree's peak RSS per request row 0.7-1.8 MiB lower (create at 16 clients 136.8
# -> 135.0 MiB), after a 1 GiB upload 0.6 MiB lower; requests/s and download CPU
# per GiB unchanged within noise, upload CPU per GiB +0-3% (4.7-4.9 s vs 4.5-4.9 s).
MALLOC_ARENAS = 1


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> None:
    """Cap glibc's malloc arenas for the threads of this process (call it before
    they start). glibc gives each new thread its own arena, up to 8 per core;
    the request threads of a busy worker then each keep freed memory in their
    own arena: ~4-5 MiB more RSS per worker at 16 concurrent clients. Python's
    small objects do not go through malloc and the GIL serialises the rest, so
    one arena costs no measurable time. A no-op without glibc."""
    import ctypes

    m_arena_max = -8   # glibc's malloc.h
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - glibc only: M_ARENA_MAX means nothing elsewhere
    except (OSError, AttributeError):  # pragma: no cover - not glibc
        return
    mallopt(m_arena_max, arenas)


def serve(settings: ServeSettings, channel: socket.socket | None = None
          ) -> tuple[bool, list[int]]:
    """Serve in this process until SIGTERM/SIGINT: the connections the supervisor
    hands over on ``channel``, or else on ``bind_host:bind_port`` bound here.
    Returns (whether it started, signals received)."""
    limit_malloc_arenas()
    import_uvicorn_lean()
    from uvicorn.server import Server

    config = uvicorn_config(settings)
    if settings.access_log:
        from glimpse.api.request_id import log_access_with_request_ids

        log_access_with_request_ids()
    server = Server(config) if channel is None else handed_connections_server(config, channel)
    # uvicorn handles SIGTERM/SIGINT while it serves, then re-raises the signal
    # with the handler it found: make that ours, so that a clean shutdown ends
    # with exit status 0 rather than death by the re-raised signal. A signal
    # that comes before uvicorn installs its handlers stops the server too.
    received: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        received.append(signum)
        server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    server.run(sockets=None if channel is None else [])
    return server.started, received


def handed_connections_server(config: Config, channel: socket.socket) -> Server:
    """A uvicorn ``Server`` without a listening socket: it serves the connections
    the supervisor accepted and sends over ``channel`` (glimpse.supervisor's
    module docstring), tells the supervisor ``READY`` once it serves, answers
    its pings from the event loop, and shuts down gracefully when the channel
    reaches EOF (the supervisor is gone)."""
    import asyncio

    from uvicorn.server import Server

    from glimpse.supervisor import PING, PONG, READY

    handing: set[asyncio.Task[None]] = set()

    class HandedConnectionsServer(Server):
        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            await super().startup(sockets=[])      # lifespan, no listener
            if not self.started:
                return
            loop = asyncio.get_running_loop()
            channel.setblocking(False)
            loop.add_reader(channel.fileno(), self._receive, loop)
            channel.send(READY)

        def _receive(self, loop: asyncio.AbstractEventLoop) -> None:
            while True:
                try:
                    message, fds, _, _ = socket.recv_fds(channel, 16, 16)
                except BlockingIOError:
                    return
                except OSError:
                    message, fds = b"", []
                if not message and not fds:       # EOF: the supervisor died
                    loop.remove_reader(channel.fileno())
                    self.should_exit = True
                    return
                if message == PING:               # answered by this loop: it is not stuck
                    with contextlib.suppress(OSError):
                        channel.send(PONG)
                for fd in fds:
                    task = loop.create_task(
                        self._serve_connection(loop, socket.socket(fileno=fd)))
                    handing.add(task)                 # the loop keeps only weak references
                    task.add_done_callback(handing.discard)

        async def _serve_connection(self, loop: asyncio.AbstractEventLoop,
                                    conn: socket.socket) -> None:
            # uvicorn's own protocol factory (Server.startup's create_protocol)
            def protocol() -> asyncio.Protocol:
                return config.http_protocol_class(  # type: ignore[call-arg]
                    config=config, server_state=self.server_state,
                    app_state=self.lifespan.state, _loop=loop)

            try:
                await loop.connect_accepted_socket(protocol, conn)
            except OSError:                        # the client left already
                conn.close()

        async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
            with contextlib.suppress(ValueError, OSError):
                asyncio.get_running_loop().remove_reader(channel.fileno())
            await super().shutdown(sockets=None)

    return HandedConnectionsServer(config)


def run_worker(settings: ServeSettings, channel: socket.socket) -> int:  # pragma: no cover
    """A forked worker process: serve what the supervisor hands over; the exit status."""
    import threading

    from glimpse.supervisor import STARTUP_FAILURE

    started, _ = serve(settings, channel)
    for thread in threading.enumerate():   # as interpreter exit would
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    return 0 if started else STARTUP_FAILURE
