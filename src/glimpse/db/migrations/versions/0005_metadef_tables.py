"""metadata definitions (metadefs) tables

The six tables of Glance's metadata definitions API, with Glance's names,
columns, unique constraints and indexes (see ``glimpse.db.models``). What
belongs to a namespace goes with it (``ON DELETE CASCADE``). New tables only:
nothing stored is touched. The downgrade drops them (and their rows).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28 06:40:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def _times() -> list[sa.Column]:
    return [sa.Column('created_at', sa.DateTime(), nullable=False),
            sa.Column('updated_at', sa.DateTime(), nullable=True)]


def _namespace_fk() -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(['namespace_id'], ['metadef_namespaces.id'],
                                   ondelete='CASCADE')


def upgrade() -> None:
    op.create_table(
        'metadef_namespaces',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('namespace', sa.String(length=80), nullable=False),
        sa.Column('display_name', sa.String(length=80), nullable=True),
        sa.Column('description', sa.Text(), nullable=True),
        sa.Column('visibility', sa.String(length=32), nullable=True),
        sa.Column('protected', sa.Boolean(), nullable=True),
        sa.Column('owner', sa.String(length=255), nullable=False),
        *_times(),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('namespace', name='uq_metadef_namespaces_namespace'))
    op.create_index('ix_metadef_namespaces_owner', 'metadef_namespaces', ['owner'])

    op.create_table(
        'metadef_resource_types',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('name', sa.String(length=80), nullable=False),
        sa.Column('protected', sa.Boolean(), nullable=False),
        *_times(),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name', name='uq_metadef_resource_types_name'))

    op.create_table(
        'metadef_namespace_resource_types',
        sa.Column('resource_type_id', sa.Integer(), nullable=False),
        sa.Column('namespace_id', sa.Integer(), nullable=False),
        sa.Column('properties_target', sa.String(length=80), nullable=True),
        sa.Column('prefix', sa.String(length=80), nullable=True),
        *_times(),
        sa.ForeignKeyConstraint(['resource_type_id'], ['metadef_resource_types.id']),
        _namespace_fk(),
        sa.PrimaryKeyConstraint('resource_type_id', 'namespace_id'))
    op.create_index('ix_metadef_ns_res_types_namespace_id', 'metadef_namespace_resource_types',
                    ['namespace_id'])

    op.create_table(
        'metadef_objects',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('namespace_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=80), nullable=False),
        sa.Column('description', sa.Text(), nullable=True),
        sa.Column('required', sa.Text(), nullable=True),
        sa.Column('json_schema', sa.Text(), nullable=False),
        *_times(),
        _namespace_fk(),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('namespace_id', 'name', name='uq_metadef_objects_namespace_id_name'))
    op.create_index('ix_metadef_objects_name', 'metadef_objects', ['name'])

    op.create_table(
        'metadef_properties',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('namespace_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=80), nullable=False),
        sa.Column('json_schema', sa.Text(), nullable=False),
        *_times(),
        _namespace_fk(),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('namespace_id', 'name',
                            name='uq_metadef_properties_namespace_id_name'))
    op.create_index('ix_metadef_properties_name', 'metadef_properties', ['name'])

    op.create_table(
        'metadef_tags',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('namespace_id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=80), nullable=False),
        *_times(),
        _namespace_fk(),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('namespace_id', 'name', name='uq_metadef_tags_namespace_id_name'))
    op.create_index('ix_metadef_tags_name', 'metadef_tags', ['name'])


def downgrade() -> None:
    for table in ('metadef_tags', 'metadef_properties', 'metadef_objects',
                  'metadef_namespace_resource_types', 'metadef_resource_types',
                  'metadef_namespaces'):
        op.drop_table(table)
