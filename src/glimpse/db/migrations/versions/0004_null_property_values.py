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

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('image_properties') as batch_op:
        batch_op.alter_column('value', existing_type=sa.Text(), nullable=True)


def downgrade() -> None:
    # a null value cannot go back under NOT NULL: those properties are dropped
    op.execute("DELETE FROM image_properties WHERE value IS NULL")
    with op.batch_alter_table('image_properties') as batch_op:
        batch_op.alter_column('value', existing_type=sa.Text(), nullable=False)
