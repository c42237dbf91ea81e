"""SQLAlchemy table definitions. Alembic migrations in ``db/migrations`` create them.

Times are naive UTC datetimes. Deleted images are kept (status ``deleted``,
``deleted_at`` set) so that an id is never reused, as in Glance.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    event,
    text,
)
from sqlalchemy.engine import Connection
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    pass


class ImageRow(Base):
    __tablename__ = "images"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(30), nullable=False)
    visibility: Mapped[str] = mapped_column(String(20), nullable=False)
    owner: Mapped[str | None] = mapped_column(String(255))
    disk_format: Mapped[str | None] = mapped_column(String(20))
    container_format: Mapped[str | None] = mapped_column(String(20))
    size: Mapped[int | None] = mapped_column(BigInteger)
    virtual_size: Mapped[int | None] = mapped_column(BigInteger)
    checksum: Mapped[str | None] = mapped_column(String(32))
    os_hash_algo: Mapped[str | None] = mapped_column(String(64))
    os_hash_value: Mapped[str | None] = mapped_column(String(128))
    min_disk: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    min_ram: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    protected: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    os_hidden: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)
    location: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime)
    deleted: Mapped[bool] = mapped_column(Boolean, nullable=False, default=False)

    __table_args__ = (
        Index("ix_images_owner_deleted", "owner", "deleted"),
        Index("ix_images_visibility_deleted", "visibility", "deleted"),
        Index("ix_images_created_at_id", "created_at", "id"),
    )


class ImagePropertyRow(Base):
    __tablename__ = "image_properties"

    image_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    name: Mapped[str] = mapped_column(String(255), primary_key=True)
    value: Mapped[str] = mapped_column(Text, nullable=False)


class ImageTagRow(Base):
    __tablename__ = "image_tags"

    image_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    value: Mapped[str] = mapped_column(String(255), primary_key=True)

    __table_args__ = (Index("ix_image_tags_value", "value"),)


class ImageMemberRow(Base):
    __tablename__ = "image_members"

    image_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    member: Mapped[str] = mapped_column(String(255), primary_key=True)
    status: Mapped[str] = mapped_column(String(20), nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)

    __table_args__ = (Index("ix_image_members_member", "member", "status"),)


class TaskRow(Base):
    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    type: Mapped[str] = mapped_column(String(30), nullable=False)
    status: Mapped[str] = mapped_column(String(30), nullable=False)
    owner: Mapped[str | None] = mapped_column(String(255))
    input: Mapped[str] = mapped_column(Text, nullable=False)        # JSON
    result: Mapped[str | None] = mapped_column(Text)                # JSON
    message: Mapped[str] = mapped_column(Text, nullable=False, default="")
    image_id: Mapped[str | None] = mapped_column(String(36))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime)
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    deleted_at: Mapped[datetime | None] = mapped_column(DateTime)
    # Executor claim: which process runs it and until when the claim holds.
    claimed_by: Mapped[str | None] = mapped_column(String(255))
    claimed_until: Mapped[datetime | None] = mapped_column(DateTime)
    # Who asked for it (Glance shows both in the task representation).
    request_id: Mapped[str | None] = mapped_column(String(64))
    user_id: Mapped[str | None] = mapped_column(String(255))

    __table_args__ = (Index("ix_tasks_status", "status"), Index("ix_tasks_owner", "owner"))


class OutboxRow(Base):
    """One notification waiting for (or delivered by) one driver.

    A notification that several drivers carry has one row per driver, all with
    the same ``message_id``; each driver's rows are delivered in ``id`` order.
    """

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    driver: Mapped[str] = mapped_column(String(32), nullable=False)
    message_id: Mapped[str] = mapped_column(String(36), nullable=False)
    event_type: Mapped[str] = mapped_column(String(64), nullable=False)
    priority: Mapped[str] = mapped_column(String(8), nullable=False)
    envelope: Mapped[str] = mapped_column(Text, nullable=False)     # JSON, key order kept
    created_at: Mapped[datetime] = mapped_column(DateTime, nullable=False)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTime)

    # Both indexes are partial: a row is in ix_outbox_pending until it is delivered,
    # then in ix_outbox_delivered_at (the prune's), so the request's INSERT writes
    # one index entry, not two. The PostgreSQL predicate is attached when the table
    # is created on PostgreSQL (_postgresql_partial_indexes): ``postgresql_where=``
    # here would import SQLAlchemy's PostgreSQL dialect (~2 MiB) into every process.
    __table_args__ = (
        Index("ix_outbox_pending", "driver", "id",
              sqlite_where=text("delivered_at IS NULL"),
              info={"where": "delivered_at IS NULL"}),
        Index("ix_outbox_delivered_at", "delivered_at",
              sqlite_where=text("delivered_at IS NOT NULL"),
              info={"where": "delivered_at IS NOT NULL"}),
    )


@event.listens_for(OutboxRow.__table__, "before_create")
def _postgresql_partial_indexes(table: Table, connection: Connection, **_: Any) -> None:
    """``Index.info["where"]`` as ``postgresql_where`` when created on PostgreSQL."""
    if connection.dialect.name != "postgresql":
        return
    for index in table.indexes:
        if "where" in index.info:
            index.dialect_kwargs["postgresql_where"] = text(index.info["where"])


class RelayLeaseRow(Base):
    """Which relay process currently delivers a driver's events, and until when."""

    __tablename__ = "relay_leases"

    driver: Mapped[str] = mapped_column(String(32), primary_key=True)
    owner: Mapped[str | None] = mapped_column(String(255))
    expires_at: Mapped[datetime | None] = mapped_column(DateTime)
