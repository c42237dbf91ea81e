"""Console script ``glimpse-manage --config-file FILE [--config-file FILE ...] ...``.

``db sync|version``
    Applies the migrations / prints the schema revision (``none`` for an empty
    database).
``db load_metadefs [--path DIR]``
    Loads metadata definition files, Glance's ``etc/metadefs/*.json`` format
    (default directory: Glance's, ``/etc/glance/metadefs``); namespaces that
    exist are skipped (:mod:`glimpse.services.metadef_files`). Exit status 3
    when a file could not be loaded.
``db purge [--age_in_days 30] [--max_rows 100]``
    Deletes the properties, tags and members of images deleted more than
    ``--age_in_days`` days ago, at most ``--max_rows`` rows per table (-1: all),
    as ``glance-manage db purge`` (:mod:`glimpse.db.purge`).
``db purge_images_table [--age_in_days 180] [--max_rows 100]``
    Deletes the rows of such images themselves. After that their ids may be
    given to new images (OSSN-0075), hence the separate command.
``outbox status [--json] [--max-age SECONDS]``
    Per driver, the notifications not delivered yet, the age of the oldest, its
    last error and which process delivers the driver
    (:mod:`glimpse.notifications.status`); exit status 3 when the oldest is
    older than ``--max-age``.
``store check [--json] [--remove-orphans]``
    The filesystem store against the image records
    (:mod:`glimpse.services.store_check`); exit status 3 when they disagree.
``token ...``
    See :mod:`glimpse.auth.tokens_cli`.

Exit status 2: bad configuration; 1: the database cannot be used.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

from glimpse.cli import database_error


def main(argv: Sequence[str] | None = None) -> int:
    """``glimpse-manage --config-file FILE db sync|version``, ``outbox status``,
    ``store check`` and ``token ...``."""
    import argparse

    from sqlalchemy.exc import DBAPIError

    parser = argparse.ArgumentParser(prog="glimpse-manage")
    parser.add_argument("--config-file", action="append", default=[],
                        help="configuration file (repeatable; later files win)")
    sub = parser.add_subparsers(dest="area", required=True)
    db = sub.add_parser("db", help="database schema")
    db.add_argument("action", choices=["sync", "version", "load_metadefs", "purge",
                                       "purge_images_table"],
                    help="sync: apply migrations; version: print the schema revision; "
                         "load_metadefs: load metadata definition files; purge: delete "
                         "the properties, tags and members of images deleted long ago; "
                         "purge_images_table: delete those images' rows (their ids "
                         "can then be reused)")
    db.add_argument("--path", default="/etc/glance/metadefs",
                    help="load_metadefs: the directory of *.json files (Glance's format)")
    db.add_argument("--age_in_days", type=int,
                    help="purge: rows of images deleted more than this many days ago "
                         "(default 30; purge_images_table: 180)")
    db.add_argument("--max_rows", type=int, default=100,
                    help="purge: at most this many rows per table (-1: all; default 100)")
    box = sub.add_parser("outbox", help="notifications waiting for delivery")
    box.add_argument("action", choices=["status"],
                     help="status: per driver, the undelivered events, the age of the "
                          "oldest and why it is not delivered yet")
    box.add_argument("--json", action="store_true", help="print one JSON object")
    box.add_argument("--max-age", type=float, metavar="SECONDS",
                     help="exit status 3 when a driver's oldest undelivered event is "
                          "older than this (for monitoring)")
    store = sub.add_parser("store", help="the filesystem store and the image records")
    store.add_argument("action", choices=["check"],
                       help="check: data files without a live image, images without "
                            "their data, sizes that differ (exit status 3 if any)")
    store.add_argument("--json", action="store_true", help="print one JSON object")
    store.add_argument("--remove-orphans", action="store_true",
                       help="delete the data files whose image is deleted or unknown")
    from glimpse.auth import tokens_cli

    tokens_cli.add_parser(sub)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.area == "db" and args.action.startswith("purge"):
        problem = purge_arguments_problem(args)
        if problem:
            parser.error(problem)
    conf_args = [x for f in args.config_file for x in ("--config-file", f)]
    from glimpse import config
    from glimpse.exceptions import ConfigError

    try:
        conf = config.load(conf_args)
    except ConfigError as exc:
        print(f"glimpse-manage: {exc.message}", file=sys.stderr)
        return 2
    from glimpse.db.engine import missing_sqlite_file

    needs_schema = (args.area, getattr(args, "action", None)) in {
        ("db", "version"), ("outbox", "status"), ("store", "check"), ("db", "load_metadefs"),
        ("db", "purge"), ("db", "purge_images_table")}
    missing = missing_sqlite_file(conf.database.connection)
    if needs_schema and missing:
        # these must not leave an empty database behind (e.g. a mistyped path)
        print(f"glimpse-manage: the database file {missing} does not exist ([database] "
              "connection); 'glimpse-manage db sync' creates it", file=sys.stderr)
        return 1
    if args.area == "db" and args.action in ("load_metadefs", "purge", "purge_images_table"):
        from glimpse.exceptions import DatabaseUnavailable

        try:
            if args.action == "load_metadefs":
                return _load_metadefs(conf, args.path)
            return _purge(conf, args.action, args.age_in_days, args.max_rows)
        except (DBAPIError, DatabaseUnavailable) as exc:
            cause = exc.__cause__ if isinstance(exc, DatabaseUnavailable) else exc
            print(f"glimpse-manage: {database_error(cause or exc, conf)}", file=sys.stderr)
            return 1
    if args.area == "db":
        from glimpse.db import migrate
        from glimpse.db.engine import make_engine

        engine = make_engine(conf.database.connection)
        try:
            if args.action == "sync":
                migrate.upgrade(engine)
            print(migrate.current_revision(engine) or "none")
        except DBAPIError as exc:
            print(f"glimpse-manage: {database_error(exc, conf)}", file=sys.stderr)
            return 1
        finally:
            engine.dispose()
        return 0
    if args.area in ("outbox", "store"):
        from glimpse.exceptions import DatabaseUnavailable, StoreError

        try:
            if args.area == "outbox":
                text, oldest = _outbox_status(conf, as_json=args.json)
                print(text)
                return 3 if args.max_age is not None and oldest > args.max_age else 0
            return _store_check(conf, as_json=args.json, remove_orphans=args.remove_orphans)
        except (DBAPIError, DatabaseUnavailable) as exc:
            cause = exc.__cause__ if isinstance(exc, DatabaseUnavailable) else exc
            print(f"glimpse-manage: {database_error(cause or exc, conf)}", file=sys.stderr)
            return 1
        except StoreError as exc:
            print(f"glimpse-manage: {exc.message}", file=sys.stderr)
            return 1
        except ConfigError as exc:
            print(f"glimpse-manage: {exc.message}", file=sys.stderr)
            return 2
    return tokens_cli.run(args, conf)


def _store_check(conf: Any, *, as_json: bool, remove_orphans: bool) -> int:
    """``glimpse-manage store check``: prints the report; 0 consistent, 3 not."""
    from glimpse.db.engine import Database
    from glimpse.services import store_check
    from glimpse.store import datadir_of
    from glimpse.store.filesystem import FilesystemStore

    store = FilesystemStore(datadir_of(conf)[0], remove_leftovers=False)
    db = Database(conf.database.connection)
    try:
        report = store_check.check(db, store, remove_orphans=remove_orphans)
    finally:
        db.dispose()
    print(store_check.render(report, as_json=as_json))
    return 0 if report.consistent else 3


def _outbox_status(conf: Any, *, as_json: bool) -> tuple[str, float]:
    """``glimpse-manage outbox status``: a table, or one JSON object with ``--json``;
    and the age in seconds of the oldest undelivered event of any driver (0: none)."""
    from glimpse.db.engine import Database, utcnow
    from glimpse.notifications.recorder import delivering_drivers
    from glimpse.notifications.status import outbox_status

    db = Database(conf.database.connection)
    try:
        status = outbox_status(db, delivering_drivers(conf.oslo_messaging_notifications.driver),
                               utcnow())
    finally:
        db.dispose()
    last = status.last_delivered_at
    oldest = max((d.oldest_pending_seconds or 0.0 for d in status.drivers), default=0.0)
    if as_json:
        return json.dumps({
            "drivers": [{"driver": d.driver, "pending": d.pending,
                         "oldest_pending_seconds": d.oldest_pending_seconds,
                         "head_attempts": d.head_attempts, "head_error": d.head_error,
                         "delivered_by": d.delivered_by}
                        for d in status.drivers],
            "delivered_last_hour": status.delivered_last_hour,
            "last_delivered_at": last.isoformat("T", "seconds") + "Z" if last else None}), oldest
    lines = [f"{'driver':<14}{'pending':>9}  {'oldest':>10}  {'attempts':>8}  last error"]
    for d in status.drivers:
        age = f"{d.oldest_pending_seconds:.1f} s" if d.oldest_pending_seconds is not None else "-"
        error = d.head_error.splitlines()[0] if d.head_error else "-"
        lines.append(f"{d.driver:<14}{d.pending:>9}  {age:>10}  {d.head_attempts:>8}  {error}")
    if not status.drivers:
        lines.append("(no notification driver configured and nothing pending)")
    for d in status.drivers:
        lines.append(f"{d.driver}: delivered by {d.delivered_by}" if d.delivered_by else
                     f"{d.driver}: no running process delivers it (no relay holds its lease)")
    lines.append(f"delivered in the last hour: {status.delivered_last_hour}; "
                 f"last delivery: {last.isoformat(' ', 'seconds') + ' UTC' if last else 'none'}")
    return "\n".join(lines), oldest


def _load_metadefs(conf: Any, path: str) -> int:
    from pathlib import Path

    from glimpse.auth import policy
    from glimpse.db.engine import Database
    from glimpse.notifications.recorder import Notifier
    from glimpse.runtime import Runtime
    from glimpse.services.metadef_files import load_directory

    directory = Path(path)
    if not directory.is_dir():
        print(f"glimpse-manage: {path} is not a directory (--path)", file=sys.stderr)
        return 2
    policy.install(conf)            # the operator's [oslo_policy] rules, as the API
    db = Database(conf.database.connection)
    try:
        runtime = Runtime(conf=conf, db=db, store=None,
                          notifier=Notifier((), publisher_id="glimpse-manage"))
        report = load_directory(runtime, directory)
    finally:
        db.dispose()
    for name in report.loaded:
        print(f"loaded {name}")
    for name in report.skipped:
        print(f"skipped {name} (it exists)")
    for file, why in report.failed:
        print(f"failed {file}: {why}", file=sys.stderr)
    return 3 if report.failed else 0


PURGE_DEFAULT_AGE = {"purge": 30, "purge_images_table": 180}


def purge_arguments_problem(args: Any) -> str | None:
    """What is wrong with ``--age_in_days``/``--max_rows`` (glance-manage's checks),
    or None; fills in the default age."""
    import time

    if args.age_in_days is None:
        args.age_in_days = PURGE_DEFAULT_AGE[args.action]
    if args.age_in_days < 0:
        return "--age_in_days must not be negative"
    if args.age_in_days >= time.time() // 86400:
        return "--age_in_days is more than the days since 1970"
    if args.max_rows < -1:
        return "--max_rows must be -1 (all) or more"
    return None


def _purge(conf: Any, action: str, age_in_days: int, max_rows: int) -> int:
    """``glimpse-manage db purge`` / ``db purge_images_table``: prints one line per table."""
    from datetime import timedelta

    from glimpse.db import purge
    from glimpse.db.engine import Database, utcnow

    before = utcnow() - timedelta(days=age_in_days)
    db = Database(conf.database.connection)
    try:
        if action == "purge":
            counts = purge.purge_image_children(db, deleted_before=before, max_rows=max_rows)
        else:
            counts = {"images": purge.purge_images(db, deleted_before=before,
                                                   max_rows=max_rows)}
    finally:
        db.dispose()
    when = before.isoformat(" ", "seconds")
    for table, rows in counts.items():
        print(f"{table}: {rows} row(s) deleted (images deleted before {when} UTC)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
