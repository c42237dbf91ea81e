"""Console script ``glimpse-api`` (the API server), and the start-up steps it shares
with ``glimpse-manage`` (:mod:`glimpse.manage`): logging, database errors.

``glimpse-api --config-file FILE [--config-file FILE ...]``
    Validates the configuration (exit status 2 and a message naming the option
    when a value is bad), sets up logging, creates/migrates a SQLite database
    (PostgreSQL must be migrated with ``glimpse-manage db sync``: the API refuses
    to start on an older schema, exit status 2), then serves on
    ``bind_host:bind_port``. With ``workers = 1`` uvicorn serves in this process
    (:mod:`glimpse.worker`);
    with more, this process becomes a small supervisor (:mod:`glimpse.supervisor`)
    that binds the socket, forks ``workers`` worker processes and hands them the
    connections it accepts, in turn.
    Each worker re-reads the same configuration (passed in the environment
    variable ``GLIMPSE_CONFIG_ARGS`` as a JSON list of arguments), sets up the
    same logging and builds its own runtime. SIGTERM/SIGINT shut down cleanly:
    open requests get ``GRACEFUL_SHUTDOWN`` seconds, then the background loops
    stop (the notification relay keeps delivering for ``[outbox] drain_timeout``);
    SIGHUP replaces the workers. A database that cannot be reached at start-up
    is exit status 1.

    Memory: the checks above run in a forked child that exits before serving, so
    neither the supervisor nor the workers keep Alembic, and the supervisor keeps
    no oslo.config, SQLAlchemy or uvicorn either (the child hands back the few
    settings it needs, :class:`ServeSettings`).

``glimpse-manage``: see :mod:`glimpse.manage`.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys

# The supervisor process imports this module: no typing, no dataclasses (with
# inspect, ast, ... ~2 MiB resident); annotations are strings (see __future__).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

LOG = logging.getLogger("glimpse")

CONFIG_ENV = "GLIMPSE_CONFIG_ARGS"
GRACEFUL_SHUTDOWN = 10
STOP_MARGIN = 60.0
LOG_FORMAT = "%(asctime)s.%(msecs)03d %(process)d %(levelname)s %(name)s %(message)s"
# Chatty INFO loggers of libraries, kept at WARNING.
QUIET_LOGGERS = ("alembic.runtime.plugins", "httpx", "kombu", "amqp", "stevedore")


class ServeSettings:
    """What serving needs from the configuration before any worker exists
    (read by the child that checked the configuration, sent back as JSON)."""

    __slots__ = ("access_log", "bind_host", "bind_port", "debug", "drain_timeout", "log_file",
                 "workers")

    def __init__(self, bind_host: str, bind_port: int, workers: int, log_file: str | None,
                 debug: bool, drain_timeout: float = 5.0, access_log: bool = False) -> None:
        self.bind_host = bind_host
        self.bind_port = bind_port
        self.workers = workers
        self.log_file = log_file
        self.debug = debug
        self.drain_timeout = drain_timeout
        self.access_log = access_log

    @property
    def stop_timeout(self) -> float:
        """Seconds after which a stopping worker is killed: longer than any clean
        stop takes (uvicorn's grace for open requests, then the task executor, up
        to twice the drain timeout, and the relay, the drain timeout), plus a margin."""
        return GRACEFUL_SHUTDOWN + 3 * self.drain_timeout + STOP_MARGIN

    @classmethod
    def from_conf(cls, conf: Any) -> ServeSettings:
        from glimpse.log_file import log_path

        return cls(bind_host=conf.bind_host, bind_port=conf.bind_port, workers=conf.workers,
                   log_file=log_path(conf), debug=bool(conf.debug),
                   drain_timeout=conf.outbox.drain_timeout, access_log=bool(conf.access_log))

    def to_json(self) -> str:
        return json.dumps({name: getattr(self, name) for name in self.__slots__})


def setup_logging(conf: Any) -> None:
    """Log to ``[DEFAULT] log_file``/``log_dir`` (:func:`glimpse.log_file.log_path`; or
    stderr), root logger at INFO (DEBUG with ``debug``).

    The ``log`` notification driver writes through Python logging, so its
    lines land in the same file; the root level must stay at INFO or they are
    lost. The file is reopened when logrotate moves it away, and the driver
    learns of lines it could not write (:class:`LogFileHandler`). Idempotent:
    replaces the root handlers.
    """
    from glimpse.log_file import LogFileHandler, log_path

    log_file = log_path(conf)
    handler: logging.Handler
    if log_file:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        handler = LogFileHandler(log_file)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT, "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if getattr(conf, "debug", False) else logging.INFO)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def database_error(exc: BaseException, conf: Any) -> str:
    """What to print when the database cannot be used: the URL without its password,
    and the driver's reason on one line."""
    from sqlalchemy.engine.url import make_url

    url = make_url(conf.database.connection).render_as_string(hide_password=True)
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    return f"cannot use the database [database] connection = {url}: {reason}"


def prepare(args: Sequence[str],
            on_settings: Callable[[ServeSettings], None] | None = None) -> Any:
    """Load and check the configuration, set up logging, create/check the schema.

    Returns the ConfigOpts. Raises ConfigError (bad value, unsafe auth
    settings, schema not migrated) or sqlalchemy's DBAPIError (unreachable database).
    ``on_settings`` gets the settings to serve with as soon as the configuration
    is read, before the slower runtime checks and migration (which may still fail).
    """
    from glimpse import config
    from glimpse.auth.startup import check_startup

    conf = config.load(args)
    check_startup(conf)
    setup_logging(conf)
    if on_settings is not None:
        on_settings(ServeSettings.from_conf(conf))
    from glimpse.runtime import build

    runtime = build(conf)   # migrates SQLite; refuses an old PostgreSQL schema
    runtime.db.dispose()
    if runtime.store is not None and hasattr(runtime.store, "close"):
        runtime.store.close()
    return conf


def _prepare_or_status(args: list[str],
                       on_settings: Callable[[ServeSettings], None] | None = None
                       ) -> tuple[int, ServeSettings | None]:
    """``prepare`` as an exit status: 0 ready (with the settings to serve with),
    2 bad configuration or schema, 1 unreachable database (the message is
    printed and logged here)."""
    from sqlalchemy.exc import DBAPIError

    from glimpse import config
    from glimpse.exceptions import ConfigError

    conf: Any = None
    try:
        conf = prepare(args, on_settings)
    except ConfigError as exc:
        print(f"glimpse-api: {exc.message}", file=sys.stderr)
        return 2, None
    except DBAPIError as exc:
        message = database_error(exc, conf or config.load(args))
        LOG.error("%s", message)
        print(f"glimpse-api: {message}", file=sys.stderr)
        return 1, None
    return 0, ServeSettings.from_conf(conf)


def _prepare_in_child(args: list[str]) -> tuple[int, ServeSettings | None]:
    """Run :func:`prepare` in a forked child; return its exit status and, on
    success, the settings it read (sent back through a pipe as one JSON line,
    as soon as the configuration is read).

    This process then never loads oslo.config, SQLAlchemy, Alembic, the store
    or the policy engine, which it would otherwise keep resident for its whole
    life (~20 MiB in the supervisor; Alembic ~10 MiB in a single-process
    server). With ``workers = 1`` this process serves itself: it imports the
    worker's modules (:func:`glimpse.worker.preload`) while the child checks and
    migrates, on the other core (to the first answer: median 2.2 s instead of
    2.65 s here).
    Without ``fork`` it runs in this process.
    """
    if not hasattr(os, "fork"):
        return _prepare_or_status(args)
    read_fd, write_fd = os.pipe()
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's status is what the parent checks
        os.close(read_fd)
        code = 1

        def send(settings: ServeSettings) -> None:
            os.write(write_fd, settings.to_json().encode() + b"\n")

        try:
            code, _ = _prepare_or_status(args, send)
        except SystemExit as exc:   # --help: argparse has printed what was asked
            code = exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 2
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        line = pipe.readline()
        settings = ServeSettings(**json.loads(line)) if line.endswith(b"\n") else None
        if settings is not None and settings.workers <= 1:
            from glimpse.worker import preload

            preload()
        pipe.read()
    _, wait_status = os.waitpid(pid, 0)
    status = os.waitstatus_to_exitcode(wait_status)
    if status != 0 or settings is None:
        return status, None     # 0 without settings: only help was asked for
    return 0, settings


def api_main(argv: Sequence[str] | None = None) -> int:
    """``glimpse-api --config-file FILE [--config-file FILE ...]``: serve the API."""
    from glimpse.supervisor import STARTUP_FAILURE

    args = list(sys.argv[1:] if argv is None else argv)
    status, settings = _prepare_in_child(args)
    if status != 0 or settings is None:
        return status
    setup_logging(settings)
    os.environ[CONFIG_ENV] = json.dumps(args)
    LOG.info("Starting Glimpse API on %s:%s with %d worker(s)",
             settings.bind_host, settings.bind_port, settings.workers)
    if settings.workers <= 1 or not hasattr(os, "fork"):
        from glimpse.worker import serve

        started, received = serve(settings)
        if not started:
            return STARTUP_FAILURE
    else:
        from glimpse.supervisor import Supervisor, bind_socket
        from glimpse.worker import run_worker

        try:
            sock = bind_socket(settings.bind_host, settings.bind_port)
        except OSError as exc:
            LOG.error("Cannot listen on %s:%s: %s", settings.bind_host, settings.bind_port, exc)
            print(f"glimpse-api: cannot listen on {settings.bind_host}:{settings.bind_port}: "
                  f"{exc}", file=sys.stderr)
            return STARTUP_FAILURE
        with sock:
            supervisor = Supervisor(sock, settings.workers,
                                    lambda channel: run_worker(settings, channel),
                                    stop_timeout=settings.stop_timeout)
            status = supervisor.run()
        received = [supervisor.received] if supervisor.received else []
    LOG.info("Glimpse API stopped%s",
             f" (signal {signal.Signals(received[0]).name})" if received else "")
    return status


if __name__ == "__main__":
    sys.exit(api_main())
