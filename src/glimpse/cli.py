"""Console scripts: ``glimpse-api`` (the API server) and ``glimpse-manage`` (admin tasks).

``glimpse-api --config-file FILE [--config-file FILE ...]``
    Validates the configuration (exit status 2 and a message naming the option
    when a value is bad), sets up logging, creates/migrates a SQLite database
    (PostgreSQL must be migrated with ``glimpse-manage db sync``: the API refuses
    to start on an older schema, exit status 2), then serves on
    ``bind_host:bind_port`` with ``workers`` uvicorn processes. Each worker
    process re-reads the same configuration (passed in the environment variable
    ``GLIMPSE_CONFIG_ARGS`` as a JSON list of arguments), sets up the same
    logging and builds its own runtime. SIGTERM/SIGINT shut down cleanly: open
    requests get ``GRACEFUL_SHUTDOWN`` seconds, then the background loops stop
    (the notification relay keeps delivering for ``[outbox] drain_timeout``).
    A database that cannot be reached at start-up is exit status 1.

``glimpse-manage --config-file FILE db sync|version``
    Applies the migrations / prints the schema revision (``none`` for an empty
    database). ``token ...``: see :mod:`glimpse.auth.tokens_cli`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from glimpse import config
from glimpse.exceptions import ConfigError

if TYPE_CHECKING:
    from starlette.applications import Starlette

LOG = logging.getLogger("glimpse")

CONFIG_ENV = "GLIMPSE_CONFIG_ARGS"
GRACEFUL_SHUTDOWN = 10
LOG_FORMAT = "%(asctime)s.%(msecs)03d %(process)d %(levelname)s %(name)s %(message)s"
# Chatty INFO loggers of libraries, kept at WARNING.
QUIET_LOGGERS = ("alembic.runtime.plugins", "httpx", "kombu", "amqp", "stevedore")


def setup_logging(conf: Any) -> None:
    """Log to ``[DEFAULT] log_file`` (or stderr), root logger at INFO (DEBUG with ``debug``).

    The ``log`` notification driver writes through Python logging, so its
    lines land in the same file; the root level must stay at INFO or they are
    lost. Idempotent: replaces the root handlers.
    """
    log_file = getattr(conf, "log_file", None)
    handler: logging.Handler
    if log_file:
        os.makedirs(os.path.dirname(os.path.abspath(log_file)), exist_ok=True)
        handler = logging.FileHandler(log_file)
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


def _database_error(exc: Exception, conf: Any) -> str:
    from sqlalchemy.engine.url import make_url

    url = make_url(conf.database.connection).render_as_string(hide_password=True)
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
    return f"cannot use the database [database] connection = {url}: {reason}"


def prepare(args: Sequence[str]) -> Any:
    """Load and check the configuration, set up logging, create/check the schema.

    Returns the ConfigOpts. Raises ConfigError (bad value, unsafe auth
    settings, schema not migrated) or sqlalchemy's DBAPIError (unreachable database).
    """
    conf = config.load(args)
    from glimpse.auth.startup import check_startup

    check_startup(conf)
    setup_logging(conf)
    from glimpse.runtime import build

    runtime = build(conf)   # migrates SQLite; refuses an old PostgreSQL schema
    runtime.db.dispose()
    if runtime.store is not None and hasattr(runtime.store, "close"):
        runtime.store.close()
    return conf


def create_worker_app() -> Starlette:
    """uvicorn factory, run in every worker process: same config, same logging.
    The schema was migrated/checked by the parent (``prepare``) just before."""
    from glimpse.api.app import create_app
    from glimpse.runtime import build

    argv = json.loads(os.environ.get(CONFIG_ENV, "[]"))
    conf = config.load(argv)
    setup_logging(conf)
    return create_app(conf, build(conf, check_schema=False))


def _prepare_or_status(args: list[str]) -> int:
    """``prepare`` as an exit status: 0 ready, 2 bad configuration or schema,
    1 unreachable database (the message is printed and logged here)."""
    from sqlalchemy.exc import DBAPIError

    conf: Any = None
    try:
        conf = prepare(args)
    except ConfigError as exc:
        print(f"glimpse-api: {exc.message}", file=sys.stderr)
        return 2
    except DBAPIError as exc:
        message = _database_error(exc, conf or config.load(args))
        LOG.error("%s", message)
        print(f"glimpse-api: {message}", file=sys.stderr)
        return 1
    return 0


def _prepare_in_child(args: list[str]) -> int:
    """Run :func:`prepare` in a forked child and return its exit status.

    The parent then only supervises the uvicorn workers: it never loads
    SQLAlchemy, Alembic, the store or the policy engine, which it would
    otherwise keep resident (~40 MiB) for its whole life. Without ``fork``
    (or under ``workers = 1``, where uvicorn serves in this process anyway)
    it runs in this process.
    """
    try:
        workers = config.load(args).workers
    except ConfigError:
        workers = 1          # reported by _prepare_or_status
    if not hasattr(os, "fork") or workers <= 1:
        return _prepare_or_status(args)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's status is what the parent checks
        code = 1
        try:
            code = _prepare_or_status(args)
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            logging.shutdown()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, wait_status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(wait_status)


def api_main(argv: Sequence[str] | None = None) -> int:
    """``glimpse-api --config-file FILE [--config-file FILE ...]``: serve the API."""
    import uvicorn

    args = list(sys.argv[1:] if argv is None else argv)
    status = _prepare_in_child(args)
    if status != 0:
        return status
    conf = config.load(args)
    setup_logging(conf)
    os.environ[CONFIG_ENV] = json.dumps(args)
    LOG.info("Starting Glimpse API on %s:%s with %d worker(s)",
             conf.bind_host, conf.bind_port, conf.workers)
    # uvicorn handles SIGTERM/SIGINT while it serves, then re-raises the signal
    # with the handler it found: make that ours, so that a clean shutdown ends
    # with exit status 0 rather than death by the re-raised signal.
    received: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: received.append(signum))
    uvicorn.run("glimpse.cli:create_worker_app", factory=True, host=conf.bind_host,
                port=conf.bind_port, workers=conf.workers, log_config=None,
                access_log=False, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN,
                timeout_keep_alive=60, server_header=False,
                # uvicorn's httptools protocol plus a direct body path for uploads
                http="glimpse.api.http_protocol:BodyIntoProtocol")
    LOG.info("Glimpse API stopped%s",
             f" (signal {signal.Signals(received[0]).name})" if received else "")
    return 0


def manage_main(argv: Sequence[str] | None = None) -> int:
    """``glimpse-manage --config-file FILE db sync|version`` and ``token ...``."""
    from sqlalchemy.exc import DBAPIError

    parser = argparse.ArgumentParser(prog="glimpse-manage")
    parser.add_argument("--config-file", action="append", default=[],
                        help="configuration file (repeatable; later files win)")
    sub = parser.add_subparsers(dest="area", required=True)
    db = sub.add_parser("db", help="database schema")
    db.add_argument("action", choices=["sync", "version"],
                    help="sync: apply migrations; version: print the schema revision")
    from glimpse.auth import tokens_cli

    tokens_cli.add_parser(sub)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    conf_args = [x for f in args.config_file for x in ("--config-file", f)]
    try:
        conf = config.load(conf_args)
    except ConfigError as exc:
        print(f"glimpse-manage: {exc.message}", file=sys.stderr)
        return 2
    if args.area == "db":
        from glimpse.db import migrate
        from glimpse.db.engine import make_engine

        engine = make_engine(conf.database.connection)
        try:
            if args.action == "sync":
                migrate.upgrade(engine)
            print(migrate.current_revision(engine) or "none")
        except DBAPIError as exc:
            print(f"glimpse-manage: {_database_error(exc, conf)}", file=sys.stderr)
            return 1
        finally:
            engine.dispose()
        return 0
    return tokens_cli.run(args, conf)


if __name__ == "__main__":
    sys.exit(api_main())
