"""Wiring: builds the long-lived parts of one Glimpse process from its configuration.

``Runtime`` is what the API handlers and background workers share: the
configuration, the database, the store, the notifier (outbox recorder) and
the background loops (notification relay, task executor). Nothing here does
request work; it only constructs and starts/stops things.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from oslo_config import cfg

from glimpse.db.engine import Database
from glimpse.liveness import LivenessMarks
from glimpse.notifications.envelope import default_publisher_id
from glimpse.notifications.recorder import Notifier
from glimpse.notifications.spool import EventSpool

LOG = logging.getLogger(__name__)


class Background(Protocol):
    """A loop that runs beside the API in this process (relay, task executor)."""

    def start(self) -> None: ...

    def stop(self, timeout: float) -> None: ...


@dataclass
class Runtime:
    conf: cfg.ConfigOpts
    db: Database
    store: Any
    notifier: Notifier
    spool: EventSpool | None = None     # with a driver: events kept while the db is away
    node_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{uuid.uuid4().hex[:8]}")
    background: list[Background] = field(default_factory=list)
    liveness: LivenessMarks | None = None   # this process's mark, while the loops run
    extras: dict[str, Any] = field(default_factory=dict)

    def start_background(self) -> None:
        """Hold this process's liveness mark (``<state_path>/processes``), then start
        the relay (if any driver is configured) and the task executor."""
        from glimpse.notifications.relay import Relay
        from glimpse.tasks.executor import Executor

        marks = LivenessMarks(os.path.join(self.conf.state_path, "processes"))
        self.liveness = marks if marks.hold(self.node_id) else None
        owner_gone = self.liveness.gone if self.liveness is not None else None
        if self.notifier.drivers:
            relay = Relay(self.conf, self.db, self.notifier.drivers, node_id=self.node_id,
                          owner_gone=owner_gone)
            self.notifier.set_on_commit(relay.wake)
            self.background.append(relay)
        self.background.append(Executor(self))
        for loop in self.background:
            loop.start()

    def stop_background(self) -> None:
        """Stop loops in reverse order; the relay drains for ``[outbox] drain_timeout``."""
        for loop in reversed(self.background):
            try:
                loop.stop(self.conf.outbox.drain_timeout)
            except Exception:
                LOG.exception("Error while stopping %r", loop)
        self.background.clear()
        self.notifier.set_on_commit(None)
        if self.liveness is not None:
            self.liveness.release()
            self.liveness = None


def _check_schema(db: Database, *, migrate_sqlite: bool) -> None:
    from glimpse.db import migrate

    if db.dialect == "sqlite" and migrate_sqlite:
        migrate.upgrade(db.engine)
    elif migrate.current_revision(db.engine) != migrate.head_revision(db.engine):
        from glimpse.exceptions import ConfigError

        raise ConfigError("The database schema is not up to date: run "
                          "'glimpse-manage --config-file ... db sync'")


def build(conf: cfg.ConfigOpts, *, migrate_sqlite: bool = True,
          check_schema: bool = True) -> Runtime:
    """Construct a Runtime. SQLite databases are created/migrated here; PostgreSQL
    ones need ``glimpse-manage db sync`` (refusing to start on an old schema).
    ``check_schema=False`` skips both (API worker processes: the parent process
    did it just before starting them), and so never imports Alembic (with Mako
    and Pygments, ~10 MiB of resident memory per process)."""
    from glimpse.store import from_config as store_from_config

    db = Database(conf.database.connection, pool_size=conf.database.max_pool_size)
    if check_schema:
        _check_schema(db, migrate_sqlite=migrate_sqlite)
    notifier = Notifier(conf.oslo_messaging_notifications.driver,
                        publisher_id=default_publisher_id(conf.default_publisher_id),
                        disabled=conf.disabled_notifications)
    spool = EventSpool(conf.outbox.spool_dir) if notifier.drivers else None
    runtime = Runtime(conf=conf, db=db, store=store_from_config(conf), notifier=notifier,
                      spool=spool)
    from glimpse.services.image_upload import recover_interrupted_uploads

    recover_interrupted_uploads(runtime)   # uploads that died with a crashed process
    if spool is not None:
        spool.replay(db, notifier)         # events that processes gone kept on disk
    return runtime
