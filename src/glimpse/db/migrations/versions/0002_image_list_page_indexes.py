"""image list page indexes

The owner and visibility indexes of ``images`` gain the default list order
(``created_at``, ``id``), so that each part of a list (see
``glimpse.db.image_lists``) reads its page in index order and stops there;
``name`` gets an index, for the lookups clients make by name
(``openstack image show NAME`` lists ``?name=NAME``).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 23:20:00
"""

from alembic import op


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.create_index('ix_images_owner_deleted_created_at_id',
                              ['owner', 'deleted', 'created_at', 'id'], unique=False)
        batch_op.create_index('ix_images_visibility_deleted_created_at_id',
                              ['visibility', 'deleted', 'created_at', 'id'], unique=False)
        batch_op.create_index('ix_images_name', ['name'], unique=False)
        # their prefixes serve every query the old indexes served
        batch_op.drop_index('ix_images_owner_deleted')
        batch_op.drop_index('ix_images_visibility_deleted')


def downgrade() -> None:
    with op.batch_alter_table('images', schema=None) as batch_op:
        batch_op.create_index('ix_images_visibility_deleted', ['visibility', 'deleted'],
                              unique=False)
        batch_op.create_index('ix_images_owner_deleted', ['owner', 'deleted'], unique=False)
        batch_op.drop_index('ix_images_name')
        batch_op.drop_index('ix_images_visibility_deleted_created_at_id')
        batch_op.drop_index('ix_images_owner_deleted_created_at_id')
