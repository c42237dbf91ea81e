"""What deleted images leave behind, removed: ``glimpse-manage db purge`` and
``db purge_images_table`` (glance-manage's commands, with their options).

A deleted image keeps its row (status ``deleted``) and, for the record, its
properties, tags and members, so the tables only grow. :func:`purge_image_children`
removes the properties, tags and members of images deleted before a moment;
:func:`purge_images` removes the image rows themselves (their remaining
children go with them, ``ON DELETE CASCADE``).

The image row is what keeps a deleted image's id from being used again:
``POST /v2/images`` accepts an ``id``, and once the row is purged a new image
may take that id (OSSN-0075: a user who still refers to the old id by that
name could then boot someone else's image). That is why, as in Glance, it is a
separate command with a longer default age.

Oldest deletions go first. Rows are deleted in batches of at most
:data:`BATCH`, each batch its own write transaction (``Database.write()``):
API writers wait for one batch at a time, never for a whole purge. Raises
what the database raises; the batches already committed stay done (running
the command again carries on).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Table, delete, select, true, tuple_
from sqlalchemy.sql.elements import ColumnElement

from glimpse.db.engine import Database
from glimpse.db.models import image_members, image_properties, image_tags, images

BATCH = 500
CHILD_TABLES: tuple[Table, ...] = (image_properties, image_tags, image_members)


def _deleted_before(moment: datetime) -> tuple[ColumnElement[bool], ...]:
    return (images.c.deleted == true(), images.c.deleted_at < moment)


def purge_image_children(db: Database, *, deleted_before: datetime,
                         max_rows: int) -> dict[str, int]:
    """Delete the properties, tags and members of images deleted before
    ``deleted_before``: at most ``max_rows`` rows per table (-1: all). Returns the
    rows deleted per table name."""
    return {table.name: _purge(db, table, deleted_before, max_rows) for table in CHILD_TABLES}


def purge_images(db: Database, *, deleted_before: datetime, max_rows: int) -> int:
    """Delete at most ``max_rows`` (-1: all) rows of images deleted before
    ``deleted_before``, with whatever children they still have. Returns how many
    image rows."""
    return _purge(db, images, deleted_before, max_rows)


def _purge(db: Database, table: Table, deleted_before: datetime, max_rows: int) -> int:
    key = list(table.primary_key.columns)
    done = 0
    while max_rows < 0 or done < max_rows:
        size = BATCH if max_rows < 0 else min(BATCH, max_rows - done)
        chosen = select(*key).where(*_deleted_before(deleted_before))
        if table is not images:
            chosen = chosen.join_from(table, images, images.c.id == table.c.image_id)
        chosen = chosen.order_by(images.c.deleted_at).limit(size)
        # a subquery, not DELETE ... LIMIT (PostgreSQL has none)
        target = key[0].in_(chosen) if len(key) == 1 else tuple_(*key).in_(chosen)
        with db.write() as session:
            deleted = int(session.execute(delete(table).where(target)).rowcount or 0)
        done += deleted
        if deleted < size:
            break
    return done
