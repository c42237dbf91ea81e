"""Console scripts: ``glimpse-api`` (the API server) and ``glimpse-manage`` (admin tasks)."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence

from glimpse import config
from glimpse.exceptions import ConfigError

LOG = logging.getLogger("glimpse")


def setup_logging(conf: object) -> None:
    """Log to ``[DEFAULT] log_file`` (or stderr). The ``log`` notification driver
    writes through this same logging, so its lines land in the same file."""
    log_file = getattr(conf, "log_file", None)
    handler: logging.Handler = (logging.FileHandler(log_file) if log_file
                                else logging.StreamHandler(sys.stderr))
    handler.setFormatter(logging.Formatter(
        "%(asctime)s.%(msecs)03d %(process)d %(levelname)s %(name)s %(message)s",
        "%Y-%m-%d %H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if getattr(conf, "debug", False) else logging.INFO)






def api_main(argv: Sequence[str] | None = None) -> int:
    """``glimpse-api --config-file FILE [--config-file FILE ...]``: serve the API."""
    import uvicorn

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        conf = config.load(args)
        from glimpse.auth.startup import check_startup

        check_startup(conf)
        setup_logging(conf)
        # Create/migrate the SQLite default once, before workers start.
        from glimpse.runtime import build

        build(conf).db.dispose()
    except ConfigError as exc:
        print(f"glimpse-api: {exc.message}", file=sys.stderr)
        return 2
    os.environ["GLIMPSE_CONFIG_ARGS"] = json.dumps(args)
    LOG.info("Glimpse API listening on %s:%s with %d worker(s)",
             conf.bind_host, conf.bind_port, conf.workers)
    uvicorn.run("glimpse.api.app:create_app_from_env", factory=True, host=conf.bind_host,
                port=conf.bind_port, workers=conf.workers, log_config=None,
                access_log=False, timeout_graceful_shutdown=10, limit_concurrency=None,
                timeout_keep_alive=60)
    return 0


def manage_main(argv: Sequence[str] | None = None) -> int:
    """``glimpse-manage --config-file FILE db sync`` and friends."""
    parser = argparse.ArgumentParser(prog="glimpse-manage")
    parser.add_argument("--config-file", action="append", default=[])
    sub = parser.add_subparsers(dest="area", required=True)
    db = sub.add_parser("db", help="database schema")
    db.add_argument("action", choices=["sync", "version"])
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
        if args.action == "sync":
            migrate.upgrade(engine)
        print(migrate.current_revision(engine))
        return 0
    return tokens_cli.run(args, conf)


if __name__ == "__main__":
    sys.exit(api_main())
