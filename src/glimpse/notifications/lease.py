"""The relay lease: which relay process delivers a driver's events right now.

One row per driver in ``relay_leases``. A relay holds it with
``UPDATE relay_leases SET owner=me, expires_at=now+lease WHERE driver=d AND
(owner=me OR owner IS NULL OR expires_at < now)``: across several Glimpse
processes/nodes on one database exactly one delivers a driver's events at a
time, in order. The holder renews it once a third of it has passed (a write
transaction every ``lease_seconds / 3``, not per batch); a node that dies
loses it after ``lease_seconds``, or at once to a process of the same machine
when ``owner_gone`` (:mod:`glimpse.liveness`) says the holder exited. On
PostgreSQL lease times come from the database clock (node clocks may differ). A
holder stalled for longer than the lease may overlap with its successor: the
result is a duplicate, never a loss.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import CursorResult, DateTime, func, or_, select, update

from glimpse.db.engine import Database
from glimpse.db.models import relay_leases as _leases

LOG = logging.getLogger(__name__)


class DriverLease:
    """One node's claim on one driver's lease. Blocks on the database write lock
    (every method but ``held``); raises SQLAlchemyError or DatabaseUnavailable when
    the database fails."""

    def __init__(self, db: Database, driver_name: str, node_id: str, lease_seconds: float,
                 clock: Callable[[], datetime],
                 owner_gone: Callable[[str], bool] | None = None) -> None:
        self.db = db
        self.driver_name = driver_name
        self.node_id = node_id
        self.lease_seconds = lease_seconds
        self.clock = clock
        self.owner_gone = owner_gone             # True: that holder's process exited
        self.renewed_at: float | None = None     # monotonic time of the last renewal
        self._row_ensured = False

    @property
    def held(self) -> bool:
        """What this node last learnt (no database access)."""
        return self.renewed_at is not None

    def forget(self) -> None:
        """Drop the belief of holding it: the next ``hold()`` asks the database."""
        self.renewed_at = None

    def _now_expr(self) -> Any:
        """'now' for lease arithmetic: the database clock on PostgreSQL."""
        if self.db.dialect == "postgresql":
            return func.timezone("UTC", func.clock_timestamp(), type_=DateTime)
        return self.clock()

    def _ensure_row(self) -> None:
        if self._row_ensured:
            return
        values = {"driver": self.driver_name, "owner": None, "expires_at": None}
        # imported here: a SQLite process never loads the PostgreSQL dialect (~2 MiB)
        stmt: Any
        if self.db.dialect == "postgresql":
            from sqlalchemy.dialects import postgresql
            stmt = postgresql.insert(_leases).values(**values).on_conflict_do_nothing(
                index_elements=["driver"])
        else:
            from sqlalchemy.dialects import sqlite
            stmt = sqlite.insert(_leases).values(**values).on_conflict_do_nothing(
                index_elements=["driver"])
        with self.db.write() as session:
            session.execute(stmt)
        self._row_ensured = True

    def hold(self) -> bool:
        """True when this node holds the lease (renewing it when a third of it passed)."""
        now_mono = time.monotonic()
        if self.renewed_at is not None and now_mono - self.renewed_at < self.lease_seconds / 3:
            return True
        self._ensure_row()
        now = self._now_expr()
        stmt = (update(_leases)
                .where(_leases.c.driver == self.driver_name,
                       or_(_leases.c.owner == self.node_id, _leases.c.owner.is_(None),
                           _leases.c.expires_at.is_(None), _leases.c.expires_at < now))
                .values(owner=self.node_id,
                        expires_at=now + timedelta(seconds=self.lease_seconds)))
        with self.db.write() as session:
            held = cast(CursorResult[Any], session.execute(stmt)).rowcount == 1
        if not held and self.owner_gone is not None:
            held = self._take_from_gone_owner()
        if held:
            if self.renewed_at is None:
                LOG.info("Relay %s now delivers driver %s", self.node_id, self.driver_name)
            self.renewed_at = now_mono
        else:
            self.renewed_at = None
        return held

    def _take_from_gone_owner(self) -> bool:
        """Take the lease from a holder whose process exited (``owner_gone``)
        before it runs out; False when the holder lives or is not known here."""
        assert self.owner_gone is not None
        with self.db.read() as session:
            owner = session.execute(select(_leases.c.owner)
                                    .where(_leases.c.driver == self.driver_name)).scalar()
        if owner is None or owner == self.node_id or not self.owner_gone(owner):
            return False
        now = self._now_expr()
        stmt = (update(_leases)
                .where(_leases.c.driver == self.driver_name, _leases.c.owner == owner)
                .values(owner=self.node_id,
                        expires_at=now + timedelta(seconds=self.lease_seconds)))
        with self.db.write() as session:
            took = cast(CursorResult[Any], session.execute(stmt)).rowcount == 1
        if took:
            LOG.warning("Relay %s takes driver %s over from %s, whose process exited",
                        self.node_id, self.driver_name, owner)
        return took

    def release(self) -> None:
        """Give the lease up so another relay can take over at once."""
        if self.renewed_at is None:
            return
        self.renewed_at = None
        with self.db.write() as session:
            session.execute(update(_leases)
                            .where(_leases.c.driver == self.driver_name,
                                   _leases.c.owner == self.node_id)
                            .values(owner=None, expires_at=None))
