"""null property values

The image schema lets ``kernel_id`` and ``ramdisk_id`` be null (``["null",
"string"]``), and Glance stores and shows such a property as null. The NOT
NULL on ``image_properties.value`` turned a create with ``"kernel_id": null``
into an error. On SQLite the table is copied (batch mode); on PostgreSQL the
constraint is dropped in place.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 04:30:00
"""

import contextlib
import warnings
from collections.abc import Iterator

from alembic import op
from alembic.operations import BatchOperations
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


@contextlib.contextmanager
def _properties_batch() -> Iterator[BatchOperations]:
    """``batch_alter_table('image_properties')`` without the SAWarnings of its
    reflection: it reflects ``images`` too (the foreign key's table), whose two
    name order indexes are on an expression SQLAlchemy cannot reflect, and each
    fresh start printed two warnings. Those indexes are not copied or touched."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Skipped unsupported reflection of "
                                "expression-based index", category=sa.exc.SAWarning)
        with op.batch_alter_table('image_properties') as batch_op:
            yield batch_op


def upgrade() -> None:
    with _properties_batch() as batch_op:
        batch_op.alter_column('value', existing_type=sa.Text(), nullable=True)


def downgrade() -> None:
    # a null value cannot go back under NOT NULL: those properties are dropped
    op.execute("DELETE FROM image_properties WHERE value IS NULL")
    with _properties_batch() as batch_op:
        batch_op.alter_column('value', existing_type=sa.Text(), nullable=False)
