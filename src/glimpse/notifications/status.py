"""What the outbox holds: for operators who must know that every event was
delivered (``glimpse-manage outbox status``).

Read-only, one read transaction; blocks on the database. Every figure is read
through one of the outbox's partial indexes (pending rows by driver, delivered
rows by time), by primary key or from ``relay_leases`` (a row per driver), so it
stays cheap with a large backlog during a broker outage or a day of retained
rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select

from glimpse.db.engine import Database
from glimpse.db.models import outbox, relay_leases


@dataclass(frozen=True)
class DriverBacklog:
    """One driver's undelivered events.

    ``oldest_pending_seconds``: age of its oldest undelivered event (None when
    nothing is pending). ``head_attempts`` and ``head_error``: the attempts and
    last error of that event, which the driver's later events wait behind.
    ``delivered_by``: the node id of the process whose relay lease on the driver
    is current (None: no running process delivers it, as when no glimpse-api
    with this driver runs).
    """

    driver: str
    pending: int
    oldest_pending_seconds: float | None
    head_attempts: int
    head_error: str | None
    delivered_by: str | None = None


@dataclass(frozen=True)
class OutboxStatus:
    """``drivers``: the configured drivers and any other that still has pending
    rows, by name. ``delivered_last_hour`` and ``last_delivered_at``: over all
    drivers (a notification carried by two drivers counts twice)."""

    drivers: list[DriverBacklog]
    delivered_last_hour: int
    last_delivered_at: datetime | None


def outbox_status(db: Database, drivers: Sequence[str], now: datetime) -> OutboxStatus:
    """The outbox as of ``now`` (naive UTC)."""
    pending = outbox.c.delivered_at.is_(None)
    delivered = outbox.c.delivered_at.is_not(None)
    with db.read() as session:
        names = set(drivers) | set(session.scalars(
            select(outbox.c.driver).where(pending).distinct()))
        holders: dict[str, str] = {row.driver: row.owner for row in session.execute(
            select(relay_leases.c.driver, relay_leases.c.owner)
            .where(relay_leases.c.owner.is_not(None), relay_leases.c.expires_at > now))}
        backlog: list[DriverBacklog] = []
        for name in sorted(names):
            count, first_id = session.execute(
                select(func.count(), func.min(outbox.c.id))
                .where(outbox.c.driver == name, pending)).one()
            head = None
            if first_id is not None:
                head = session.execute(
                    select(outbox.c.created_at, outbox.c.attempts, outbox.c.last_error)
                    .where(outbox.c.id == first_id)).one()
            backlog.append(DriverBacklog(
                driver=name, pending=int(count),
                oldest_pending_seconds=(max((now - head.created_at).total_seconds(), 0.0)
                                        if head is not None else None),
                head_attempts=int(head.attempts) if head is not None else 0,
                head_error=head.last_error if head is not None else None,
                delivered_by=holders.get(name)))
        recent = session.scalar(select(func.count()).where(
            delivered, outbox.c.delivered_at > now - timedelta(hours=1)))
        last = session.scalar(select(func.max(outbox.c.delivered_at)).where(delivered))
    return OutboxStatus(drivers=backlog, delivered_last_hour=int(recent or 0),
                        last_delivered_at=last)
