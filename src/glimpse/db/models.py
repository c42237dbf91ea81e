"""SQLAlchemy Core table definitions. Alembic migrations in ``db/migrations`` create them.

Plain ``Table`` objects on one ``metadata``: the services run Core statements
only, and ``sqlalchemy.orm`` (declarative classes, ``Session``) would add ~6 MiB
to every process for nothing.

Times are naive UTC datetimes. Deleted images are kept (status ``deleted``,
``deleted_at`` set) so that an id is not reused, as in Glance, until an
operator purges them (:mod:`glimpse.db.purge`).
"""

from __future__ import annotations

from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.engine import Connection

# SQLite only auto-increments an INTEGER PRIMARY KEY.
BigIntPK = BigInteger().with_variant(Integer(), "sqlite")

metadata = MetaData()

images = Table(
    "images", metadata,
    Column("id", String(36), primary_key=True),
    Column("name", String(255)),
    Column("status", String(30), nullable=False),
    Column("visibility", String(20), nullable=False),
    Column("owner", String(255)),
    Column("disk_format", String(20)),
    Column("container_format", String(20)),
    Column("size", BigInteger),
    Column("virtual_size", BigInteger),
    Column("checksum", String(32)),
    Column("os_hash_algo", String(64)),
    Column("os_hash_value", String(128)),
    Column("min_disk", Integer, nullable=False, default=0),
    Column("min_ram", Integer, nullable=False, default=0),
    Column("protected", Boolean, nullable=False, default=False),
    Column("os_hidden", Boolean, nullable=False, default=False),
    Column("location", Text),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("deleted_at", DateTime),
    Column("deleted", Boolean, nullable=False, default=False),
    # owner/visibility, then the default list order: see glimpse.db.image_lists
    Index("ix_images_owner_deleted_created_at_id", "owner", "deleted", "created_at", "id"),
    Index("ix_images_visibility_deleted_created_at_id", "visibility", "deleted", "created_at",
          "id"),
    Index("ix_images_name", "name"),    # lookups by name (?name=)
    Index("ix_images_created_at_id", "created_at", "id"),
)

# The order of a list sorted by name (image_lists._sort_expr renders it the same
# way), and the indexes that read each part of such a list in that order.
NAME_ORDER: Final = text("coalesce(name, '')")
Index("ix_images_owner_deleted_name_order", images.c.owner, images.c.deleted, NAME_ORDER,
      images.c.created_at, images.c.id)
Index("ix_images_visibility_deleted_name_order", images.c.visibility, images.c.deleted,
      NAME_ORDER, images.c.created_at, images.c.id)

image_properties = Table(
    "image_properties", metadata,
    Column("image_id", String(36), ForeignKey("images.id", ondelete="CASCADE"),
           primary_key=True),
    Column("name", String(255), primary_key=True),
    # NULL: the schema lets ``kernel_id`` and ``ramdisk_id`` be null, and Glance
    # stores and shows them so (migration 0004)
    Column("value", Text, nullable=True),
)

image_tags = Table(
    "image_tags", metadata,
    Column("image_id", String(36), ForeignKey("images.id", ondelete="CASCADE"),
           primary_key=True),
    Column("value", String(255), primary_key=True),
    Index("ix_image_tags_value", "value"),
)

image_members = Table(
    "image_members", metadata,
    Column("image_id", String(36), ForeignKey("images.id", ondelete="CASCADE"),
           primary_key=True),
    Column("member", String(255), primary_key=True),
    Column("status", String(20), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Index("ix_image_members_member", "member", "status"),
)

tasks = Table(
    "tasks", metadata,
    Column("id", String(36), primary_key=True),
    Column("type", String(30), nullable=False),
    Column("status", String(30), nullable=False),
    Column("owner", String(255)),
    Column("input", Text, nullable=False),           # JSON
    Column("result", Text),                          # JSON
    Column("message", Text, nullable=False, default=""),
    Column("image_id", String(36)),
    Column("expires_at", DateTime),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Column("deleted_at", DateTime),
    # Executor claim: which process runs it and until when the claim holds.
    Column("claimed_by", String(255)),
    Column("claimed_until", DateTime),
    # Who asked for it (Glance shows both in the task representation).
    Column("request_id", String(64)),
    Column("user_id", String(255)),
    Index("ix_tasks_status", "status"),
    Index("ix_tasks_owner", "owner"),
)

# One notification waiting for (or delivered by) one driver. A notification that
# several drivers carry has one row per driver, all with the same ``message_id``;
# each driver's rows are delivered in ``id`` order.
#
# Both indexes are partial: a row is in ix_outbox_pending until it is delivered,
# then in ix_outbox_delivered_at (the prune's), so the request's INSERT writes
# one index entry, not two. The PostgreSQL predicate is attached when the table
# is created on PostgreSQL (_postgresql_partial_indexes): ``postgresql_where=``
# here would import SQLAlchemy's PostgreSQL dialect (~2 MiB) into every process.
outbox = Table(
    "outbox", metadata,
    Column("id", BigIntPK, primary_key=True, autoincrement=True),
    Column("driver", String(32), nullable=False),
    Column("message_id", String(36), nullable=False),
    Column("event_type", String(64), nullable=False),
    Column("priority", String(8), nullable=False),
    Column("envelope", Text, nullable=False),        # JSON, key order kept
    Column("created_at", DateTime, nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt_at", DateTime),
    Column("last_error", Text),
    Column("delivered_at", DateTime),
    Index("ix_outbox_pending", "driver", "id",
          sqlite_where=text("delivered_at IS NULL"),
          info={"where": "delivered_at IS NULL"}),
    Index("ix_outbox_delivered_at", "delivered_at",
          sqlite_where=text("delivered_at IS NOT NULL"),
          info={"where": "delivered_at IS NOT NULL"}),
)


@event.listens_for(outbox, "before_create")
def _postgresql_partial_indexes(table: Table, connection: Connection, **_: Any) -> None:
    """``Index.info["where"]`` as ``postgresql_where`` when created on PostgreSQL."""
    if connection.dialect.name != "postgresql":
        return
    for index in table.indexes:
        if "where" in index.info:
            index.dialect_kwargs["postgresql_where"] = text(index.info["where"])


# Which relay process currently delivers a driver's events, and until when.
relay_leases = Table(
    "relay_leases", metadata,
    Column("driver", String(32), primary_key=True),
    Column("owner", String(255)),
    Column("expires_at", DateTime),
)


# --- Metadata definitions (Glance's metadefs API; migration 0005) ------------------------
# The tables, columns, unique constraints and index names are Glance's
# (glance/db/sqlalchemy/models_metadef.py). One difference: the rows that belong
# to a namespace (objects, properties, tags, resource type associations) go with
# it (``ON DELETE CASCADE``), where Glance deletes them one table at a time.
# ``json_schema`` is JSON text; so is ``metadef_objects.required`` (a JSON array,
# where Glance joins the names with commas and cannot keep a name holding one).

metadef_namespaces = Table(
    "metadef_namespaces", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("namespace", String(80), nullable=False),
    Column("display_name", String(80)),
    Column("description", Text),
    Column("visibility", String(32)),
    Column("protected", Boolean),
    Column("owner", String(255), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime),
    UniqueConstraint("namespace", name="uq_metadef_namespaces_namespace"),
    Index("ix_metadef_namespaces_owner", "owner"),
)

metadef_resource_types = Table(
    "metadef_resource_types", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(80), nullable=False),
    Column("protected", Boolean, nullable=False, default=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime),
    UniqueConstraint("name", name="uq_metadef_resource_types_name"),
)

metadef_namespace_resource_types = Table(
    "metadef_namespace_resource_types", metadata,
    Column("resource_type_id", Integer, ForeignKey("metadef_resource_types.id"),
           primary_key=True),
    Column("namespace_id", Integer, ForeignKey("metadef_namespaces.id", ondelete="CASCADE"),
           primary_key=True),
    Column("properties_target", String(80)),
    Column("prefix", String(80)),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime),
    Index("ix_metadef_ns_res_types_namespace_id", "namespace_id"),
)

metadef_objects = Table(
    "metadef_objects", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("namespace_id", Integer, ForeignKey("metadef_namespaces.id", ondelete="CASCADE"),
           nullable=False),
    Column("name", String(80), nullable=False),
    Column("description", Text),
    Column("required", Text),
    Column("json_schema", Text, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime),
    UniqueConstraint("namespace_id", "name", name="uq_metadef_objects_namespace_id_name"),
    Index("ix_metadef_objects_name", "name"),
)

metadef_properties = Table(
    "metadef_properties", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("namespace_id", Integer, ForeignKey("metadef_namespaces.id", ondelete="CASCADE"),
           nullable=False),
    Column("name", String(80), nullable=False),
    Column("json_schema", Text, nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime),
    UniqueConstraint("namespace_id", "name", name="uq_metadef_properties_namespace_id_name"),
    Index("ix_metadef_properties_name", "name"),
)

metadef_tags = Table(
    "metadef_tags", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("namespace_id", Integer, ForeignKey("metadef_namespaces.id", ondelete="CASCADE"),
           nullable=False),
    Column("name", String(80), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime),
    UniqueConstraint("namespace_id", "name", name="uq_metadef_tags_namespace_id_name"),
    Index("ix_metadef_tags_name", "name"),
)
