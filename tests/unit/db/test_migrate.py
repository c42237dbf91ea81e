"""Migrations keep what is stored: upgrading a database written at an older
revision, on both databases."""

from __future__ import annotations

import warnings

import pytest
from alembic import command
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError

from glimpse.db import images_repo, migrate
from glimpse.db.engine import Database
from tests.unit.db.factories import make

PAGE_INDEXES = {"ix_images_owner_deleted_created_at_id": ["owner", "deleted", "created_at", "id"],
                "ix_images_visibility_deleted_created_at_id": ["visibility", "deleted",
                                                               "created_at", "id"],
                "ix_images_name": ["name"]}


NAME_ORDER_INDEXES = ("ix_images_owner_deleted_name_order",
                      "ix_images_visibility_deleted_name_order")


def _image_indexes(db: Database) -> dict[str, list[str]]:
    with db.engine.connect() as conn:
        return {ix["name"]: list(ix["column_names"]) for ix in inspect(conn).get_indexes("images")}


def _index_sql(db: Database, name: str) -> str | None:
    """The index's definition as the database keeps it (expression indexes too)."""
    query = ("SELECT sql FROM sqlite_master WHERE type = 'index' AND name = :name"
             if db.dialect == "sqlite" else
             "SELECT indexdef FROM pg_indexes WHERE indexname = :name")
    with db.engine.connect() as conn:
        return conn.execute(text(query), {"name": name}).scalar()


def test_0002_and_0003_give_lists_their_indexes_and_keep_the_images(
        db_url: str) -> None:
    db = Database(db_url)
    migrate.upgrade(db.engine, "0001")
    image = make(1, visibility="public", tags={"t"}, properties={"k": "v"})
    with db.write() as s:
        images_repo.add(s, image)
    assert "ix_images_owner_deleted" in _image_indexes(db)

    migrate.upgrade(db.engine)
    assert migrate.current_revision(db.engine) == migrate.head_revision(db.engine)
    indexes = _image_indexes(db)
    assert {name: indexes.get(name) for name in PAGE_INDEXES} == PAGE_INDEXES
    assert "ix_images_owner_deleted" not in indexes
    assert "ix_images_visibility_deleted" not in indexes
    for name in NAME_ORDER_INDEXES:    # 0003: the order of a list sorted by name
        definition = _index_sql(db, name)
        assert definition is not None and "coalesce(name, ''" in definition.lower()
    with db.read() as s:
        assert images_repo.get(s, image.id) == image

    config = migrate._config(db.engine)
    with db.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0001")
    indexes = _image_indexes(db)
    assert indexes["ix_images_owner_deleted"] == ["owner", "deleted"]
    assert not set(PAGE_INDEXES) & set(indexes)
    assert [_index_sql(db, name) for name in NAME_ORDER_INDEXES] == [None, None]
    with db.read() as s:
        assert images_repo.get(s, image.id) == image
    db.dispose()


def test_0004_lets_property_values_be_null_and_keeps_the_others(db_url: str) -> None:
    db = Database(db_url)
    migrate.upgrade(db.engine, "0003")
    image = make(1, tags={"t"}, properties={"k": "v"})
    with db.write() as s:
        images_repo.add(s, image)
    with pytest.raises(IntegrityError), db.write() as s:    # NOT NULL before 0004
        images_repo.add(s, make(2, properties={"kernel_id": None}))

    migrate.upgrade(db.engine)
    nulled = make(3, properties={"kernel_id": None, "k": "w"})
    with db.write() as s:
        images_repo.add(s, nulled)
    with db.read() as s:
        assert images_repo.get(s, image.id) == image
        assert images_repo.get(s, nulled.id) == nulled
    with db.engine.connect() as conn:    # the primary key and the cascade survive the copy
        assert inspect(conn).get_pk_constraint("image_properties")["constrained_columns"] == [
            "image_id", "name"]
        [fk] = inspect(conn).get_foreign_keys("image_properties")
        assert fk["referred_table"] == "images" and fk["options"].get("ondelete") == "CASCADE"

    config = migrate._config(db.engine)
    with db.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0003")
    with db.read() as s:            # a null cannot go back under NOT NULL: dropped
        kept = images_repo.get(s, nulled.id)
        assert kept is not None and kept.properties == {"k": "w"}
        assert images_repo.get(s, image.id) == image
    db.dispose()


METADEF_TABLES = {"metadef_namespaces", "metadef_resource_types",
                  "metadef_namespace_resource_types", "metadef_objects", "metadef_properties",
                  "metadef_tags"}


def test_0005_adds_the_metadef_tables_and_its_downgrade_drops_them(db_url: str) -> None:
    from datetime import datetime

    from glimpse.db import metadefs_repo
    from glimpse.domain.metadef import MetadefTag, Namespace

    db = Database(db_url)
    migrate.upgrade(db.engine, "0004")
    image = make(1, tags={"t"}, properties={"k": "v"})
    with db.write() as s:
        images_repo.add(s, image)
    with db.engine.connect() as conn:
        assert not METADEF_TABLES & set(inspect(conn).get_table_names())

    migrate.upgrade(db.engine)
    with db.engine.connect() as conn:
        assert set(inspect(conn).get_table_names()) >= METADEF_TABLES
        uniques = {u["name"] for u in inspect(conn).get_unique_constraints("metadef_tags")}
        assert "uq_metadef_tags_namespace_id_name" in uniques
    now = datetime(2026, 1, 1)
    with db.write() as s:
        ns_id = metadefs_repo.add_namespace(s, Namespace(namespace="n", owner="p",
                                                         created_at=now))
        metadefs_repo.add_tags(s, ns_id, [MetadefTag(name="x", created_at=now)])
    with db.read() as s:
        assert images_repo.get(s, image.id) == image

    config = migrate._config(db.engine)
    with db.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0004")
    with db.engine.connect() as conn:
        assert not METADEF_TABLES & set(inspect(conn).get_table_names())
    with db.read() as s:
        assert images_repo.get(s, image.id) == image
    db.dispose()


def test_a_fresh_database_migrates_without_warnings(db_url: str) -> None:
    # warnings reach the operator's terminal at every first start (SAWarnings of
    # the reflection in 0004's batch copy did, on SQLite)
    db = Database(db_url)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            migrate.upgrade(db.engine)
        assert migrate.current_revision(db.engine) == migrate.head_revision(db.engine)
    finally:
        db.dispose()
