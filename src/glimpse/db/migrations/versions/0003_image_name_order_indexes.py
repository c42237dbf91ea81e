"""image name order indexes

A list sorted by name (``glance image-list`` asks for ``sort_key=name`` by
default) reads each part of the list (see ``glimpse.db.image_lists``) in the
order of these indexes and stops after a page, instead of sorting every
visible image. The expression is the one the list sorts by:
``coalesce(name, '')``.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 00:10:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

NAME_ORDER = "coalesce(name, '')"


def upgrade() -> None:
    op.create_index('ix_images_owner_deleted_name_order', 'images',
                    ['owner', 'deleted', sa.text(NAME_ORDER), 'created_at', 'id'])
    op.create_index('ix_images_visibility_deleted_name_order', 'images',
                    ['visibility', 'deleted', sa.text(NAME_ORDER), 'created_at', 'id'])


def downgrade() -> None:
    op.drop_index('ix_images_visibility_deleted_name_order', table_name='images')
    op.drop_index('ix_images_owner_deleted_name_order', table_name='images')
