"""``outbox_status`` on both databases: what operators read to know every event went out."""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import insert

from glimpse.db.engine import Database
from glimpse.db.models import outbox, relay_leases
from glimpse.notifications.status import outbox_status

NOW = datetime(2026, 11, 27, 18, 0, 0)


def _row(driver: str, age_s: float, *, attempts: int = 0, error: str | None = None,
         delivered_ago_s: float | None = None) -> dict[str, object]:
    return {"driver": driver, "message_id": "m", "event_type": "image.create",
            "priority": "INFO", "envelope": "{}", "created_at": NOW - timedelta(seconds=age_s),
            "attempts": attempts, "last_error": error,
            "delivered_at": (NOW - timedelta(seconds=delivered_ago_s)
                             if delivered_ago_s is not None else None)}


def test_backlog_per_driver_and_recent_deliveries(db: Database) -> None:
    with db.write() as session:
        session.execute(insert(outbox), [
            _row("messagingv2", 7300, delivered_ago_s=7200),        # over an hour ago
            _row("messagingv2", 1900, delivered_ago_s=1800),
            _row("messagingv2", 90, attempts=3, error="ConnectionRefusedError: [Errno 111]"),
            _row("messagingv2", 60),
            _row("messagingv2", 5),
            _row("log", 4000, delivered_ago_s=600),
            _row("retired", 30),             # a driver no longer configured, rows left
        ])
        session.execute(insert(relay_leases), [
            {"driver": "messagingv2", "owner": "web-1:0a1b2c3d",
             "expires_at": NOW + timedelta(seconds=10)},
            {"driver": "log", "owner": "web-2:4e5f6a7b",           # ran out: nobody
             "expires_at": NOW - timedelta(seconds=1)},
            {"driver": "retired", "owner": None, "expires_at": None},  # released
        ])
    status = outbox_status(db, ["messagingv2", "log"], NOW)
    by_name = {d.driver: d for d in status.drivers}
    assert [d.driver for d in status.drivers] == ["log", "messagingv2", "retired"]
    v2 = by_name["messagingv2"]
    assert (v2.pending, v2.oldest_pending_seconds, v2.head_attempts, v2.head_error) == (
        3, 90.0, 3, "ConnectionRefusedError: [Errno 111]")
    log = by_name["log"]
    assert (log.pending, log.oldest_pending_seconds, log.head_attempts, log.head_error) == (
        0, None, 0, None)
    assert by_name["retired"].pending == 1
    assert [d.delivered_by for d in status.drivers] == [None, "web-1:0a1b2c3d", None]
    assert status.delivered_last_hour == 2
    assert status.last_delivered_at == NOW - timedelta(seconds=600)


def test_empty_outbox(db: Database) -> None:
    status = outbox_status(db, ["messagingv2"], NOW)
    assert [(d.driver, d.pending, d.oldest_pending_seconds, d.delivered_by)
            for d in status.drivers] == [("messagingv2", 0, None, None)]
    assert (status.delivered_last_hour, status.last_delivered_at) == (0, None)
